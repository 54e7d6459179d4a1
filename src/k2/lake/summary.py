"""The snapshot-summary contract: what every K2 commit says in its Iceberg snapshot summary.

**One owner.** Every K2 writer (landing consumer, direct ``k2 import``, maintenance, reference data)
builds its summary with :func:`commit_summary`: the parent snapshot's carried properties (the Kafka
positions, ``k2.kafka.*`` except the per-commit ``k2.kafka.ranges``) plus what this commit adds. A
writer that built its own dict would drop ``k2.kafka.offsets``; the landing consumer would then find
its partitions "moved by another writer", drop its batch and re-read from offset 0 (issue 10 §4).

Hazard: the parent must be the snapshot the commit is *based on*. Writers commit through a table whose
``commit.retry.num-retries`` is 0, so a concurrent commit fails theirs; they refresh and rebuild the
summary from the new parent. A summary reused across a pyiceberg rebase would move offsets backwards.

Kafka offsets (the heart of exactly-once landing):

Every landing commit writes, in the *same* Iceberg commit as its rows, two summary properties:

* ``k2.kafka.offsets`` - JSON ``{topic: {partition: next_offset}}``: the cumulative position of every
  partition that lands in this table (carried forward from the previous snapshot and updated for the
  partitions this commit covers). The latest snapshot therefore says exactly which messages are in the
  table: every offset below ``next_offset``.
* ``k2.kafka.ranges`` - JSON ``{topic: {partition: [first_offset, last_offset]}}``: what this commit added.

Plus ``k2.kafka.cluster`` (the broker's cluster id) and ``k2.kafka.topic_ids`` (JSON ``{topic: id}``,
where the broker reports topic ids) to detect a reset broker or a recreated topic.

Other keys (all declared here): ``k2.writer`` (who committed), ``k2.cids`` (producer correlation ids,
see :mod:`k2.telemetry.logging`), ``k2.import.*`` (file, sha256, format, rows of a direct import),
``k2.maintenance`` (compaction / rewrite-manifests marker), ``k2.reference.source``, ``k2.gaps``
(gap-ledger rows recorded with this commit).

Example:
    >>> merge_offsets({"t": {"0": 5}}, {"t": {"1": 7}})
    {'t': {'0': 5, '1': 7}}
    >>> parent = {OFFSETS_KEY: '{"t": {"0": 5}}', RANGES_KEY: '{"t": {"0": [0, 4]}}', "k2.import.rows": "9"}
    >>> commit_summary(parent, "k2-import", {IMPORT_ROWS_KEY: "3"})
    {'k2.kafka.offsets': '{"t": {"0": 5}}', 'k2.writer': 'k2-import', 'k2.import.rows': '3'}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

OFFSETS_KEY = "k2.kafka.offsets"
RANGES_KEY = "k2.kafka.ranges"
CLUSTER_KEY = "k2.kafka.cluster"
TOPIC_IDS_KEY = "k2.kafka.topic_ids"
LAST_KEY = "k2.kafka.last"
WRITER_KEY = "k2.writer"
CIDS_KEY = "k2.cids"  # also named CIDS_SUMMARY_KEY in k2.telemetry.logging (ground layer, cannot import this)
IMPORT_FILE_KEY = "k2.import.file"
IMPORT_SHA_KEY = "k2.import.sha256"
IMPORT_FORMAT_KEY = "k2.import.format"
IMPORT_ROWS_KEY = "k2.import.rows"
MAINTENANCE_KEY = "k2.maintenance"
REFERENCE_KEY = "k2.reference.source"
GAPS_KEY = "k2.gaps"
_CARRIED_PREFIX = "k2.kafka."
_PER_COMMIT = frozenset({RANGES_KEY})

OffsetMap = dict[str, dict[str, int]]


def merge_offsets(base: OffsetMap, update: OffsetMap) -> OffsetMap:
    """``base`` with ``update``'s partitions overriding (neither argument is modified)."""
    merged = {topic: dict(parts) for topic, parts in base.items()}
    for topic, parts in update.items():
        merged.setdefault(topic, {}).update(parts)
    return merged


def _properties(parent: Any) -> Mapping[str, str]:
    """The summary properties of a snapshot, a pyiceberg ``Summary`` or a plain mapping (None: empty)."""
    if parent is None:
        return {}
    if hasattr(parent, "summary"):  # a Snapshot
        parent = parent.summary
        if parent is None:
            return {}
    if hasattr(parent, "additional_properties"):
        return dict(parent.additional_properties)
    return dict(parent)


def carried(parent: Any) -> dict[str, str]:
    """The parent's properties every new commit repeats: the Kafka positions (``k2.kafka.*`` but ranges)."""
    return {
        k: v for k, v in _properties(parent).items() if k.startswith(_CARRIED_PREFIX) and k not in _PER_COMMIT
    }


def commit_summary(
    parent: Any,
    writer: str,
    adds: Mapping[str, str] | None = None,
    *,
    offsets: OffsetMap | None = None,
    ranges: Mapping[str, Mapping[str, list[int]]] | None = None,
    cids: Iterable[str] = (),
) -> dict[str, str]:
    """The summary of a new commit on top of ``parent`` (a Snapshot, Summary, mapping or None).

    The parent's Kafka positions are carried; ``offsets`` (the partitions this commit covers, next
    offset to read) replace theirs (the landing consumer checked them against this parent);
    ``ranges`` and ``cids`` describe this commit only; ``adds`` are this writer's own properties
    (they may not rewrite the offsets: use ``offsets``).
    """
    props = carried(parent)
    if offsets:
        props[OFFSETS_KEY] = json.dumps(merge_offsets(offsets_from_summary(props), offsets), sort_keys=True)
    if ranges:
        props[RANGES_KEY] = json.dumps(ranges, sort_keys=True)
    props[WRITER_KEY] = writer
    ids = sorted(set(cids))
    if ids:
        props[CIDS_KEY] = ",".join(ids)
    for key, value in (adds or {}).items():
        if key in (OFFSETS_KEY, RANGES_KEY):
            raise ValueError(f"expected Kafka positions through offsets=/ranges=, found {key} in adds")
        props[key] = value
    return props


def offsets_from_summary(summary: Any) -> OffsetMap:
    """The cumulative offset map stored in a snapshot summary (empty when absent)."""
    raw = _properties(summary).get(OFFSETS_KEY)
    if not raw:
        return {}
    parsed = json.loads(raw)
    return {topic: {str(p): int(o) for p, o in parts.items()} for topic, parts in parsed.items()}


def table_offsets(table: Any) -> OffsetMap:
    """The cumulative offsets of a table's current snapshot."""
    snapshot = table.current_snapshot()
    return offsets_from_summary(snapshot.summary if snapshot is not None else None)


def topic_commits(snapshots: Iterable[Any], since_ms: float) -> tuple[dict[str, int], dict[str, int]]:
    """Per topic, from the ``k2.kafka.ranges`` of a table's snapshots: the messages covered by commits at
    or after ``since_ms``, and the time (ms) of the newest commit covering the topic (``k2 status`` and
    ``/v1/lag`` both read landing progress this way)."""
    covered: dict[str, int] = {}
    last: dict[str, int] = {}
    for snapshot in sorted(snapshots, key=lambda s: s.timestamp_ms, reverse=True):
        raw = _properties(snapshot).get(RANGES_KEY)
        if not raw:
            continue
        for topic, parts in json.loads(raw).items():
            last.setdefault(topic, snapshot.timestamp_ms)
            if snapshot.timestamp_ms >= since_ms:
                covered[topic] = covered.get(topic, 0) + sum(
                    int(hi) - int(lo) + 1 for lo, hi in parts.values()
                )
    return covered, last
