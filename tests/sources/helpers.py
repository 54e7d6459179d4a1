"""Helpers for the live-feed tests: capture paths, a feed runner, a Kafka read-back.

Everything real: the fake exchange is a real WebSocket/HTTP server on 127.0.0.1, the feed produces to
the session's Tansu broker and schema registry, gap rows go to a real Iceberg catalog.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from k2.bus import AvroBatchDecoder, MarketDataProducer, list_topics, registry_client
from k2.config import Settings
from k2.model import DataType, RecordType
from k2.sources.live import FeedAdapter, LiveRunner

# Same location rule as tests/conftest.py (K2_SHARED_DATA, else ../shared/data next to the repo).
SHARED_DATA = Path(os.environ.get("K2_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
BINANCE_CAPTURES = [
    SHARED_DATA / "binance" / "websocket" / "spot_btcusdt_20240808.gz",
    SHARED_DATA / "binance" / "websocket" / "spot_btcusdt_20240809.gz",
]
COINBASE_CAPTURE = SHARED_DATA / "coinbase" / "cryptofeed-coinbase-2021-04-17.raw.txt"
BINANCE_SPOT_2021 = SHARED_DATA / "binance" / "websocket" / "cryptofeed-binance-spot-2021-10-12.raw.txt"
FIRST_ID, LAST_ID = 3_735_683_259, 3_735_703_162  # the capture's 19,904 trades (data README)


def live_settings(settings: Settings, **overrides: Any) -> Settings:
    """Test settings with fast reconnects (the defaults are sized for the real venues)."""
    values: dict[str, Any] = {
        "source_stall_seconds": 2.0,
        "source_backoff_initial_seconds": 0.01,
        "source_backoff_max_seconds": 0.2,
        "consumer_group": f"g-{uuid.uuid4().hex[:8]}",
        **overrides,
    }
    return settings.model_copy(update=values)


def feed_topics(exchange: str, unique: str, asset_class: str = "crypto") -> dict[DataType, str]:
    """Per-test topics (the session broker is shared; rows keep their real exchange code)."""
    return {dt: f"market.{asset_class}.{dt.value}.{exchange}-t{unique}" for dt in (DataType.TRADES, DataType.QUOTES)}


def run_feed(
    adapter: FeedAdapter,
    settings: Settings,
    *,
    topics: dict[DataType, str],
    timeout: float = 120.0,
    with_rest: bool = True,
    **kwargs: Any,
) -> LiveRunner:
    """Run one feed to completion (``stop_when``/``idle_exit_seconds`` in kwargs) and flush the producer."""

    async def main() -> LiveRunner:
        rest = adapter.rest_client() if with_rest else None
        with MarketDataProducer(settings) as producer:
            runner = LiveRunner(adapter, settings, producer, rest=rest, topics=topics, **kwargs)
            try:
                await asyncio.wait_for(runner.run(), timeout)
            finally:
                if rest is not None:
                    await rest.aclose()
        return runner

    return asyncio.run(main())


def consume(
    settings: Settings, topic: str, record: RecordType, *, expected: int, idle_seconds: float = 1.5, max_seconds: float = 90.0
) -> pa.Table:
    """Every record of ``topic`` decoded to Arrow (reads until ``expected`` seen and then ``idle_seconds`` quiet)."""
    partitions = list_topics(settings)[topic]
    consumer = Consumer(
        {**settings.kafka_client_config(), "group.id": f"read-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    )
    values: list[bytes] = []
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        started = last = time.monotonic()
        while time.monotonic() - started < max_seconds:
            batch = consumer.consume(num_messages=5000, timeout=0.2)
            for msg in batch:
                assert msg.error() is None, msg.error()
                values.append(msg.value())
            if batch:
                last = time.monotonic()
            elif len(values) >= expected and time.monotonic() - last > idle_seconds:
                break
    finally:
        consumer.close()
    decoded = AvroBatchDecoder(registry_client(settings.registry_url), record).decode(values)
    assert not decoded.failures, decoded.failures[:3]
    return decoded.table


def stop_at_trade(symbol: str, trade_id: int) -> Callable[[LiveRunner], bool]:
    """A ``stop_when`` that ends the run once ``symbol``'s last produced trade id reaches ``trade_id``."""
    return lambda runner: runner.last_trade.get(symbol, -1) >= trade_id
