"""Dead-lettering the landing's rejects: each to ``<topic>.dlq`` with its original bytes, key and headers
plus the reason, detail and source position (k2.bus.dlq), flushed before the Iceberg commit."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Message

from k2.bus.dlq import dlq_headers
from k2.bus.producer import MarketDataProducer
from k2.bus.topics import dlq_topic, ensure_topics
from k2.config import Settings
from k2.telemetry.metrics import metric


class DeadLetters:
    """The landing's DLQ producer (created on the first reject) and the DLQ topics it has ensured.

    Example (needs a broker)::

        dead = DeadLetters(settings)
        stats.dead_lettered += dead.send(messages, [(3, "invalid", "price <= 0")])
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: MarketDataProducer | None = None
        self._topics: set[str] = set()
        self._m_dlq = metric("k2_landing_dlq_total")

    def flush(self) -> None:
        """Wait for what was produced to the DLQ (nothing to do when nothing was)."""
        if self._producer is not None:
            self._producer.flush()

    def send(self, messages: list[Message], rejects: list[tuple[int, str, str]]) -> int:
        """Produce each reject ``(position in messages, reason, detail)`` to its topic's DLQ and flush;
        returns how many. Raises DeliveryError when the DLQ did not take them: then the caller must not
        commit past these messages."""
        if not rejects:
            return 0
        if self._producer is None:
            self._producer = MarketDataProducer(self.settings, create_topics=False)
        for position, reason, detail in sorted(rejects):
            msg = messages[position]
            source = str(msg.topic())
            target = dlq_topic(source)
            if target not in self._topics:
                ensure_topics(self.settings, [target])
                self._topics.add(target)
            timestamp = msg.timestamp()[1] if msg.timestamp() else -1
            original: Any = msg.headers()
            headers = dlq_headers(
                reason, detail, source, int(msg.partition() or 0), int(msg.offset() or 0), timestamp, original
            )
            self._producer.produce_raw(target, msg.key(), msg.value(), headers)
            self._m_dlq.labels(topic=source, reason=reason).inc()
        self._producer.flush()  # raises DeliveryError: then nothing is committed past these messages
        return len(rejects)
