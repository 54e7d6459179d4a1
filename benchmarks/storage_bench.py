"""Bytes per stored trade under Parquet write choices (row-group rows, zstd level), and a symbol-hour read.

Writes the same sorted trades with the exact writer options pyiceberg derives from table properties
(``pyiceberg.io.pyarrow._get_parquet_writer_kwargs`` + ``store_decimal_as_integer``, row groups of
``write.parquet.row-group-limit`` rows), once per choice, and reports bytes per trade and the p50 of a
one-symbol-hour ``read_parquet`` in DuckDB over that file.

Data: (1) one synthetic day of ``query_bench.py`` (20 symbols, real BTCUSDT 1-minute price path; the same
generator as the query benchmark's 50M table, ``--per-symbol`` trades per symbol-day, default 83,333 = the
50M table's density), sorted by (symbol, exchange_ts, trade_id) as K2's writer sorts; (2) the trades of the
demo capture ``data/samples/binance/spot_btcusdt_20240808.gz``.

Run::

    .venv/bin/python benchmarks/storage_bench.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from pyiceberg.io.pyarrow import _get_parquet_writer_kwargs  # noqa: E402

from k2.duck import connect  # noqa: E402
from k2.lake.catalog import TABLES  # noqa: E402
from k2.lake.writer import conform, sort_for_table  # noqa: E402

CHOICES: list[tuple[str, dict[str, str]]] = [
    ("pyiceberg defaults (1M-row groups, zstd level 1)", {}),
    ("zstd level 3", {"write.parquet.compression-level": "3"}),
    ("zstd level 9", {"write.parquet.compression-level": "9"}),
    ("65,536-row groups, zstd 1", {"write.parquet.row-group-limit": "65536"}),
    (
        "65,536-row groups, zstd 9",
        {"write.parquet.row-group-limit": "65536", "write.parquet.compression-level": "9"},
    ),
]
for _rows in ("1048576", "131072", "65536", "32768"):
    for _dict in ("16384", "65536"):
        for _level in ("3", "9"):
            CHOICES.append(
                (
                    f"{int(_rows):,}-row groups, dictionary <= {int(_dict) // 1024} KB, zstd {_level}",
                    {
                        "write.parquet.row-group-limit": _rows,
                        "write.parquet.dict-size-bytes": _dict,
                        "write.parquet.compression-level": _level,
                    },
                )
            )


def write(data: pa.Table, path: Path, props: dict[str, str]) -> int:
    kwargs = _get_parquet_writer_kwargs({"write.parquet.compression-codec": "zstd", **props})
    rows = int(props.get("write.parquet.row-group-limit", 1_048_576))
    with pq.ParquetWriter(path, data.schema, store_decimal_as_integer=True, **kwargs) as writer:
        writer.write_table(data, row_group_size=rows)
    return path.stat().st_size


def hour_p50(path: Path, symbol: str, start_us: int, runs: int) -> float:
    con = connect(())
    con.execute("SET TimeZone = 'UTC'")
    times = []
    for i in range(runs + 2):
        lo = start_us + (i % 20) * 3_600_000_000
        t0 = time.perf_counter()
        con.execute(
            "SELECT * FROM read_parquet(?) WHERE symbol = ? AND exchange_ts >= make_timestamptz(?) "
            "AND exchange_ts < make_timestamptz(?) ORDER BY exchange_ts, trade_id",
            [str(path), symbol, lo, lo + 3_600_000_000],
        ).to_arrow_table()
        if i >= 2:
            times.append((time.perf_counter() - t0) * 1000)
    con.close()
    return statistics.median(times)


def synthetic_day(per_symbol: int) -> pa.Table:
    import query_bench as qb

    rng = np.random.default_rng(7)
    symbols = [f"S{i:02d}USDT" if i else "BTCUSDT" for i in range(20)]
    minutes = qb.real_minutes()
    levels = {
        s: float(minutes[0][0])
        * qb.SYMBOL_LEVELS[i % len(qb.SYMBOL_LEVELS)]
        * (1 + i // len(qb.SYMBOL_LEVELS))
        for i, s in enumerate(symbols)
    }
    next_ids = {s: 1_000_000 for s in symbols}
    trades, _ = qb.generate_day(0, symbols, per_symbol, 0.0, rng, minutes, levels, next_ids)
    return trades


def capture_trades() -> pa.Table:
    from tests.query.helpers import capture_tables

    trades, _ = capture_tables()
    return trades


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-symbol", type=int, default=83_333)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    datasets: list[tuple[str, pa.Table, Any]] = [
        (f"synthetic day, 20 symbols x {args.per_symbol:,}", synthetic_day(args.per_symbol), None),
        ("demo capture trades (BTCUSDT 2024-08-08)", capture_trades(), None),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name, data, _ in datasets:
            data = sort_for_table(conform(data, "trades"), "trades")
            first = data.slice(0, 1).to_pylist()[0]
            symbol = first["symbol"]
            start_us = int(first["exchange_ts"].timestamp() * 1_000_000) // 3_600_000_000 * 3_600_000_000
            print(f"\n{name}: {data.num_rows:,} trades (columns: {len(TABLES['trades'].record.fields)})")
            print(f"{'choice':52} {'bytes/trade':>12} {'symbol-hour p50':>16}")
            for label, props in CHOICES:
                path = Path(tmp) / "f.parquet"
                size = write(data, path, props)
                ms = hour_p50(path, symbol, start_us, args.runs)
                print(f"{label:52} {size / data.num_rows:>12.2f} {ms:>14.1f}ms", flush=True)


if __name__ == "__main__":
    main()
