"""Cost of the `k2.cid` correlation-id header on producer throughput.

Two measurements against a local Tansu broker (memory storage) and K2's registry, in alternating
rounds (the machine is shared, so rounds vary; compare the medians and the per-pair ratios):

* raw: confluent-kafka `produce()` of 150-byte values with K2's producer settings, with and without
  the header (the upper bound of the header's relative cost);
* k2: `MarketDataProducer.send()` of real demo-capture trades (Avro encoding included), with the
  default `k2.cid` header and with `headers={}` (no `k2.cid`; since issue 17 the producer adds its
  `k2.mid` message id header to every message in both rounds).

Run: .venv/bin/python benchmarks/cid_header_bench.py [messages_per_round] [rounds]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_stack import bench_stack
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from k2.bus.producer import MarketDataProducer, producer_config
from k2.config import Settings
from k2.telemetry.logging import CID_HEADER, new_correlation_id

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples" / "binance"


def raw_round(producer: Producer, count: int, headers: list[tuple[str, bytes]] | None) -> float:
    value = b"x" * 150
    started = time.perf_counter()
    for i in range(count):
        while True:
            try:
                producer.produce("bench", value=value, key=b"BTCUSDT", headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(120)
    return count / (time.perf_counter() - started)


def k2_round(settings: Settings, rows: list[tuple[Any, dict[str, Any]]], with_header: bool) -> float:
    started = time.perf_counter()
    with MarketDataProducer(settings) as producer:
        for record, row in rows:
            producer.send(record, row, topic="bench-k2", headers=None if with_header else {})
    return len(rows) / (time.perf_counter() - started)


def compare(name: str, plain: Callable[[], float], stamped: Callable[[], float], rounds: int) -> None:
    a, b = [], []
    for _ in range(rounds):
        a.append(plain())
        b.append(stamped())
    ratios = [y / x for x, y in zip(a, b, strict=True)]
    print(
        f"{name}: no header median {statistics.median(a):,.0f} msgs/s; k2.cid median {statistics.median(b):,.0f} msgs/s; "
        f"per-pair ratio median {statistics.median(ratios):.3f} (pairs: {', '.join(f'{r:.2f}' for r in ratios)})"
    )


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    with bench_stack() as (_root, settings):
        admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
        for future in admin.create_topics([NewTopic("bench", 4, 1), NewTopic("bench-k2", 4, 1)]).values():
            future.result()
        producer = Producer(producer_config(settings))
        headers = [(CID_HEADER, new_correlation_id().encode())]
        raw_round(producer, count // 4, None)  # warm-up
        compare(
            "raw produce",
            lambda: raw_round(producer, count, None),
            lambda: raw_round(producer, count, headers),
            rounds,
        )

        from k2.sources.binance import iter_capture

        rows = [
            (record, row)
            for record, row, _ in iter_capture(sorted(SAMPLES.glob("spot_btcusdt_*.gz")), kinds=("trade",))
        ]
        k2_round(settings, rows[:2000], True)  # registers the schema
        compare(
            "MarketDataProducer.send",
            lambda: k2_round(settings, rows, False),
            lambda: k2_round(settings, rows, True),
            rounds,
        )


if __name__ == "__main__":
    main()
