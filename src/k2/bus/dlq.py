"""The dead-letter queue: ``<topic>.dlq`` keeps a message that could not land, byte for byte, with why.

A DLQ record has the original key and value (unchanged bytes) and headers:

* ``k2.reason`` (short code, e.g. ``avro_decode``, ``non_positive_price``) and ``k2.detail`` (text);
* ``k2.source.topic``, ``k2.source.partition``, ``k2.source.offset``, ``k2.source.timestamp`` (where it
  came from; partition/offset are ``-1`` for messages rejected before reaching Kafka, e.g. by a source);
* ``k2.dlq.ts`` (when it was dead-lettered, epoch microseconds), and the original headers.

Example:
    >>> headers = dlq_headers("bad_magic", "expected 0", "market.crypto.trades.binance", 2, 41)
    >>> dict(headers)["k2.source.offset"]
    b'41'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from k2.model.values import now_micros

REASON = "k2.reason"
DETAIL = "k2.detail"
SOURCE_TOPIC = "k2.source.topic"
SOURCE_PARTITION = "k2.source.partition"
SOURCE_OFFSET = "k2.source.offset"
SOURCE_TIMESTAMP = "k2.source.timestamp"
DLQ_TS = "k2.dlq.ts"
_K2_HEADERS = {REASON, DETAIL, SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET, SOURCE_TIMESTAMP, DLQ_TS}


def dlq_headers(
    reason: str,
    detail: str,
    source_topic: str,
    source_partition: int = -1,
    source_offset: int = -1,
    source_timestamp: int = -1,
    original: list[tuple[str, bytes]] | None = None,
) -> list[tuple[str, bytes]]:
    """Headers for a DLQ record (original headers kept, K2's own added)."""
    kept = [(k, v) for k, v in (original or []) if k not in _K2_HEADERS]
    return kept + [
        (REASON, reason.encode()),
        (DETAIL, detail[:4000].encode()),
        (SOURCE_TOPIC, source_topic.encode()),
        (SOURCE_PARTITION, str(source_partition).encode()),
        (SOURCE_OFFSET, str(source_offset).encode()),
        (SOURCE_TIMESTAMP, str(source_timestamp).encode()),
        (DLQ_TS, str(now_micros()).encode()),
    ]


@dataclass(frozen=True)
class DeadLetter:
    """A DLQ record read back from Kafka."""

    dlq_topic: str
    dlq_partition: int
    dlq_offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    source_timestamp: int
    dead_lettered_ts: int
    original_headers: list[tuple[str, bytes]]

    @classmethod
    def from_message(cls, msg: Any) -> DeadLetter:
        """Parse a confluent-kafka Message from a DLQ topic."""
        headers = [(k, v or b"") for k, v in (msg.headers() or [])]
        found = {k: v.decode(errors="replace") for k, v in headers if k in _K2_HEADERS}
        return cls(
            dlq_topic=msg.topic(),
            dlq_partition=msg.partition(),
            dlq_offset=msg.offset(),
            key=msg.key(),
            value=msg.value(),
            reason=found.get(REASON, "unknown"),
            detail=found.get(DETAIL, ""),
            source_topic=found.get(SOURCE_TOPIC, msg.topic().removesuffix(".dlq")),
            source_partition=int(found.get(SOURCE_PARTITION, "-1")),
            source_offset=int(found.get(SOURCE_OFFSET, "-1")),
            source_timestamp=int(found.get(SOURCE_TIMESTAMP, "-1")),
            dead_lettered_ts=int(found.get(DLQ_TS, "-1")),
            original_headers=[(k, v) for k, v in headers if k not in _K2_HEADERS],
        )
