"""``k2.bus.broker.end_offsets``: the one reading of partition end offsets, against a real Tansu broker."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer

from k2.bus.broker import end_offsets, read_watermarks
from k2.bus.topics import ensure_topics
from k2.config import Settings


def test_end_offsets_report_each_batch_and_leave_out_what_the_broker_does_not_answer(
    settings: Settings, unique: str
) -> None:
    topic = f"ends.{unique}"
    ensure_topics(settings, [topic], partitions=2)
    producer = Producer(settings.kafka_client_config())
    for i in range(3):  # one batch each: on Tansu the reported end is the last batch's first offset + 1
        producer.produce(topic, value=b"x%d" % i, partition=0)
        assert producer.flush(10) == 0
    consumer = Consumer({**settings.kafka_client_config(), "group.id": f"ends-{uuid.uuid4().hex[:6]}"})
    try:
        ends = end_offsets(consumer, [(topic, 0), (topic, 1)], timeout=10)
        assert ends == {(topic, 0): (0, 3), (topic, 1): (0, 0)}
        started = time.monotonic()
        assert end_offsets(consumer, [(topic, 0)], deadline=started + 10) == {(topic, 0): (0, 3)}
        missing = end_offsets(consumer, [(topic, 7)], timeout=1)  # no such partition
        assert missing == {}
        with pytest.raises(KafkaException):
            end_offsets(consumer, [(topic, 7)], timeout=1, strict=True)
        with pytest.raises(ValueError, match="expected a timeout or a deadline"):
            end_offsets(consumer, [(topic, 0)])
    finally:
        consumer.close()
    found = read_watermarks(settings, "ends", list_timeout=10, timeout=10, skip=lambda t: t != topic)
    assert found.topics == {topic: {0: (0, 3), 1: (0, 0)}} and not found.exact
