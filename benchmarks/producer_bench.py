"""Producer benchmark: K2's producer (row by row and batched) beside encode-only and raw-librdkafka floors, same run.

Rows: the demo capture's trades (real Binance data, ``iter_capture_trades``) repeated to ``--rows``.
Sides, each timed over the same rows:

* fastavro encode only (per row, as ``AvroEncoder.encode``);
* column-wise encode only (``k2.bus.avro_encode.encode_batch`` in batches of ``--batch``);
* raw librdkafka produce floor: confluent-kafka's ``Producer.produce`` of the pre-encoded bytes, same
  producer configuration as K2's (acks=all, idempotence, lz4), flushed;
* K2 ``MarketDataProducer.send`` per row (fastavro), flushed;
* K2 ``MarketDataProducer.send_many`` in batches of ``--batch`` (column-wise encoder), flushed.

Starts its own Tansu broker (memory storage) and K2 registry on random ports.

    .venv/bin/python benchmarks/producer_bench.py --rows 200000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from bench_stack import bench_stack, git_commit  # noqa: E402
from confluent_kafka import Producer  # noqa: E402

from k2.bus import MarketDataProducer  # noqa: E402
from k2.bus.avro_encode import encode_batch  # noqa: E402
from k2.bus.producer import producer_config  # noqa: E402
from k2.model import TRADE  # noqa: E402
from k2.sources.binance import iter_capture_trades  # noqa: E402

CAPTURES = sorted((REPO / "data" / "samples" / "binance").glob("spot_btcusdt_*.gz"))


def rate(n: int, seconds: float) -> float:
    return n / seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    with bench_stack() as (_root, settings):
        capture = [row for path in CAPTURES for row in iter_capture_trades(path)]
        now = int(time.time() * 1_000_000)
        rows: list[dict[str, Any]] = []
        while len(rows) < args.rows:
            rows.extend({**r, "ingest_ts": now} for r in capture)
        rows = rows[: args.rows]
        batches = [rows[i : i + args.batch] for i in range(0, len(rows), args.batch)]
        results: dict[str, float] = {}

        producer = MarketDataProducer(settings)
        encoder = producer.encoder(TRADE, "market.crypto.trades.binance")  # registration outside timing
        t0 = time.perf_counter()
        encoded = [encoder.encode(r) for r in rows]
        results["fastavro encode only"] = rate(len(rows), time.perf_counter() - t0)

        t0 = time.perf_counter()
        for batch in batches:
            encode_batch(TRADE, encoder._header, batch)
        results["column-wise encode only"] = rate(len(rows), time.perf_counter() - t0)

        raw = Producer(producer_config(settings))
        keys = [r["symbol"].encode() for r in rows]
        t0 = time.perf_counter()
        for key, value in zip(keys, encoded, strict=True):
            while True:
                try:
                    raw.produce("market.crypto.trades.binance", value=value, key=key)
                    break
                except BufferError:
                    raw.poll(0.05)
        raw.flush()
        results["raw librdkafka produce of encoded bytes (floor)"] = rate(len(rows), time.perf_counter() - t0)

        t0 = time.perf_counter()
        for row in rows:
            producer.send(TRADE, row)
        producer.flush()
        results["K2 send per row (fastavro)"] = rate(len(rows), time.perf_counter() - t0)

        t0 = time.perf_counter()
        for batch in batches:
            producer.send_many(TRADE, batch)
        producer.flush()
        results["K2 send_many (column-wise)"] = rate(len(rows), time.perf_counter() - t0)
        producer.close()
    print(f"commit {git_commit()}; {len(rows):,} trades (demo capture repeated), batches of {args.batch:,}")
    for name, value in results.items():
        print(f"{name:52} {value:>12,.0f} msgs/s")


if __name__ == "__main__":
    main()
