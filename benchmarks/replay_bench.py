"""Replay benchmark: ``k2 replay --speed max`` rows/s beside a baseline from the same run.

* Replay: the demo capture's 19,904 real Binance trades (repeated ``--copies`` times with shifted ids
  and times) stored in Iceberg, read back window by window (pyiceberg scan, sort by exchange time),
  converted to wire form and produced as Avro (acks=all, idempotent), flushed.
* Baseline: producing the same rows, already in wire form in memory (the producer alone).

Starts its own Tansu broker and K2 registry on random ports; prints the figures.

    .venv/bin/python benchmarks/replay_bench.py [--copies 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_stack import bench_stack  # noqa: E402

from k2.bus import MarketDataProducer  # noqa: E402
from k2.lake.catalog import ensure_tables, load_catalog  # noqa: E402
from k2.lake.writer import append  # noqa: E402
from k2.model import TRADE  # noqa: E402
from k2.model.arrow import records_to_arrow  # noqa: E402
from k2.model.values import micros_to_datetime  # noqa: E402
from k2.sources.binance import iter_capture_trades  # noqa: E402
from k2.sources.replay import replay  # noqa: E402

CAPTURES = sorted((REPO / "data" / "samples" / "binance").glob("spot_btcusdt_*.gz"))
HOUR_US = 3_600_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--copies", type=int, default=5, help="Copies of the capture (each shifted by one hour)."
    )
    args = parser.parse_args()
    base = list(iter_capture_trades(CAPTURES))
    rows = []
    for copy in range(args.copies):
        for row in base:
            rows.append(
                {
                    **row,
                    "trade_id": row["trade_id"] + copy * 1_000_000,
                    "exchange_ts": row["exchange_ts"] + copy * HOUR_US,
                    "ingest_ts": row["receipt_ts"],
                }
            )
    with bench_stack() as (_root, settings):
        table = ensure_tables(load_catalog(settings), settings)["trades"]
        append(table, records_to_arrow(TRADE, rows), "trades")

        producer = MarketDataProducer(settings)
        producer.encoder(TRADE, "bench.baseline")  # registration and topic creation outside the timing
        started = time.perf_counter()
        for row in rows:
            producer.send(TRADE, {**row, "ingest_ts": None}, "bench.baseline")
        producer.flush()
        baseline = len(rows) / (time.perf_counter() - started)

        replayer = MarketDataProducer(settings)
        replayer.encoder(TRADE, "bench.replay")
        start, end = (
            micros_to_datetime(rows[0]["exchange_ts"]),
            micros_to_datetime(rows[-1]["exchange_ts"] + 1),
        )
        stats = replay(settings, ["BTCUSDT"], start, end, "bench.replay", speed=None, producer=replayer)
        assert stats.rows == len(rows), (stats.rows, len(rows))
        rate = stats.rows / stats.seconds
    print(
        f"rows: {len(rows):,} ({args.copies} copies of the 19,904-trade capture), {stats.windows} windows read"
    )
    print(f"baseline (produce wire-form rows from memory): {baseline:,.0f} rows/s")
    print(
        f"replay --speed max (Iceberg scan + sort + produce): {rate:,.0f} rows/s  ratio {rate / baseline:.2f}"
    )


if __name__ == "__main__":
    main()
