"""Helpers for the live-feed tests: capture paths, a feed runner, a Kafka read-back.

Everything real: the fake exchange is a real WebSocket/HTTP server on 127.0.0.1, the feed produces to
the session's Tansu broker and schema registry, gap rows go to a real Iceberg catalog.
"""

from __future__ import annotations

import asyncio
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

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
# Real captures kept in the repository (sources named in data/samples/README.md and tests/fixtures/README.md).
BINANCE_CAPTURES = [
    REPO / "data" / "samples" / "binance" / "spot_btcusdt_20240808.gz",
    REPO / "data" / "samples" / "binance" / "spot_btcusdt_20240809.gz",
]
COINBASE_CAPTURE = FIXTURES / "coinbase" / "cryptofeed-coinbase-2021-04-17.sample.raw.txt"
BINANCE_SPOT_2021 = FIXTURES / "binance_ws" / "cryptofeed-binance-spot-2021-10-12.raw.txt"
EXCHANGE_INFO = FIXTURES / "binance_exchange_info.json"
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
    return {
        dt: f"market.{asset_class}.{dt.value}.{exchange}-t{unique}"
        for dt in (DataType.TRADES, DataType.QUOTES)
    }


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
    settings: Settings,
    topic: str,
    record: RecordType,
    *,
    expected: int,
    idle_seconds: float = 1.5,
    max_seconds: float = 90.0,
) -> pa.Table:
    """Every record of ``topic`` decoded to Arrow (reads until ``expected`` seen and then ``idle_seconds`` quiet)."""
    partitions = list_topics(settings)[topic]
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"read-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
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


def store_rows(settings: Settings, short_name: str, record: RecordType, rows: list[dict[str, Any]]) -> None:
    """Append wire-form rows straight to one of K2's tables (one commit): stored data for replay/reference tests."""
    from k2.lake.catalog import ensure_tables, load_catalog
    from k2.lake.writer import append
    from k2.model.arrow import records_to_arrow

    table = ensure_tables(load_catalog(settings), settings)[short_name]
    # Parsed capture rows were never produced: their ingest time is taken as their receipt time.
    ready = [
        row if row.get("ingest_ts") is not None else {**row, "ingest_ts": row["receipt_ts"]} for row in rows
    ]
    append(table, records_to_arrow(record, ready), short_name)


def cli_env(settings: Settings) -> dict[str, str]:
    """Environment for a ``k2`` subprocess using the test's broker, registry and data dir."""
    import os

    return {
        **os.environ,
        "K2_KAFKA_BOOTSTRAP_SERVERS": str(settings.kafka_bootstrap_servers),
        "K2_SCHEMA_REGISTRY_URL": str(settings.schema_registry_url),
        "K2_DATA_DIR": str(settings.data_dir),
    }
