"""Bytes per stored row with K2's per-table delta encodings (issue 15 §5), against the layout before them.

For each dataset the same sorted rows are written twice by pyarrow, with the exact writer options pyiceberg
derives from K2's table properties through K2's writer hook (:mod:`k2.lake.encoding`): once without the
table's ``k2.write.parquet.delta-columns`` property (only the lineage columns delta-encoded: the layout
before), once with it (the layout K2 writes now). Reports bytes per row, the bytes of each changed column
and DuckDB's read of the file (all rows, and the first symbol's first hour), p50 of ``--runs``.

Datasets: the demo capture's trades and quotes (``data/samples/binance``: receipt time as ingest time),
the real BTCUSDT depth capture's book deltas (300,094 rows, parsed by K2's import reader), and one
synthetic day of ``query_bench.py``'s 50M-trade table (20 symbols x 83,333 trades).

    PYTHONPATH=src .venv/bin/python benchmarks/encoding_probe.py [--runs 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks"), str(REPO / "src")]

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from pyiceberg.io import pyarrow as pyiceberg_arrow  # noqa: E402

from k2.config import Settings  # noqa: E402
from k2.lake.catalog import table_layout, table_properties  # noqa: E402
from k2.lake.encoding import DELTA_PROPERTY, install  # noqa: E402
from k2.lake.writer import conform, sort_for_table  # noqa: E402
from k2.model import BOOK_DELTA  # noqa: E402
from k2.model.arrow import records_to_arrow  # noqa: E402


def datasets() -> list[tuple[str, str, pa.Table]]:
    from book_bench import capture_rows
    from storage_bench import synthetic_day
    from tests.query.helpers import capture_tables

    trades, quotes = capture_tables()
    return [
        ("demo capture trades", "trades", trades),
        ("demo capture quotes", "quotes", quotes),
        ("BTCUSDT depth capture book deltas", "book_deltas", records_to_arrow(BOOK_DELTA, capture_rows())),
        ("synthetic day (50M table's density), trades", "trades", synthetic_day(83_333)),
    ]


def write(path: Path, data: pa.Table, properties: dict[str, str]) -> None:
    options = pyiceberg_arrow._get_parquet_writer_kwargs(properties)
    groups = int(properties["write.parquet.row-group-limit"])
    with pq.ParquetWriter(path, data.schema, store_decimal_as_integer=True, **options) as writer:
        writer.write_table(data, row_group_size=groups)
    if not pq.read_table(path).equals(data):
        raise SystemExit(f"expected {path} to read back as the rows written, found it did not")


def column_bytes(path: Path) -> dict[str, int]:
    meta = pq.ParquetFile(path).metadata
    out: dict[str, int] = {}
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            column = meta.row_group(g).column(c)
            out[column.path_in_schema] = out.get(column.path_in_schema, 0) + column.total_compressed_size
    return out


def read_times(con: Any, path: Path, data: pa.Table, runs: int) -> tuple[float, float]:
    first = data.slice(0, 1).to_pylist()[0]
    start = first["exchange_ts"]
    queries = [
        ("SELECT * FROM read_parquet(?)", [str(path)]),
        (
            "SELECT * FROM read_parquet(?) WHERE symbol = ? AND exchange_ts >= ? AND exchange_ts < ? + INTERVAL 1 HOUR",
            [str(path), first["symbol"], start, start],
        ),
    ]
    result = []
    for sql, params in queries:
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            con.execute(sql, params).to_arrow_table()
            times.append(time.perf_counter() - started)
        result.append(1000 * statistics.median(times))
    return result[0], result[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    install()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    tmp = Path(tempfile.mkdtemp(prefix="k2-encoding-"))
    for name, short, raw in datasets():
        data = sort_for_table(conform(raw, short), short)
        now = table_properties(Settings(), short)
        before = {k: v for k, v in now.items() if k != DELTA_PROPERTY}
        print(f"\n{name}: {data.num_rows:,} rows; delta columns {table_layout(short).get(DELTA_PROPERTY)}")
        sizes = {}
        for label, properties in (("before (lineage only)", before), ("now (per-table delta)", now)):
            path = tmp / f"{short}-{label[:3]}-{data.num_rows}.parquet"
            write(path, data, properties)
            sizes[label] = column_bytes(path)
            full, hour = read_times(con, path, data, args.runs)
            size = path.stat().st_size
            print(
                f"  {label:22} {size:>12,} bytes = {size / data.num_rows:6.2f} B/row; DuckDB all rows p50 "
                f"{full:7.2f} ms, first symbol-hour p50 {hour:6.2f} ms"
            )
        old, new = sizes.values()
        changed = [
            c for c in new if old.get(c) != new[c] and abs(old.get(c, 0) - new[c]) > data.num_rows / 100
        ]
        print(
            "  changed columns (B/row before -> now): "
            + ", ".join(f"{c} {old[c] / data.num_rows:.2f} -> {new[c] / data.num_rows:.2f}" for c in changed)
        )


if __name__ == "__main__":
    main()
