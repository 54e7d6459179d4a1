"""``book_series(symbol, start, end, every="1s", depth=10)`` for one symbol-hour at scale (issue 14).

Data: the table of benchmarks/book_scale_bench.py (the real BTCUSDT capture's ~300k book deltas, 11
minutes, repeated ``--copies`` times one after the other per symbol: one continuous chain, the venue
snapshot only at the start; ``--symbols`` symbols), so one hour is ~1.6M deltas of one symbol and the
book's restart lies up to an hour before the hour asked. ``--data-dir`` keeps the table between runs.

Timed in the same run, at ``--runs`` hours starting at random moments:

* ``Client.book_series(symbol, start, start + 1 h, every="1s", depth=10)`` (3,600 steps, metrics on), with
  where it started from: the stored ``book_snapshots`` rows or every delta since the restart
  (:mod:`k2.query.book_checkpoint`);
* raw DuckDB floor: one hand-written query over ``iceberg_scan`` reading the rows a one-pass replay needs
  (the symbol's deltas from the restart through the hour's end, in update-id order) into Arrow - no book,
  no metrics; K2 cannot be faster than reading its input.

    .venv/bin/python benchmarks/book_series_bench.py [--symbols 2] [--copies 7] [--runs 5] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from book_bench import capture_rows, percentile  # noqa: E402
from book_scale_bench import copies_of  # noqa: E402

from k2.config import Settings  # noqa: E402
from k2.lake.catalog import ensure_tables, load_catalog, metadata_location  # noqa: E402
from k2.lake.writer import append  # noqa: E402
from k2.model import BOOK_DELTA  # noqa: E402
from k2.model.arrow import records_to_arrow  # noqa: E402
from k2.model.values import micros_to_datetime  # noqa: E402
from k2.query.client import Client  # noqa: E402
from k2.query.engine import new_connection  # noqa: E402

RAW_SQL = """
SELECT side = 'ASK' AS ask, price, size, last_update_id, exchange_ts, is_snapshot FROM iceberg_scan(?)
WHERE symbol = ? AND last_update_id >= (SELECT max(last_update_id) FROM iceberg_scan(?)
                                        WHERE symbol = ? AND is_snapshot AND exchange_ts <= ?)
  AND exchange_ts < ? ORDER BY last_update_id
"""


def build(settings: Settings, symbols: list[str], copies: int) -> None:
    """Append the synthetic table (once per data dir)."""
    table = ensure_tables(load_catalog(settings), settings)["book_deltas"]
    if table.current_snapshot() is not None:
        return
    with table.transaction() as tx:
        tx.set_properties({"write.parquet.row-group-limit": "65536"})
    base = records_to_arrow(BOOK_DELTA, capture_rows())
    started = time.perf_counter()
    for symbol in symbols:
        for part in copies_of(base, symbol, copies):
            append(table, part, "book_deltas")
    print(f"appended in {time.perf_counter() - started:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=2)
    parser.add_argument("--copies", type=int, default=7)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    data_dir = args.data_dir or Path(f"/tmp/k2-book-series-{args.symbols}x{args.copies}")
    settings = Settings(data_dir=data_dir, query_pool_size=1)
    symbols = ["BTCUSDT"] + [f"SYN{i}USDT" for i in range(1, args.symbols)]
    build(settings, symbols, args.copies)
    table = ensure_tables(load_catalog(settings), settings)["book_deltas"]
    files = table.inspect.files()
    rows = pc.sum(files["record_count"]).as_py()
    stored = pc.sum(files["file_size_in_bytes"]).as_py()
    bounds = table.scan(selected_fields=("exchange_ts",), row_filter="symbol == 'BTCUSDT'").to_arrow()
    first = pc.min(pc.cast(bounds["exchange_ts"], pa.int64())).as_py()
    last = pc.max(pc.cast(bounds["exchange_ts"], pa.int64())).as_py()
    print(
        f"rows {rows:,} ({len(symbols)} symbols x {args.copies} copies), {files.num_rows} files, {stored / rows:.2f} bytes/row"
    )
    hour = 3_600_000_000
    if last - first < hour + 60_000_000:
        raise SystemExit(
            f"expected more than an hour of data, found {(last - first) / 1e6:.0f}s: raise --copies"
        )
    rng = random.Random(14)
    starts = [micros_to_datetime(rng.randint(first + 30_000_000, last - hour)) for _ in range(args.runs)]
    client = Client(settings)
    con = new_connection(settings)
    location = metadata_location(table)
    k2_times, raw_times, k2_cpu, raw_cpu, steps = [], [], [], [], 0
    client.book_series(symbols[0], starts[0], starts[0] + timedelta(minutes=1), "1s", 10)  # warm-up
    for start in starts:
        symbol = rng.choice(symbols)
        end = start + timedelta(hours=1)
        t0, c0 = time.perf_counter(), time.process_time()
        before = dict(client._book_series_starts)
        series = client.book_series(symbol, start, end, "1s", 10)
        began = next(k for k, v in client._book_series_starts.items() if v > before[k])
        k2_times.append(time.perf_counter() - t0)
        k2_cpu.append(time.process_time() - c0)
        steps = series.num_rows
        t0, c0 = time.perf_counter(), time.process_time()
        raw = con.execute(RAW_SQL, [location, symbol, location, symbol, start, end]).to_arrow_table()
        raw_times.append(time.perf_counter() - t0)
        raw_cpu.append(time.process_time() - c0)
        print(
            f"  {symbol} {start.isoformat()}: K2 {k2_times[-1] * 1000:.0f} ms ({steps} steps, started from {began}), raw read {raw_times[-1] * 1000:.0f} ms ({raw.num_rows:,} rows)"
        )
    client.close()
    print(
        f"book_series 1 h at 1 s, top 10, {len(starts)} runs: p50 {statistics.median(k2_times) * 1000:.0f} ms, "
        f"p99 {percentile(k2_times, 0.99) * 1000:.0f} ms; raw DuckDB read floor: p50 "
        f"{statistics.median(raw_times) * 1000:.0f} ms, p99 {percentile(raw_times, 0.99) * 1000:.0f} ms\n"
        f"CPU time (process, all threads): K2 p50 {statistics.median(k2_cpu) * 1000:.0f} ms, raw p50 "
        f"{statistics.median(raw_cpu) * 1000:.0f} ms; load average {os.getloadavg()}\n"
        f"at {datetime.now(UTC).isoformat(timespec='seconds')}"
    )


if __name__ == "__main__":
    main()
