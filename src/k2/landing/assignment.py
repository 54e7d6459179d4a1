"""Where an assigned partition resumes: the offsets its table stores, checked against the broker's log.

On every assignment the consumer resumes each partition from the next offset stored in the table's
current snapshot summary (never the group's offsets) and checks that the last landed message (its
offset and crc in ``k2.kafka.last``) is still in the log. If not (broker log reset, topic recreated)
``landing_on_offset_reset`` decides: ``restart`` from the log start (dedup drops what is already landed)
or ``fail`` with :class:`~k2.landing.errors.OffsetResetError`. It never silently skips data.
"""

from __future__ import annotations

import json
import time
import uuid
import zlib
from typing import Any

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from pyiceberg.table import Table

from k2.config import Settings
from k2.lake.summary import OffsetMap, offsets_from_summary
from k2.landing.errors import OffsetResetError
from k2.landing.routes import route

log = structlog.get_logger("k2.landing")

LAST_KEY = "k2.kafka.last"


def stored_value(offsets: OffsetMap, topic: str, partition: int) -> int | None:
    """The next offset to land stored for ``topic[partition]`` (None when the table has none).

    Example:
        >>> stored_value({"t": {"0": 5}}, "t", 0), stored_value({}, "t", 1)
        (5, None)
    """
    parts = offsets.get(topic)
    if parts is None:
        return None
    value = parts.get(str(partition))
    return None if value is None else int(value)


def summary_json(summary: Any, key: str) -> dict[str, Any]:
    if summary is None:
        return {}
    raw = summary.additional_properties.get(key)
    return json.loads(raw) if raw else {}


def stored_positions(
    tables: dict[str, Table], partitions: list[TopicPartition], expected: dict[tuple[str, int], int | None]
) -> list[tuple[TopicPartition, int, int]]:
    """Point each assigned partition at the next offset its table stores (OFFSET_BEGINNING when none),
    note that offset in ``expected`` (the zombie check), and return the (partition, offset, crc) of the
    last landed message of each resumed partition, to check it is still in the log (:func:`verify_log`)."""
    summaries: dict[str, Any] = {}
    for short in {route(tp.topic)[0] for tp in partitions}:
        table = tables[short]
        table.refresh()
        snapshot = table.current_snapshot()
        summaries[short] = snapshot.summary if snapshot is not None else None
    checks = []
    for tp in partitions:
        short = route(tp.topic)[0]
        stored = stored_value(offsets_from_summary(summaries[short]), tp.topic, tp.partition)
        expected[(tp.topic, tp.partition)] = stored
        if stored is None or stored == 0:
            tp.offset = OFFSET_BEGINNING
        else:
            tp.offset = stored
            last = summary_json(summaries[short], LAST_KEY).get(tp.topic, {}).get(str(tp.partition))
            if last:
                offset, crc = (int(x) for x in last.split(":"))
                checks.append((tp, offset, crc))
    return checks


def verify_log(settings: Settings, checks: list[tuple[str, int, int, int]]) -> dict[tuple[str, int], bool]:
    """For each (topic, partition, offset, crc): is the message at offset still there with that crc?"""
    verdict = {(t, p): False for t, p, _, _ in checks}
    expected = {(t, p): (o, c) for t, p, o, c in checks}
    probe = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"k2-verify-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "error",
        }
    )
    try:
        probe.assign([TopicPartition(t, p, o) for t, p, o, _ in checks])
        pending = set(verdict)
        deadline = time.monotonic() + settings.landing_verify_timeout_seconds
        while pending and time.monotonic() < deadline:
            for msg in probe.consume(num_messages=len(pending) * 4, timeout=0.2):
                key = (msg.topic(), msg.partition())
                if key not in pending:
                    continue
                if msg.error() is not None:
                    pending.discard(key)  # out of range or similar: verdict stays False
                    continue
                offset, crc = expected[key]
                found = int(msg.offset() or 0)
                if found == offset:
                    verdict[key] = zlib.crc32(msg.value() or b"") == crc
                    pending.discard(key)
                elif found > offset:
                    pending.discard(key)
    finally:
        probe.close()
    return verdict


def offset_reset(settings: Settings, topic: str, partition: int, why: str) -> None:
    """Apply ``landing_on_offset_reset`` to a partition whose log lost what the table says was landed:
    raise :class:`OffsetResetError` (``fail``) or log it (``restart``: the caller reads from the log start)."""
    message = (
        f"{topic}[{partition}]: expected the log to still hold the messages the table says were landed, found "
        f"{why} (broker reset or topic recreated)"
    )
    if settings.landing_on_offset_reset == "fail":
        raise OffsetResetError(message + "; K2_LANDING_ON_OFFSET_RESET=fail")
    log.error("offset reset: restarting partition from the log start with dedup", detail=message)
