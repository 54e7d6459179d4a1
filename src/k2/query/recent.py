"""The Kafka half of the hybrid query: messages not yet landed in Iceberg, decoded like the landing path.

Reads every partition of the table's topics from the offsets stored in the snapshot the Iceberg half
reads (every message below those offsets is in that snapshot, dead-lettered or deduplicated), with a
fresh consumer: partitions assigned explicitly, no group membership, nothing committed.

Stopping never trusts the broker's end offsets (Tansu reports the first offset of the last batch + 1):
the reported high watermark is only a *minimum* to read up to; reading then continues until no message
arrived for ``IDLE_SECONDS``, ``query_recent_timeout_seconds`` passed, or ``query_recent_max_rows``
matching messages were read. Values are decoded with :class:`k2.bus.serde.AvroBatchDecoder` (the
landing consumer's decoder); undecodable messages are skipped (the landing consumer dead-letters them).

Example (needs a broker and registry)::

    recent = read_recent(settings, "trades", stored_offsets, symbol="BTCUSDT")
    recent.table.num_rows
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from k2.bus.serde import AvroBatchDecoder, registry_client
from k2.config import Settings
from k2.lake.summary import OffsetMap
from k2.model import QUOTE, TRADE, RecordType

IDLE_SECONDS = 0.15
RECORDS: dict[str, tuple[RecordType, str]] = {"trades": (TRADE, "trade_id"), "quotes": (QUOTE, "update_id")}


class RecentUnavailableError(RuntimeError):
    """Kafka or the schema registry could not be read for the hybrid query."""


@dataclass
class RecentRows:
    """Rows read from Kafka (canonical Arrow schema, in-batch duplicates removed) and what it took."""

    table: pa.Table
    messages: int
    truncated: bool
    seconds: float


def dedupe_keys(table: pa.Table, key: tuple[str, ...]) -> pa.Table:
    """Keep the first row of each natural key (order preserved).

    >>> t = pa.table({"e": ["a", "a", "a", "a", "b"], "id": [3, 1, 1, 3, 3], "v": [0, 1, 2, 3, 4]})
    >>> dedupe_keys(t, ("e", "id"))["v"].to_pylist()
    [0, 1, 4]
    """
    if table.num_rows <= 1:
        return table
    indexed = table.select(list(key)).append_column("__i", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    first = indexed.group_by(list(key), use_threads=False).aggregate([("__i", "min")])["__i_min"]
    return table.take(pa.array(np.sort(first.to_numpy())))


def _topics(consumer: Consumer, data_type: str, exchange: str | None, timeout: float) -> list[tuple[str, int]]:
    pattern = re.compile(rf"^market\.[a-z]+\.{data_type}\.{re.escape(exchange) if exchange else '[a-z0-9_-]+'}$")
    metadata = consumer.list_topics(timeout=timeout)
    found: list[tuple[str, int]] = []
    for name, topic in metadata.topics.items():
        if pattern.match(name) and topic.error is None:
            found.extend((name, p) for p in topic.partitions)
    return sorted(found)


def read_recent(
    settings: Settings,
    short_name: str,
    stored: OffsetMap,
    symbol: str,
    exchange: str | None = None,
) -> RecentRows:
    """Messages of ``symbol`` (and ``exchange``) after the ``stored`` offsets, decoded and de-duplicated in batch.

    Example (needs a broker and registry)::

        read_recent(settings, "trades", {"market.crypto.trades.binance": {"0": 19904}}, "BTCUSDT").table
    """
    record, id_column = RECORDS[short_name]
    started = time.monotonic()
    deadline = started + settings.query_recent_timeout_seconds
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"k2-query-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 50,
            "socket.connection.setup.timeout.ms": max(1000, int(settings.query_recent_timeout_seconds * 1000)),
        }
    )
    values: list[bytes | None] = []
    messages = 0
    truncated = False
    key_bytes = symbol.encode()
    try:
        try:
            partitions = _topics(consumer, record.data_type.value, exchange, max(0.1, deadline - time.monotonic()))
        except KafkaException as exc:
            raise RecentUnavailableError(f"expected Kafka at {settings.bootstrap_servers} for the hybrid query, found {exc}") from None
        if not partitions:
            return RecentRows(record.arrow_schema().empty_table(), 0, False, time.monotonic() - started)
        assignment = []
        minimum: dict[tuple[str, int], int] = {}
        for topic, partition in partitions:
            start = stored.get(topic, {}).get(str(partition))
            assignment.append(TopicPartition(topic, partition, int(start) if start else OFFSET_BEGINNING))
            try:
                # A lower bound only: Tansu's high watermark can be below the true end of the log.
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=max(0.1, deadline - time.monotonic()), cached=False)
            except KafkaException:
                high = -1
            if high > (int(start) if start else 0):
                minimum[(topic, partition)] = high
        consumer.assign(assignment)
        last_message = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            if not minimum and now - last_message >= IDLE_SECONDS:
                break
            batch = consumer.consume(num_messages=10_000, timeout=min(0.05, max(0.001, deadline - now)))
            for msg in batch:
                if msg.error() is not None:
                    continue
                messages += 1
                position = (msg.topic(), msg.partition())
                offset = msg.offset()
                if position in minimum and offset is not None and offset + 1 >= minimum[position]:
                    del minimum[position]
                key = msg.key()
                if key is not None and key != key_bytes:
                    continue
                values.append(msg.value())
            if batch:
                last_message = time.monotonic()
            if len(values) >= settings.query_recent_max_rows:
                truncated = True
                values = values[: settings.query_recent_max_rows]
                break
    finally:
        consumer.close()
    if not values:
        return RecentRows(record.arrow_schema().empty_table(), messages, truncated, time.monotonic() - started)
    try:
        decoded = AvroBatchDecoder(registry_client(settings.registry_url), record).decode(values)
    except Exception as exc:  # the registry being unreachable surfaces here
        raise RecentUnavailableError(f"expected the schema registry at {settings.registry_url} for the hybrid query, found {exc}") from None
    table = decoded.table
    if table.num_rows:
        mask = pc.equal(table["symbol"], symbol)
        if exchange is not None:
            mask = pc.and_(mask, pc.equal(table["exchange"], exchange))
        table = dedupe_keys(table.filter(mask), ("exchange", "symbol", id_column))
    return RecentRows(table, messages, truncated, time.monotonic() - started)
