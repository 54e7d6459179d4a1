"""``GET /v1/lag``: how far landing is behind Kafka, per topic and partition (``read`` scope; issue 16 Overview).

For every market topic the broker holds: the offset landed up to (the ``k2.kafka.offsets`` of the current
snapshot of each table, :mod:`k2.lake.summary`), the broker's high watermark, the lag (what is still in the
log and not landed) and ``trimmed_before_landing`` (messages the broker deleted — retention, delete_records
— before they landed: never in Iceberg, said so), with the last commit that covered the topic. Lag and
trimmed come from :func:`k2.bus.lag.partition_lag`, the rule ``k2 status`` applies too, so the console's
Overview and ``k2 status`` agree.

Hazards: Tansu reports as high watermark the first offset of its last batch + 1, not the log end, so on
Tansu the lag is a lower bound (``exact: false``). When the broker does not answer within the timeout the
answer still lists what landed, with ``broker_error`` set and no lag (never a silent zero).
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated aliases at definition time.

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaException
from fastapi import APIRouter, Request
from pyiceberg.exceptions import NoSuchTableError

from k2.api.errors import error_responses
from k2.api.state import run
from k2.bus.broker import read_watermarks
from k2.bus.lag import partition_lag
from k2.config import Settings
from k2.lake.catalog import TABLES, load_catalog, load_table
from k2.lake.summary import offsets_from_summary, topic_commits

BROKER_TIMEOUT_SECONDS = 3.0


def _iso(ms: int | None) -> str | None:
    return None if not ms else datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def _watermarks(settings: Settings) -> tuple[dict[tuple[str, int], tuple[int, int]], bool]:
    """(topic, partition) -> (low, high) watermarks of every market topic (no DLQs), and whether exact."""
    found = read_watermarks(
        settings,
        "k2-lag",
        list_timeout=BROKER_TIMEOUT_SECONDS,
        timeout=BROKER_TIMEOUT_SECONDS,
        skip=lambda topic: topic.endswith(".dlq"),
    )
    marks = {(topic, p): mark for topic, parts in found.topics.items() for p, mark in parts.items()}
    return marks, found.exact


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
        _, last = topic_commits(table.metadata.snapshots, since_ms=float("inf"))
        for topic, parts in offsets_from_summary(snapshot.summary if snapshot else None).items():
            out[topic] = {"table": definition.full_name, "landed": {int(p): int(o) for p, o in parts.items()}}
            if topic in last:
                out[topic]["last_commit_ms"] = last[topic]
    return out


def lag_report(settings: Settings) -> dict[str, Any]:
    """The body of ``/v1/lag`` (plain data)."""
    now_ms = int(time.time() * 1000)
    landed = _landed(settings)
    marks: dict[tuple[str, int], tuple[int, int]] = {}
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
            low, high = marks.get((topic, partition), (None, None))
            done = info["landed"].get(partition, 0)
            last = info.get("last_commit_ms")
            counted = partition_lag(done, low, high)
            rows.append(
                {
                    "topic": topic,
                    "partition": partition,
                    "table": info["table"],
                    "landed_offset": done,
                    "high_watermark": high,
                    "lag": counted.lag,
                    "trimmed_before_landing": counted.trimmed,
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
