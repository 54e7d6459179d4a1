"""Reading and replaying the dead-letter queue (``k2 dlq list|show|replay``).

Replay re-publishes a dead letter's original key, value and headers to its source topic, where it
goes through the normal landing path again (decode, validate, dedup): if the fix worked it lands exactly
once; if not, it is dead-lettered again with the new reason.

Reading never relies on end offsets (Tansu reports them wrong): it reads until the topic is idle for
``idle_seconds``.

Example (needs a broker)::

    letters = read_dead_letters(settings, "market.crypto.trades.binance.dlq")
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from k2.bus.dlq import DeadLetter
from k2.bus.producer import MarketDataProducer
from k2.bus.topics import list_topics
from k2.config import Settings


def dlq_topics(settings: Settings) -> dict[str, int]:
    """DLQ topic -> partition count."""
    return {t: n for t, n in list_topics(settings).items() if t.endswith(".dlq")}


def read_dead_letters(
    settings: Settings, topic: str | None = None, limit: int = 10_000, idle_seconds: float = 1.5, max_seconds: float = 30.0
) -> list[DeadLetter]:
    """Dead letters from one DLQ topic (or all), oldest first per partition, at most ``limit``."""
    topics = dlq_topics(settings)
    if topic is not None:
        if topic not in topics:
            raise KeyError(f"expected a DLQ topic (one of {sorted(topics)}), found {topic!r}")
        topics = {topic: topics[topic]}
    if not topics:
        return []
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"k2-dlq-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    letters: list[DeadLetter] = []
    try:
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, n in topics.items() for p in range(n)])
        started = last = time.monotonic()
        while len(letters) < limit and time.monotonic() - last < idle_seconds and time.monotonic() - started < max_seconds:
            batch = consumer.consume(num_messages=min(1000, limit - len(letters)), timeout=0.2)
            for msg in batch:
                if msg.error() is None:
                    letters.append(DeadLetter.from_message(msg))
            if batch:
                last = time.monotonic()
    finally:
        consumer.close()
    letters.sort(key=lambda d: (d.dlq_topic, d.dlq_partition, d.dlq_offset))
    return letters


def replay_dead_letters(settings: Settings, letters: list[DeadLetter]) -> int:
    """Re-publish dead letters to their source topics (original key, value, headers); returns the count."""
    if not letters:
        return 0
    producer = MarketDataProducer(settings, create_topics=False)
    for letter in letters:
        headers = list(letter.original_headers) + [("k2.replayed_from", f"{letter.dlq_topic}:{letter.dlq_partition}:{letter.dlq_offset}".encode())]
        producer.produce_raw(letter.source_topic, letter.key, letter.value, headers)
    try:
        producer.flush()
    except KafkaException as exc:  # pragma: no cover - surfaced as a DeliveryError normally
        raise RuntimeError(f"DLQ replay failed: {exc}") from exc
    return len(letters)
