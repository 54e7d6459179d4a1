"""``k2 down``'s drain: wait (bounded) until the landing consumer has landed every message on the broker.

"Landed" is read from the lake, not from the consumer group: the offsets stored in each table's current
snapshot (:mod:`k2.lake.summary`) are the positions below which every message is in Iceberg or in the
dead-letter topic (the landing flushes its DLQ producer *before* the Iceberg commit that moves them), so
lag 0 on every partition also means the DLQ producer has flushed.

Hazard: Tansu's high watermark is the first offset of the last batch + 1, not the log end, so a lag of 0
computed from watermarks can hide the last batch. Each check therefore also *reads* every partition from
its landed offset for a moment: any message found there is pending whatever the watermark says.

Example (needs the stack)::

    left = drain(load_settings(), 30.0)   # {} when the landing caught up
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable

from confluent_kafka import Consumer, TopicPartition

from k2.bus.broker import end_offsets
from k2.config import Settings
from k2.lake.summary import OffsetMap, merge_offsets, offsets_from_summary

Pending = dict[tuple[str, int], int]


def landed_offsets(settings: Settings) -> OffsetMap:
    """Every topic partition's landed position across K2's tables (current snapshots)."""
    from k2.lake.catalog import ensure_tables, load_catalog

    merged: OffsetMap = {}
    for table in ensure_tables(load_catalog(settings), settings).values():
        snapshot = table.current_snapshot()
        merged = merge_offsets(
            merged, offsets_from_summary(snapshot.summary if snapshot is not None else None)
        )
    return merged


def pending(settings: Settings, probe_seconds: float = 2.0) -> Pending:
    """Messages per landing-topic partition not landed yet (at least 1 where only the probe saw one)."""
    from k2.landing.consumer import TOPIC_REGEX

    landed = landed_offsets(settings)
    consumer = Consumer(
        {**settings.kafka_client_config(), "group.id": f"k2-drain-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False,
         "auto.offset.reset": "latest", "enable.partition.eof": False}
    )  # fmt: skip
    left: Pending = {}
    try:
        metadata = consumer.list_topics(timeout=10)
        starts: list[TopicPartition] = []
        for topic, info in sorted(metadata.topics.items()):
            if info.error is not None or not re.match(TOPIC_REGEX, topic):
                continue
            partitions = [(topic, p) for p in sorted(info.partitions)]
            ends = end_offsets(consumer, partitions, timeout=5, strict=True)  # a lower bound on Tansu
            for key in partitions:
                position = landed.get(topic, {}).get(str(key[1]), 0)
                high = ends[key][1]
                if high > position:
                    left[key] = high - position
                starts.append(TopicPartition(topic, key[1], position))
        if starts:
            consumer.assign(starts)
            deadline = time.monotonic() + probe_seconds
            while time.monotonic() < deadline:
                for msg in consumer.consume(1000, timeout=0.2):
                    if msg.error() is None:
                        key = (str(msg.topic()), int(msg.partition() or 0))
                        left[key] = max(left.get(key, 0), 1)
    finally:
        consumer.close()
    return left


def drain(settings: Settings, seconds: float, progress: Callable[[Pending], None] | None = None) -> Pending:
    """Wait up to ``seconds`` for lag 0 on every landing partition; returns what is still pending ({} = drained)."""
    deadline = time.monotonic() + seconds
    while True:
        left = pending(settings)
        if not left or time.monotonic() >= deadline:
            return left
        if progress is not None:
            progress(left)
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
