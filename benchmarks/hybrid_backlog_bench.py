"""Hybrid query over a Kafka backlog (issue 10's scenario): what it returns, how long it takes, and what it says.

* Data: N trades of one symbol (default 1,200,000) produced to Kafka and NOT landed (the landing is stopped),
  plus the first 10% landed in Iceberg, so the answer is 10% table + 90% Kafka.
* Query: ``Client.trades(include_recent=True)`` and ``Client.bars("1m", include_recent=True)`` over the
  whole range, with the default ``query_recent_max_rows`` / ``query_recent_timeout_seconds`` and again
  with limits that fit the backlog. Printed: rows returned, rows from Kafka, the truncation flag and
  reason, bars ``trade_count`` total, seconds.
* Baseline (same run): a plain confluent-kafka consumer reading the same backlog (no decoding).

A truncated answer must say so (``recent_truncated`` + reason); a complete one must count every trade.

    .venv/bin/python benchmarks/hybrid_backlog_bench.py [--trades 1200000]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_stack import bench_stack, git_commit  # noqa: E402
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition  # noqa: E402
from tests.landing.helpers import make_trades  # noqa: E402

from k2.bus import MarketDataProducer, ensure_topics  # noqa: E402
from k2.config import Settings  # noqa: E402
from k2.landing import LandingConsumer  # noqa: E402
from k2.model import TRADE  # noqa: E402
from k2.query.client import Client  # noqa: E402

TOPIC = "market.crypto.trades.binance"
SYMBOL = "BTCUSDT"


def consume_only(settings: Settings, total: int, partitions: int) -> float:
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"raw-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(partitions)])
    count, start = 0, time.perf_counter()
    deadline = time.monotonic() + 600
    while count < total and time.monotonic() < deadline:
        count += len(consumer.consume(num_messages=10_000, timeout=0.5))
    elapsed = time.perf_counter() - start
    consumer.close()
    return elapsed


def ask(settings: Settings, label: str, start: str, end: str) -> None:
    with Client(settings) as client:
        began = time.perf_counter()
        trades = client.trades(SYMBOL, start, end, include_recent=True)
        trades_s = time.perf_counter() - began
        began = time.perf_counter()
        bars = client.bars(SYMBOL, "1m", start, end, include_recent=True)
        bars_s = time.perf_counter() - began
    counted = sum(int(v) for v in bars.table.column("trade_count").to_pylist())
    print(
        f"{label}: trades {trades.table.num_rows:,} rows ({trades.recent_rows:,} from Kafka) in {trades_s:.2f} s, "
        f"truncated={trades.recent_truncated} ({trades.recent_truncated_reason}); bars trade_count {counted:,} "
        f"in {bars_s:.2f} s, truncated={bars.recent_truncated}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=1_200_000)
    args = parser.parse_args()
    rows = make_trades(SYMBOL, 1_000_000, args.trades, seed=7)
    start = time_text(rows[0]["exchange_ts"])
    end = time_text(rows[-1]["exchange_ts"] + 1_000_000)
    landed = len(rows) // 10
    with bench_stack(
        consumer_group="bench-hybrid", consumer_session_timeout_ms=1000, landing_metrics_port=0
    ) as (_root, settings):
        ensure_topics(settings, [TOPIC])
        with MarketDataProducer(settings) as producer:
            producer.send_many(TRADE, rows[:landed])
        LandingConsumer(settings, topics=[TOPIC]).run(idle_exit_seconds=3)
        with MarketDataProducer(settings) as producer:
            producer.send_many(TRADE, rows[landed:])
        floor = consume_only(settings, len(rows), settings.topic_partitions)
        print(
            f"commit {git_commit()}  trades {len(rows):,}: {landed:,} landed, "
            f"{len(rows) - landed:,} in Kafka only"
        )
        print(f"consume-only floor: all {len(rows):,} messages read in {floor:.2f} s")
        ask(settings, "defaults", start, end)
        roomy = settings.model_copy(
            update={"query_recent_max_rows": 2 * len(rows), "query_recent_timeout_seconds": 120.0}
        )
        ask(roomy, "limits that fit", start, end)


def time_text(micros: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(micros / 1e6, UTC).isoformat()


if __name__ == "__main__":
    main()
