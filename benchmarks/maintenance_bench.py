"""Query latency before vs after compaction of many small files (``k2 maintain``).

Lands ``--batches`` small batches (each its own data file, one symbol per batch, symbols rotating,
time advancing) into a fresh trades table, then times a DuckDB ``iceberg_scan`` of one symbol-hour
(median of ``--runs``) before and after :func:`k2.lake.maintenance.maintain_table`, and prints the
files, manifests, maintenance time and the speed-up. ``--per-commit 1`` lands one batch per commit
(one ``k2.lake.writer.append`` each: the landing consumer's shape, slow in pyiceberg).

Run: ``.venv/bin/python benchmarks/maintenance_bench.py --batches 2000 --rows 500``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from k2 import duck
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog, metadata_location
from k2.lake.compat import data_files_from_arrow
from k2.lake.maintenance import maintain_table
from k2.lake.writer import append, conform, sort_for_table
from k2.model import TRADE

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT")
START_US = 1_723_161_600_000_000  # 2024-08-09T00:00:00Z
HOUR_US = 3_600_000_000


def make_batch(i: int, rows: int, span_us: int) -> pa.Table:
    """Batch ``i``: ``rows`` trades of one symbol within its slice of the time span."""
    symbol = SYMBOLS[i % len(SYMBOLS)]
    rng = np.random.default_rng(i)
    ts = np.sort(START_US + i * span_us + rng.integers(0, span_us, rows)).astype("datetime64[us]")
    ids = np.arange(i * rows, (i + 1) * rows, dtype=np.int64)
    price = pa.array((60_000 + rng.integers(-5000, 5000, rows) / 100).astype(str)).cast(pa.decimal128(18, 8))
    qty = pa.array((rng.integers(1, 100_000, rows) / 100_000).astype(str)).cast(pa.decimal128(18, 8))
    utc = pa.timestamp("us", tz="UTC")
    data = {
        "exchange": pa.array(["binance"] * rows),
        "symbol": pa.array([symbol] * rows),
        "instrument": pa.array([symbol[:-4] + "-USDT"] * rows),
        "asset_class": pa.array(["crypto"] * rows),
        "trade_id": pa.array(ids),
        "price": price,
        "quantity": qty,
        "quote_quantity": pa.nulls(rows, pa.decimal128(18, 8)),
        "side": pa.array(np.where(rng.random(rows) < 0.5, "BUY", "SELL")),
        "exchange_ts": pa.array(ts, utc),
        "receipt_ts": pa.array(ts, utc),
        "ingest_ts": pa.array(ts, utc),
        "source_sequence": pa.array(ids),
        "conditions": pa.array([["BEST_MATCH"]] * rows, pa.list_(pa.string())),
        "vendor": pa.array([[]] * rows, pa.map_(pa.string(), pa.string())),
    }
    return pa.table(data).cast(TRADE.arrow_schema())


def query_ms(location: str, runs: int) -> tuple[float, int]:
    """Median latency (ms) of one symbol-hour through DuckDB's iceberg_scan, and its row count."""
    con = duck.connect()
    sql = (
        "SELECT count(*), avg(price), sum(quantity) FROM iceberg_scan(?) "
        "WHERE symbol = ? AND exchange_ts >= make_timestamptz(?) AND exchange_ts < make_timestamptz(?)"
    )
    params = [location, "ETHUSDT", START_US + HOUR_US, START_US + 2 * HOUR_US]
    times, count = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        row = con.execute(sql, params).fetchone()
        times.append((time.perf_counter() - started) * 1000)
        count = int(row[0]) if row else 0
    con.close()
    return statistics.median(times), count


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=500, help="rows per batch")
    parser.add_argument("--per-commit", type=int, default=50, help="batches (files) per Iceberg commit")
    parser.add_argument("--hours", type=float, default=6.0, help="time span of the data")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="k2-maint-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "k2")
        table = ensure_tables(load_catalog(settings), settings)["trades"]
        span = int(args.hours * HOUR_US / args.batches)
        started = time.perf_counter()
        for first in range(0, args.batches, args.per_commit):
            batches = [
                make_batch(i, args.rows, span)
                for i in range(first, min(args.batches, first + args.per_commit))
            ]
            if len(batches) == 1:
                append(table, batches[0], "trades")
                continue
            files = []
            for batch in batches:
                files += list(
                    data_files_from_arrow(
                        table.metadata, sort_for_table(conform(batch, "trades"), "trades"), table.io
                    )
                )
            with table.transaction() as tx, tx.update_snapshot().fast_append() as fast:
                for f in files:
                    fast.append_data_file(f)
        land_s = time.perf_counter() - started
        table.refresh()
        files_before = len(table.inspect.files())
        before_ms, before_rows = query_ms(metadata_location(table), args.runs)

        started = time.perf_counter()
        report = maintain_table(table, settings, "trades")
        maintain_s = time.perf_counter() - started
        table.refresh()
        after_ms, after_rows = query_ms(metadata_location(table), args.runs)
        assert after_rows == before_rows, (before_rows, after_rows)

        print(
            f"rows: {args.batches * args.rows:,} in {args.batches:,} batches of {args.rows}, {args.per_commit} per commit; landed in {land_s:.1f} s"
        )
        print(
            f"data files: {files_before:,} -> {report.files_after:,}; manifests {report.manifests_before:,} -> {report.manifests_after:,}; "
            f"bytes {report.bytes_before:,} -> {report.bytes_after:,}"
        )
        print(
            f"k2 maintain: {maintain_s:.1f} s ({report.partitions_compacted} partitions, {report.commit_conflicts} conflicts)"
        )
        print(
            f"one symbol-hour ({before_rows:,} rows) via DuckDB iceberg_scan, median of {args.runs}: "
            f"before {before_ms:.1f} ms, after {after_ms:.1f} ms -> {before_ms / after_ms:.1f}x faster"
        )


if __name__ == "__main__":
    main()
