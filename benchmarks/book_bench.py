"""Order-book benchmark (issue 14), scaled to a shared 2-core machine: synthetic depth shaped like the capture.

The real BTCUSDT capture's book deltas (~300k rows, 11 minutes, parsed by K2's own import reader) are
replicated ``--copies`` times as other symbols (same ids, same times), then:

* pyiceberg append of the whole table in one commit (rows/s; the landing consumer's floor) and the
  bytes per stored delta row (Parquet, zstd, as K2 writes it);
* ``Client.book(symbol, at, depth=25)`` at ``--queries`` random moments: p50/p99, against a hand-written
  raw DuckDB query doing the same read (latest restarting snapshot, latest size per level, top 25) on
  the same table.

It does not reach the issue's 100M rows / 5 days (that needs hours here); numbers are for this scale.

    .venv/bin/python benchmarks/book_bench.py [--copies 4] [--queries 50]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from k2.config import Settings  # noqa: E402
from k2.lake.catalog import ensure_tables, load_catalog, metadata_location  # noqa: E402
from k2.lake.writer import append  # noqa: E402
from k2.model import BOOK_DELTA  # noqa: E402
from k2.model.arrow import records_to_arrow  # noqa: E402
from k2.model.values import micros_to_datetime  # noqa: E402
from k2.query.client import Client  # noqa: E402
from k2.sources.binance import iter_capture_lines  # noqa: E402
from k2.sources.binance_capture import CaptureReader  # noqa: E402

CAPTURES = sorted((REPO / "data" / "samples" / "binance").glob("spot_btcusdt_*.gz"))
RAW_SQL = """
WITH base AS MATERIALIZED (SELECT side, price, size, last_update_id, is_snapshot FROM iceberg_scan(?)
                           WHERE symbol = ? AND exchange_ts <= ?),
start AS (SELECT max(last_update_id) AS u FROM base WHERE is_snapshot),
latest AS (SELECT side, price, arg_max(size, last_update_id) AS size FROM base, start
           WHERE last_update_id >= start.u AND (last_update_id > start.u OR is_snapshot) GROUP BY side, price),
ranked AS (SELECT *, row_number() OVER (PARTITION BY side ORDER BY CASE WHEN side = 'BID' THEN -price ELSE price END) AS level
           FROM latest WHERE size > 0)
SELECT side, level, price, size FROM ranked WHERE level <= 25
"""


def capture_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    reader = CaptureReader(
        lambda record, row: rows.append(row) if record is BOOK_DELTA else None, lambda *bad: None
    )
    for ns, raw in iter_capture_lines(CAPTURES):
        reader.feed(ns, raw, "capture")
    for row in rows:
        row["ingest_ts"] = row["receipt_ts"]
    return rows


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    base = capture_rows()
    symbols = ["BTCUSDT"] + [f"SYN{i}USDT" for i in range(1, args.copies)]
    rows = [{**row, "symbol": s} for s in symbols for row in base]
    data = records_to_arrow(BOOK_DELTA, rows)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "k2", query_pool_size=1)
        table = ensure_tables(load_catalog(settings), settings)["book_deltas"]
        started = time.perf_counter()
        append(table, data, "book_deltas")
        seconds = time.perf_counter() - started
        files = list(table.inspect.files().to_pylist())
        stored = sum(f["file_size_in_bytes"] for f in files)
        print(
            f"rows {data.num_rows:,} ({len(symbols)} symbols x {len(base):,}); pyiceberg append {data.num_rows / seconds:,.0f} rows/s; "
            f"{len(files)} files, {stored:,} bytes = {stored / data.num_rows:.2f} bytes/row"
        )
        times = sorted({r["exchange_ts"] for r in base})
        rng = random.Random(7)
        moments = [micros_to_datetime(rng.choice(times[len(times) // 10 :])) for _ in range(args.queries)]
        client = Client(settings)
        client.book("BTCUSDT", moments[0], 25)  # warm-up (extension loading, metadata)
        k2_times = []
        for moment in moments:
            t0 = time.perf_counter()
            client.book(rng.choice(symbols), moment, 25)
            k2_times.append(time.perf_counter() - t0)
        import duckdb

        from k2.query.engine import new_connection

        con: duckdb.DuckDBPyConnection = new_connection(settings)
        location = metadata_location(table)
        con.execute(RAW_SQL, [location, "BTCUSDT", moments[0]]).fetchall()
        raw_times = []
        for moment in moments:
            t0 = time.perf_counter()
            con.execute(RAW_SQL, [location, rng.choice(symbols), moment]).fetchall()
            raw_times.append(time.perf_counter() - t0)
        print(
            f"book(depth=25) over {args.queries} random moments: p50 {statistics.median(k2_times) * 1000:.1f} ms, "
            f"p99 {percentile(k2_times, 0.99) * 1000:.1f} ms; raw DuckDB: p50 {statistics.median(raw_times) * 1000:.1f} ms, "
            f"p99 {percentile(raw_times, 0.99) * 1000:.1f} ms; ratio p99 {percentile(k2_times, 0.99) / percentile(raw_times, 0.99):.2f}x"
        )
        from k2.lake.book_snapshots import write_book_snapshots

        t0 = time.perf_counter()
        written = write_book_snapshots(settings)
        print(f"book_snapshots: {sum(written.values())} rows written in {time.perf_counter() - t0:.1f}s")
        fast_times, fast_hits = [], 0
        for moment in moments:
            t0 = time.perf_counter()
            fast_hits += client.book(rng.choice(symbols), moment, 10).read_from == "book_snapshots"
            fast_times.append(time.perf_counter() - t0)
        print(
            f"book(depth=10) with book_snapshots: p50 {statistics.median(fast_times) * 1000:.1f} ms, "
            f"p99 {percentile(fast_times, 0.99) * 1000:.1f} ms; answered from a stored snapshot {fast_hits}/{len(moments)}"
        )
        print(f"at {datetime.now(UTC).isoformat(timespec='seconds')}")
        client.close()


if __name__ == "__main__":
    main()
