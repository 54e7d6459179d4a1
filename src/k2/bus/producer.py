"""The market-data producer: idempotent (acks=all), compressed, bounded, and loud about failures.

* Key = exchange-native symbol, so one symbol's messages stay ordered in one partition.
* A full local queue **blocks** the caller (polling for delivery reports) and counts the wait in
  ``k2_producer_blocked_seconds_total``; data is never dropped.
* Every delivery error is counted (``k2_producer_errors_total``) and kept; :meth:`flush` raises
  :class:`DeliveryError` listing them, so a failed delivery can never pass silently.

Example:
    >>> from k2.config import Settings
    >>> producer_config(Settings(kafka_bootstrap_servers="127.0.0.1:9092"))["enable.idempotence"]
    True
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from k2.bus.serde import AvroEncoder, registry_client
from k2.bus.topics import ensure_topics, topic_name
from k2.config import Settings
from k2.model import RecordType
from k2.model.values import now_micros
from k2.telemetry.logging import CID_HEADER, new_correlation_id
from k2.telemetry.metrics import metric


class DeliveryError(RuntimeError):
    """One or more messages were not acknowledged by the broker."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        sample = "; ".join(f"{t}: {e}" for t, e in errors[:5])
        super().__init__(f"expected every message to be acknowledged, found {len(errors)} delivery errors ({sample})")
        self.errors = errors


def producer_config(settings: Settings) -> dict[str, Any]:
    """librdkafka producer settings K2 uses (idempotent, acks=all, bounded queue)."""
    return {
        **settings.kafka_client_config(),
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": settings.producer_compression,
        "linger.ms": settings.producer_linger_ms,
        "queue.buffering.max.messages": settings.producer_queue_max_messages,
        "queue.buffering.max.kbytes": settings.producer_queue_max_kbytes,
        "batch.num.messages": 10_000,
        "message.timeout.ms": 120_000,
    }


class MarketDataProducer:
    """Produce canonical records (wire form) to their topics.

    Example (needs a broker and registry)::

        with MarketDataProducer(settings) as producer:
            producer.send(TRADE, trade_row)
    """

    def __init__(self, settings: Settings, create_topics: bool = True) -> None:
        self.settings = settings
        self._producer = Producer(producer_config(settings))
        self._registry = registry_client(settings.registry_url)
        self._encoders: dict[tuple[str, str], AvroEncoder] = {}
        self._create_topics = create_topics
        self.errors: list[tuple[str, str]] = []
        self.delivered = 0
        self.sent = 0
        # ops: every message sent gets a `k2.cid` header naming this producer session (see k2.telemetry.logging).
        self.correlation_id = new_correlation_id()
        self._cid_headers = [(CID_HEADER, self.correlation_id.encode())]
        self._delivered_by_topic: dict[str, int] = {}
        self._topics: dict[tuple[str, str, str], str] = {}
        self._m_delivered = metric("k2_producer_messages_total")
        self._m_errors = metric("k2_producer_errors_total")
        self._m_depth = metric("k2_producer_queue_depth").unlabelled()
        self._m_blocked = metric("k2_producer_blocked_seconds_total").unlabelled()

    def encoder(self, record: RecordType, topic: str) -> AvroEncoder:
        key = (record.name, topic)
        enc = self._encoders.get(key)
        if enc is None:
            if self._create_topics:
                ensure_topics(self.settings, [topic])
            enc = self._encoders[key] = AvroEncoder(self._registry, record, topic)
        return enc

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        # Called once per message: keep it cheap, publish the counters in bulk (_publish_metrics).
        if err is not None:
            self.errors.append((str(msg.topic()), str(err)))
            self._m_errors.labels(topic=str(msg.topic()), error=err.name()).inc()
        else:
            topic = str(msg.topic())
            self._delivered_by_topic[topic] = self._delivered_by_topic.get(topic, 0) + 1

    def _publish_metrics(self) -> None:
        counts, self._delivered_by_topic = self._delivered_by_topic, {}
        for topic, count in counts.items():
            self.delivered += count
            self._m_delivered.labels(topic=topic).inc(count)
        self._m_depth.set(len(self._producer))

    def topic_for(self, record: RecordType, row: dict[str, Any]) -> str:
        key = (row["asset_class"], record.data_type.value, row["exchange"])
        topic = self._topics.get(key)
        if topic is None:
            topic = self._topics[key] = topic_name(*key)
        return topic

    def send(self, record: RecordType, row: dict[str, Any], topic: str | None = None, headers: dict[str, str] | None = None) -> None:
        """Encode and enqueue one record; blocks (never drops) while the local queue is full."""
        if "ingest_ts" in row and row["ingest_ts"] is None or "ingest_ts" not in row and any(f.name == "ingest_ts" for f in record.fields):
            row = {**row, "ingest_ts": now_micros()}
        target = topic or self.topic_for(record, row)
        value = self.encoder(record, target).encode(row)
        self.produce_raw(target, row["symbol"].encode(), value, headers if headers is not None else self._cid_headers)

    def produce_raw(self, topic: str, key: bytes | None, value: bytes | None, headers: dict[str, str] | list[tuple[str, bytes]] | None = None) -> None:
        """Enqueue already-encoded bytes (DLQ, replay); blocks while the queue is full."""
        hdrs: Any = list(headers.items()) if isinstance(headers, dict) else headers
        waited = 0.0
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=hdrs, on_delivery=self._on_delivery)
                break
            except BufferError:
                start = time.monotonic()
                self._producer.poll(0.05)
                waited += time.monotonic() - start
        if waited:
            self._m_blocked.inc(waited)
        self.sent += 1
        if self.sent % 1000 == 0:
            self._producer.poll(0)
            self._publish_metrics()

    def send_many(self, record: RecordType, rows: Iterable[dict[str, Any]], topic: str | None = None) -> int:
        """Send many records; returns how many were enqueued."""
        count = 0
        for row in rows:
            self.send(record, row, topic)
            count += 1
        return count

    def flush(self, timeout: float = 120.0) -> None:
        """Wait for every delivery report; raise :class:`DeliveryError` if any message failed."""
        remaining = self._producer.flush(timeout)
        self._publish_metrics()
        if remaining:
            raise DeliveryError([("(queue)", f"{remaining} messages still unacknowledged after {timeout}s")])
        if self.errors:
            errors, self.errors = self.errors, []
            raise DeliveryError(errors)

    def __enter__(self) -> MarketDataProducer:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.flush()
        else:
            self._producer.flush(10)
