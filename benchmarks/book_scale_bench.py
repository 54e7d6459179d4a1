"""Order-book read benchmark at scale (issue 14): ``book(symbol, at, depth=25)`` over millions of delta rows.

Synthetic depth shaped like the capture: the real BTCUSDT capture's book deltas (~300k rows, 11 minutes,
parsed by K2's own import reader) are repeated ``--copies`` times one after the other in exchange time
and update id (one continuous chain per symbol: only the first copy keeps its venue snapshot rows), for
``--symbols`` symbols, each copy appended as its own commit (several files per day partition). K2 then
writes its ``book_snapshots`` (``write_book_snapshots``, default cadence and depth) and the benchmark
times, at ``--queries`` random (symbol, moment) pairs, in the same run:

* ``Client.book(symbol, at, depth=25)`` (stored snapshots + bounded delta run, planned-file cache);
* a hand-written raw DuckDB query doing the same snapshot+delta read over ``iceberg_scan``: the newest
  stored snapshot at or before ``at``, the latest size per level of the deltas after it, top 25 per side
  (it does not check that the answer is exact, K2 does);
* K2's delta-only read (``book()`` with the stored-snapshot path switched off) at a few moments, the
  cost the snapshots avoid.

The issue's target is >= 100M rows; on the shared 2-core machine this runs at ``--symbols x --copies x
~300k`` rows (defaults 5 x 7 = ~10.5M), with ``--row-group-rows`` rows per Parquet row group.

``--data-dir`` keeps the table between runs (built once); ``--snapshot-depth`` and
``--snapshot-row-group-rows`` override K2's ``book_snapshot_depth`` and the table's row groups. Each line
says the CPU time of the reads and the load average, the machine being shared.

    .venv/bin/python benchmarks/book_scale_bench.py [--symbols 5] [--copies 7] [--queries 200] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from book_bench import capture_rows, percentile  # noqa: E402

from k2.config import Settings  # noqa: E402
from k2.lake.book_snapshots import write_book_snapshots  # noqa: E402
from k2.lake.catalog import ensure_tables, load_catalog, metadata_location  # noqa: E402
from k2.lake.writer import append  # noqa: E402
from k2.model import BOOK_DELTA  # noqa: E402
from k2.model.arrow import records_to_arrow  # noqa: E402
from k2.model.values import micros_to_datetime  # noqa: E402
from k2.query import book as book_module  # noqa: E402
from k2.query.client import Client  # noqa: E402

RAW_SQL = """
WITH snap AS (SELECT last_update_id, bid_prices, bid_sizes, ask_prices, ask_sizes FROM iceberg_scan(?)
              WHERE symbol = ? AND exchange_ts <= ? ORDER BY last_update_id DESC LIMIT 1),
stored AS (SELECT 'BID' AS side, unnest(bid_prices) AS price, unnest(bid_sizes) AS size FROM snap
           UNION ALL SELECT 'ASK', unnest(ask_prices), unnest(ask_sizes) FROM snap),
changed AS (SELECT side, price, arg_max(size, last_update_id) AS size FROM iceberg_scan(?)
            WHERE symbol = ? AND last_update_id > (SELECT last_update_id FROM snap) AND exchange_ts <= ?
            GROUP BY side, price),
merged AS (SELECT coalesce(c.side, s.side) AS side, coalesce(c.price, s.price) AS price,
                  coalesce(c.size, s.size) AS size
           FROM stored s FULL OUTER JOIN changed c ON s.side = c.side AND s.price = c.price),
ranked AS (SELECT *, row_number() OVER (PARTITION BY side ORDER BY CASE WHEN side = 'BID' THEN -price ELSE price END) AS level
           FROM merged WHERE size > 0)
SELECT side, level, price, size FROM ranked WHERE level <= 25
"""


def copies_of(base: pa.Table, symbol: str, copies: int) -> list[pa.Table]:
    """``copies`` tables continuing one another in time and update id (venue snapshot rows in the first only)."""
    ts = pc.cast(base["exchange_ts"], pa.int64())
    span_us = pc.max(ts).as_py() - pc.min(ts).as_py() + 100_000
    ids = base["last_update_id"]
    span_ids = pc.max(ids).as_py() - pc.min(ids).as_py() + 1
    out = []
    for copy in range(copies):
        part = base if copy == 0 else base.filter(pc.invert(base["is_snapshot"]))
        columns = {name: part[name] for name in part.column_names}
        columns["symbol"] = pa.array([symbol] * part.num_rows, pa.string())
        for name in ("exchange_ts", "receipt_ts", "ingest_ts"):
            shifted = pc.add(pc.cast(part[name], pa.int64()), copy * span_us)
            columns[name] = pc.cast(shifted, part.schema.field(name).type)
        for name in ("first_update_id", "last_update_id"):
            columns[name] = pc.add(part[name], copy * span_ids)
        out.append(pa.table(columns, schema=part.schema))
    return out


def timed(call: object, *args: object) -> float:
    t0 = time.perf_counter()
    call(*args)  # type: ignore[operator]
    return time.perf_counter() - t0


def build(
    settings: Settings, symbols: list[str], copies: int, row_group_rows: int, snapshot_group_rows: int | None
) -> tuple[int, int]:
    """Append the synthetic deltas and write the book_snapshots; kept when ``settings.data_dir`` has them.

    Returns the first and last exchange time (us) of the data.
    """
    base = records_to_arrow(BOOK_DELTA, capture_rows())
    tables = ensure_tables(load_catalog(settings), settings)
    table = tables["book_deltas"]
    first = pc.min(pc.cast(base["exchange_ts"], pa.int64())).as_py()
    last = pc.max(pc.cast(copies_of(base, symbols[0], copies)[-1]["exchange_ts"], pa.int64())).as_py()
    if table.current_snapshot() is not None:
        rows = sum(f["record_count"] for f in table.inspect.files().to_pylist())
        print(f"kept table in {settings.data_dir}: {rows:,} rows")
        return first, last
    with table.transaction() as tx:
        tx.set_properties({"write.parquet.row-group-limit": str(row_group_rows)})
    if snapshot_group_rows is not None:
        with tables["book_snapshots"].transaction() as tx:
            tx.set_properties({"write.parquet.row-group-limit": str(snapshot_group_rows)})
    started, rows = time.perf_counter(), 0
    for symbol in symbols:
        for part in copies_of(base, symbol, copies):
            append(table, part, "book_deltas")
            rows += part.num_rows
    files = table.inspect.files().to_pylist()
    stored = sum(f["file_size_in_bytes"] for f in files)
    print(
        f"rows {rows:,} ({len(symbols)} symbols x {copies} copies of {base.num_rows:,}); "
        f"appended in {time.perf_counter() - started:.0f}s; {len(files)} files, {stored / rows:.2f} bytes/row"
    )
    t0 = time.perf_counter()
    written = write_book_snapshots(settings)
    snaps = ensure_tables(load_catalog(settings), settings)["book_snapshots"].inspect.files().to_pylist()
    print(
        f"book_snapshots (depth {settings.book_snapshot_depth}, every {settings.book_snapshot_interval_seconds:g}s): "
        f"{sum(written.values())} rows written in {time.perf_counter() - t0:.0f}s, "
        f"{sum(f['file_size_in_bytes'] for f in snaps):,} bytes in {len(snaps)} files"
    )
    return first, last


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=5)
    parser.add_argument("--copies", type=int, default=7)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--delta-only-queries", type=int, default=10)
    parser.add_argument(
        "--row-group-rows",
        type=int,
        default=65_536,
        help="write.parquet.row-group-limit of the deltas table (65,536: K2's table layout on the fast branch)",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="keep the table there between runs")
    parser.add_argument(
        "--snapshot-depth", type=int, default=None, help="book_snapshot_depth (default: K2's)"
    )
    parser.add_argument(
        "--snapshot-row-group-rows",
        type=int,
        default=None,
        help="row groups of book_snapshots (default: K2's)",
    )
    args = parser.parse_args()
    symbols = ["BTCUSDT"] + [f"SYN{i}USDT" for i in range(1, args.symbols)]
    with tempfile.TemporaryDirectory() as tmp:
        depth = {} if args.snapshot_depth is None else {"book_snapshot_depth": args.snapshot_depth}
        settings = Settings(data_dir=args.data_dir or Path(tmp) / "k2", query_pool_size=1, **depth)
        first, last = build(settings, symbols, args.copies, args.row_group_rows, args.snapshot_row_group_rows)
        rng = random.Random(14)
        asks = [
            (rng.choice(symbols), micros_to_datetime(rng.randint(first + 60_000_000, last)))
            for _ in range(args.queries)
        ]
        run_reads(settings, asks, args.delta_only_queries)


def run_reads(settings: Settings, asks: list[tuple[str, datetime]], delta_only_queries: int) -> None:
    """Time K2's ``book()``, the raw DuckDB read and K2's delta-only read at the same moments."""
    client = Client(settings)
    client.book(*asks[0], 25)  # warm-up: extensions, metadata, the planned-file cache
    k2_times, k2_cpu, hits = [], [], 0
    for symbol, moment in asks:
        t0, c0 = time.perf_counter(), time.process_time()
        hits += client.book(symbol, moment, 25).read_from == "book_snapshots"
        k2_times.append(time.perf_counter() - t0)
        k2_cpu.append(time.process_time() - c0)

    from k2.query.engine import new_connection

    con = new_connection(settings)
    tables = ensure_tables(load_catalog(settings), settings)
    snaps_at, deltas_at = (
        metadata_location(tables["book_snapshots"]),
        metadata_location(tables["book_deltas"]),
    )
    raw = lambda s, m: con.execute(RAW_SQL, [snaps_at, s, m, deltas_at, s, m]).fetchall()  # noqa: E731
    raw(*asks[0])
    raw_times = [timed(raw, s, m) for s, m in asks]
    original = book_module._from_stored_snapshot
    book_module._from_stored_snapshot = lambda *a, **k: None  # type: ignore[assignment]
    slow_times = [timed(client.book, s, m, 25) for s, m in asks[:delta_only_queries]]
    book_module._from_stored_snapshot = original
    k2_p99, raw_p99 = percentile(k2_times, 0.99), percentile(raw_times, 0.99)
    print(
        f"book(depth=25), {len(asks)} random (symbol, moment): p50 {statistics.median(k2_times) * 1000:.1f} ms, "
        f"p90 {percentile(k2_times, 0.9) * 1000:.1f} ms, p95 {percentile(k2_times, 0.95) * 1000:.1f} ms, "
        f"p99 {k2_p99 * 1000:.1f} ms, from stored snapshots {hits}/{len(asks)}; CPU time p50 "
        f"{statistics.median(k2_cpu) * 1000:.1f} ms, p99 {percentile(k2_cpu, 0.99) * 1000:.1f} ms, "
        f"max {max(k2_cpu) * 1000:.1f} ms\n"
        f"raw DuckDB snapshot+delta (iceberg_scan): p50 {statistics.median(raw_times) * 1000:.1f} ms, "
        f"p90 {percentile(raw_times, 0.9) * 1000:.1f} ms, p99 {raw_p99 * 1000:.1f} ms; "
        f"K2/raw at p50 {statistics.median(k2_times) / statistics.median(raw_times):.2f}x, at p99 {k2_p99 / raw_p99:.2f}x\n"
        f"K2 delta-only read ({len(slow_times)} moments): p50 {statistics.median(slow_times) * 1000:.0f} ms, "
        f"max {max(slow_times) * 1000:.0f} ms\n"
        f"load average {os.getloadavg()} at {datetime.now(UTC).isoformat(timespec='seconds')}"
    )
    client.close()


if __name__ == "__main__":
    main()
