"""``GET /v1/lag``: how far landing is behind Kafka, per topic and partition (``read`` scope; issue 16 Overview).

For every market topic the broker holds: the offset landed up to (the ``k2.kafka.offsets`` of the current
snapshot of each table, :mod:`k2.lake.summary`), the broker's high watermark, and the lag (high watermark
minus landed; everything in the topic when nothing landed from it yet), with the last commit that covered
the topic. The same numbers ``k2 status`` prints, from the same sources, so the console's Overview shows what
any client gets.

Hazards: Tansu reports as high watermark the first offset of its last batch + 1, not the log end, so on
Tansu the lag is a lower bound (``exact: false``). When the broker does not answer within the timeout the
answer still lists what landed, with ``broker_error`` set and no lag (never a silent zero).
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated aliases at definition time.

import json
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from fastapi import APIRouter, Request
from pyiceberg.exceptions import NoSuchTableError

from k2.api.errors import error_responses
from k2.api.state import run
from k2.config import Settings
from k2.lake.catalog import TABLES, load_catalog, load_table
from k2.lake.summary import RANGES_KEY, offsets_from_summary

TANSU_CLUSTER_ID = "tansu_cluster"  # Tansu's default --cluster-id: its watermarks are approximate
BROKER_TIMEOUT_SECONDS = 3.0


def _iso(ms: int | None) -> str | None:
    return None if not ms else datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def _watermarks(settings: Settings) -> tuple[dict[tuple[str, int], int], bool]:
    """(topic, partition) -> high watermark of every non-internal topic, and whether they are exact."""
    consumer = Consumer({**settings.kafka_client_config(), "group.id": f"k2-lag-{uuid.uuid4().hex[:6]}"})
    try:
        metadata = consumer.list_topics(timeout=BROKER_TIMEOUT_SECONDS)
        marks: dict[tuple[str, int], int] = {}
        for topic, info in metadata.topics.items():
            if topic.startswith("__") or topic.endswith(".dlq") or info.error is not None:
                continue
            for partition in info.partitions:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=BROKER_TIMEOUT_SECONDS
                )
                marks[(topic, int(partition))] = int(high)
        return marks, str(metadata.cluster_id or "") != TANSU_CLUSTER_ID
    finally:
        consumer.close()


def _landed(settings: Settings) -> dict[str, dict[str, Any]]:
    """Per topic: the table it lands in, the landed offset per partition and the last commit covering it."""
    catalog = load_catalog(settings)
    out: dict[str, dict[str, Any]] = {}
    for short, definition in TABLES.items():
        try:
            table = load_table(catalog, short)
        except NoSuchTableError:  # a table not created yet lands nothing
            continue
        snapshot = table.current_snapshot()
        for topic, parts in offsets_from_summary(snapshot.summary if snapshot else None).items():
            out[topic] = {"table": definition.full_name, "landed": {int(p): int(o) for p, o in parts.items()}}
        for snap in sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms, reverse=True):
            raw = snap.summary.additional_properties.get(RANGES_KEY) if snap.summary is not None else None
            for topic in json.loads(raw) if raw else {}:
                if topic in out:
                    out[topic].setdefault("last_commit_ms", snap.timestamp_ms)
    return out


def lag_report(settings: Settings) -> dict[str, Any]:
    """The body of ``/v1/lag`` (plain data)."""
    now_ms = int(time.time() * 1000)
    landed = _landed(settings)
    marks: dict[tuple[str, int], int] = {}
    exact, broker_error = False, None
    try:
        marks, exact = _watermarks(settings)
    except KafkaException as exc:
        broker_error = f"expected the Kafka broker to answer within {BROKER_TIMEOUT_SECONDS:g} s, found {exc}"
    rows = []
    for topic in sorted({t for t, _ in marks} | set(landed)):
        info = landed.get(topic, {"table": None, "landed": {}})
        partitions = sorted({p for t, p in marks if t == topic} | set(info["landed"]))
        for partition in partitions:
            high = marks.get((topic, partition))
            done = info["landed"].get(partition, 0)
            last = info.get("last_commit_ms")
            rows.append(
                {
                    "topic": topic,
                    "partition": partition,
                    "table": info["table"],
                    "landed_offset": done,
                    "high_watermark": high,
                    "lag": None if high is None else max(0, high - done),
                    "last_commit": _iso(last),
                    "last_commit_age_s": None if last is None else round((now_ms - last) / 1000, 1),
                }
            )
    return {
        "generated": _iso(now_ms),
        "exact": exact,
        "broker_error": broker_error,
        "row_count": len(rows),
        "data": rows,
    }


def lag_router(dependencies: Sequence[Any]) -> APIRouter:
    """The ``/v1/lag`` router; ``dependencies`` are the app's read-scope auth dependencies."""
    router = APIRouter(tags=["ops"], dependencies=list(dependencies))

    @router.get(
        "/v1/lag",
        summary="Landing lag per Kafka topic and partition (landed offset, high watermark, last commit)",
        responses=error_responses(401, 403, 429, 504),
    )
    async def lag(request: Request) -> dict[str, Any]:
        """Per topic and partition: the offset landed in Iceberg, the broker's high watermark, the lag and the
        last commit covering the topic; ``exact: false`` on Tansu (the lag is a lower bound there)."""
        state = request.app.state.k2
        return await run(state, lambda: lag_report(state.settings))

    return router
