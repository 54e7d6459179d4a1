"""Kafka offsets stored in Iceberg snapshot summaries: the heart of exactly-once landing.

Every landing commit writes, in the *same* Iceberg commit as its rows, two summary properties:

* ``k2.kafka.offsets`` - JSON ``{topic: {partition: next_offset}}``: the cumulative position of every
  partition that lands in this table (carried forward from the previous snapshot and updated for the
  partitions this commit covers). The latest snapshot therefore says exactly which messages are in the
  table: every offset below ``next_offset``.
* ``k2.kafka.ranges`` - JSON ``{topic: {partition: [first_offset, last_offset]}}``: what this commit added.

Plus ``k2.kafka.cluster`` (the broker's cluster id) and ``k2.kafka.topic_ids`` (JSON ``{topic: id}``,
where the broker reports topic ids) to detect a reset broker or a recreated topic.

Example:
    >>> merge_offsets({"t": {"0": 5}}, {"t": {"1": 7}})
    {'t': {'0': 5, '1': 7}}
"""

from __future__ import annotations

import json
from typing import Any

OFFSETS_KEY = "k2.kafka.offsets"
RANGES_KEY = "k2.kafka.ranges"
CLUSTER_KEY = "k2.kafka.cluster"
TOPIC_IDS_KEY = "k2.kafka.topic_ids"
WRITER_KEY = "k2.writer"

OffsetMap = dict[str, dict[str, int]]


def merge_offsets(base: OffsetMap, update: OffsetMap) -> OffsetMap:
    """``base`` with ``update``'s partitions overriding (neither argument is modified)."""
    merged = {topic: dict(parts) for topic, parts in base.items()}
    for topic, parts in update.items():
        merged.setdefault(topic, {}).update(parts)
    return merged


def offsets_from_summary(summary: Any) -> OffsetMap:
    """The cumulative offset map stored in a snapshot summary (empty when absent)."""
    if summary is None:
        return {}
    raw = summary.additional_properties.get(OFFSETS_KEY) if hasattr(summary, "additional_properties") else summary.get(OFFSETS_KEY)
    if not raw:
        return {}
    parsed = json.loads(raw)
    return {topic: {str(p): int(o) for p, o in parts.items()} for topic, parts in parsed.items()}


def table_offsets(table: Any) -> OffsetMap:
    """The cumulative offsets of a table's current snapshot."""
    snapshot = table.current_snapshot()
    return offsets_from_summary(snapshot.summary if snapshot is not None else None)
