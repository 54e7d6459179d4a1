"""librdkafka settings of the landing consumer: its group membership and its fetch sizes."""

from __future__ import annotations

from typing import Any

from k2.config import Settings


def fetch_config(settings: Settings) -> dict[str, Any]:
    """librdkafka fetch settings of the landing consumer, tuned for throughput (the benchmark's
    consume-only baseline uses the same ones).

    Few large fetches (up to 8 MiB per partition) and a deep pre-fetch queue, bounded in bytes by
    ``consumer_fetch_max_bytes``: the broker round trips, not decoding, were the landing floor.

    Example:
        >>> fetch_config(Settings(consumer_fetch_max_bytes=8_388_608))["queued.max.messages.kbytes"]
        8192
    """
    fetch_max = settings.consumer_fetch_max_bytes
    return {
        "fetch.max.bytes": fetch_max,
        "message.max.bytes": min(1_000_000, fetch_max),  # librdkafka: <= fetch.max.bytes
        "max.partition.fetch.bytes": min(8_388_608, fetch_max),
        "queued.max.messages.kbytes": max(1024, fetch_max // 1024),
        "queued.min.messages": 1_000_000,  # the byte bound above is the binding one
    }


def group_config(settings: Settings, client_id: str) -> dict[str, Any]:
    """librdkafka settings of a landing consumer in ``consumer_group``: offsets are K2's (stored in
    Iceberg), never the group's; an unknown position is an error, not a silent reset."""
    return {
        **settings.kafka_client_config(),
        "group.id": settings.consumer_group,
        "client.id": client_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(100, settings.session_timeout_ms // 5),
        "max.poll.interval.ms": max(settings.session_timeout_ms + 1, 600_000),
        **fetch_config(settings),
        # A topic created after start-up (the first message of a new exchange or a fresh stack) matches
        # the subscription at the next refresh. 1 s on the embedded stack (a fresh stack's first rows);
        # 5 s on a configured broker, shared by many clients: every refresh is a metadata request, and a
        # full test run on one shared Tansu with 1 s saw group joins exceed 2 s.
        "topic.metadata.refresh.interval.ms": 1_000 if settings.embedded_broker else 5_000,
        "partition.assignment.strategy": "range",
    }
