"""Probe (issue 15 §5): bytes per stored trade of the demo capture with DELTA_BINARY_PACKED for times, ids and
prices, against K2's current layout (same rows, same zstd level, the pyarrow writer as pyiceberg configures it
from K2's table properties), and DuckDB's read of each file. Not wired into K2's writer: pyiceberg exposes no
per-column encoding property, and pyarrow refuses a column encoding while dictionaries are on for all columns.

    PYTHONPATH=src .venv/bin/python benchmarks/encoding_probe.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

import duckdb  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from pyiceberg.io.pyarrow import _get_parquet_writer_kwargs  # noqa: E402
from storage_bench import capture_trades  # noqa: E402

from k2.lake.catalog import PARQUET_LAYOUT  # noqa: E402
from k2.lake.writer import conform, sort_for_table  # noqa: E402


def layouts(data: pa.Table) -> dict[str, dict[str, Any]]:
    k2 = _get_parquet_writer_kwargs({"write.parquet.compression-codec": "zstd", **PARQUET_LAYOUT})
    delta = [f.name for f in data.schema if pa.types.is_timestamp(f.type) or pa.types.is_integer(f.type)]
    delta.append("price")  # a random walk: small deltas (quantity is not: it grows with delta encoding)
    plain = [f.name for f in data.schema if f.name not in delta]
    return {
        "K2's layout (dictionary <= 64 KB, zstd 3)": k2,
        "DELTA_BINARY_PACKED times, ids, price": {
            **k2,
            "use_dictionary": plain,
            "column_encoding": dict.fromkeys(delta, "DELTA_BINARY_PACKED"),
        },
    }


def main() -> None:
    data = sort_for_table(conform(capture_trades(), "trades"), "trades")
    tmp = Path(tempfile.mkdtemp(prefix="k2-encoding-"))
    con = duckdb.connect()
    for index, (name, kwargs) in enumerate(layouts(data).items()):
        path = tmp / f"{index}.parquet"
        with pq.ParquetWriter(path, data.schema, store_decimal_as_integer=True, **kwargs) as writer:
            writer.write_table(data, row_group_size=int(PARQUET_LAYOUT["write.parquet.row-group-limit"]))
        assert pq.read_table(path).equals(data), "the file must read back as the rows written"
        times = []
        for _ in range(30):
            started = time.perf_counter()
            con.execute(
                "SELECT * FROM read_parquet(?) WHERE symbol = 'BTCUSDT'", [str(path)]
            ).to_arrow_table()
            times.append(time.perf_counter() - started)
        times.sort()
        size = path.stat().st_size
        print(
            f"{name}: {size:,} bytes = {size / data.num_rows:.2f} bytes per trade ({data.num_rows:,} trades); "
            f"DuckDB read of all rows p50 {1000 * times[15]:.2f} ms"
        )


if __name__ == "__main__":
    main()
