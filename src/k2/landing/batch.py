"""One table's batch of buffered messages: redeliveries dropped, decoded, validated, its coverage.

The per-message work is kept to a few C calls: positions are numpy arrays (topics as codes into
``topic_names``), decoding and validation are vectorised per batch. What a batch becomes in the table
(dedup, gaps, the Iceberg commit) is the consumer's; this module only says which rows may land, which
messages are rejected and why, and which offsets the commit covers.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from itertools import compress

import numpy as np
import pyarrow as pa
import structlog
from confluent_kafka import OFFSET_BEGINNING, Message
from pyiceberg.table import Table

from k2.bus.lineage import message_ids
from k2.bus.serde import AvroBatchDecoder, DecodedBatch, RegistryUnavailableError
from k2.bus.topics import parse_topic
from k2.config import Settings
from k2.landing.dedup import HighWaterMarks, screen_ids
from k2.landing.errors import LandingError
from k2.landing.gcpause import collector_paused
from k2.landing.routes import TABLE_ROUTES
from k2.model.lineage import with_kafka_lineage
from k2.model.validate import validate
from k2.model.values import now_micros
from k2.pacing import Attempt, Backoff, retrying
from k2.telemetry.logging import correlation_ids

log = structlog.get_logger("k2.landing")

# Unbound accessors: map(_VALUE, messages) runs at C speed, unlike a generator of method calls.
_PARTITION = Message.partition
_OFFSET = Message.offset
_VALUE = Message.value
_HEADERS = Message.headers


@dataclass
class Batch:
    """One table's buffered messages and their positions as arrays (topics as codes into topic_names)."""

    messages: list[Message]
    partitions_array: np.ndarray
    offsets: np.ndarray
    topic_codes: np.ndarray
    topic_names: list[str]

    def partitions(self) -> list[tuple[str, int, np.ndarray]]:
        """(topic, partition, indices of its messages) for each partition in the batch."""
        out = []
        for code, topic in enumerate(self.topic_names):
            in_topic = self.topic_codes == code
            for partition in np.unique(self.partitions_array[in_topic]):
                out.append(
                    (topic, int(partition), np.flatnonzero(in_topic & (self.partitions_array == partition)))
                )
        return out


@dataclass
class Rows:
    """Rows that may land and the position of each one's message in the batch."""

    good: pa.Table
    positions: np.ndarray


@dataclass
class Coverage:
    """What a commit covers: offset span, last message (offset, crc) per partition, correlation ids."""

    ranges: dict[tuple[str, int], list[int]]
    last_crc: dict[tuple[str, int], tuple[int, int]]
    cids: set[str]


def lineage(good: pa.Table, batch: Batch, positions: np.ndarray) -> pa.Table:
    """``good`` with each row's lineage: its message's topic, partition, offset and message id (k2.mid).

    Headers are read once per message (a depth message lands as many rows), then taken per row.
    """
    with collector_paused():  # the first headers() call builds each message's list (k2.landing.gcpause)
        producers, sequences = message_ids(map(_HEADERS, batch.messages))
    take = pa.array(positions, type=pa.int64())
    return with_kafka_lineage(
        good,
        batch.topic_names,
        batch.topic_codes[positions],
        batch.partitions_array[positions],
        batch.offsets[positions],
        producers.take(take),
        sequences.take(take),
    )


def fresh_batch(
    messages: list[Message], mine: set[str], next_offsets: dict[tuple[str, int], int]
) -> tuple[Batch | None, int]:
    """The batch's positions as arrays, without redeliveries (messages below their partition's next
    offset to land, seen again after a seek); None when nothing is left. ``mine``: the assigned topics
    feeding this table. Returns the batch and how many redeliveries were dropped."""
    msg_partitions = np.fromiter(map(_PARTITION, messages), dtype=np.int64, count=len(messages))
    msg_offsets = np.fromiter(map(_OFFSET, messages), dtype=np.int64, count=len(messages))
    if len(mine) == 1 and str(messages[0].topic()) in mine and str(messages[-1].topic()) in mine:
        topic_names = sorted(mine)  # one topic feeds this table: no per-message topic look-up
        msg_topics = topic_names
    else:
        msg_topics = [str(m.topic()) for m in messages]
        topic_names = sorted(set(msg_topics))
    if len(topic_names) > 1:
        codes = {t: i for i, t in enumerate(topic_names)}
        topic_codes = np.fromiter((codes[t] for t in msg_topics), dtype=np.int64, count=len(messages))
    else:
        topic_codes = np.zeros(len(messages), dtype=np.int64)
    batch = Batch(messages, msg_partitions, msg_offsets, topic_codes, topic_names)
    floors = np.zeros(len(messages), dtype=np.int64)
    for topic, partition, selected in batch.partitions():
        floors[selected] = max(0, next_offsets.get((topic, partition), 0))
    fresh = msg_offsets >= floors
    redelivered = 0
    if not fresh.all():
        redelivered = int((~fresh).sum())
        kept = list(compress(messages, fresh.tolist()))
        batch = Batch(kept, msg_partitions[fresh], msg_offsets[fresh], topic_codes[fresh], topic_names)
    return (batch if batch.messages else None), redelivered


def decode(decoder: AvroBatchDecoder, batch: Batch) -> DecodedBatch:
    """Avro-decode the batch; a registry outage is waited out (never dead-letters good messages)."""
    values = list(map(_VALUE, batch.messages))

    def note(attempt: Attempt) -> None:
        log.warning(
            "schema registry unavailable; retrying", error=str(attempt.failure), attempt=attempt.number
        )

    try:
        for attempt in retrying(
            RegistryUnavailableError, attempts=6, backoff=Backoff(2.0, 32.0), on_retry=note
        ):
            with attempt:
                return decoder.decode(values)
    except RegistryUnavailableError as exc:
        raise LandingError(f"expected the schema registry to answer, found it failing: {exc}") from exc
    raise AssertionError("unreachable")  # pragma: no cover


def validate_rows(
    short: str,
    batch: Batch,
    decoded: DecodedBatch,
    settings: Settings,
    table: Table,
    marks: HighWaterMarks,
    windowed: frozenset[str],
) -> tuple[pa.Table, np.ndarray, list[tuple[int, str, str]]]:
    """Rows that may land (and their message positions) and the rejects ``(position, reason, detail)``:
    undecodable, invalid values (k2.model.validate, per topic so exchange and asset class are checked
    against the topic name), and ids outside the window of their high-water mark (screen_ids)."""
    _, record, id_column = TABLE_ROUTES[short]
    rejects: list[tuple[int, str, str]] = [(pos, err.reason, err.detail) for pos, err in decoded.failures]
    good = decoded.table
    positions = np.asarray(decoded.indices, dtype=np.int64)
    if not good.num_rows:
        return good, positions, rejects
    row_codes = batch.topic_codes[positions]
    invalid = np.zeros(good.num_rows, dtype=bool)
    for code in np.unique(row_codes):
        asset_class, _, exchange = parse_topic(batch.topic_names[int(code)])
        rows = np.flatnonzero(row_codes == code)
        subset = good if len(rows) == good.num_rows else good.take(pa.array(rows))
        for row, reason, detail in validate(
            record,
            subset,
            now_us=now_micros(),
            max_future_us=int(settings.landing_max_future_seconds * 1_000_000),
            expected_exchange=exchange,
            expected_asset_class=asset_class,
        ):
            invalid[rows[row]] = True
            rejects.append((int(positions[rows[row]]), reason, detail))
    if invalid.any():
        good, positions = good.filter(pa.array(~invalid)), positions[~invalid]
    screened = screen_ids(
        good,
        id_column,
        table,
        marks,
        settings.landing_max_id_jump,
        windowed,
    )
    if screened:
        out = np.zeros(good.num_rows, dtype=bool)
        for row, reason, detail in screened:
            out[row] = True
            rejects.append((int(positions[row]), reason, detail))
        good, positions = good.filter(pa.array(~out)), positions[~out]
    return good, positions, rejects


def coverage_of(batch: Batch, next_offsets: dict[tuple[str, int], int]) -> Coverage:
    """Offsets covered per partition (every consumed message: landed, dead-lettered or deduplicated),
    the last message's crc (reset check) and the producers' correlation ids of each partition's ends."""
    coverage = Coverage({}, {}, set())
    for topic, partition, selected in batch.partitions():
        offsets = batch.offsets[selected]
        top = int(selected[int(np.argmax(offsets))])
        key = (topic, partition)
        coverage.ranges[key] = [int(offsets.min()), int(offsets.max())]
        coverage.last_crc[key] = (int(batch.offsets[top]), zlib.crc32(batch.messages[top].value() or b""))
        coverage.cids.update(
            correlation_ids(batch.messages[top].headers())
            + correlation_ids(batch.messages[int(selected[0])].headers())
        )
        floor = next_offsets.get(key, OFFSET_BEGINNING)
        if floor >= 0 and coverage.ranges[key][0] > floor:
            # Not an error on Kafka (compaction, transaction markers leave offset holes), but
            # worth seeing: K2's producers write neither.
            log.warning(
                "offset hole before batch",
                topic=topic,
                partition=partition,
                expected=floor,
                found=coverage.ranges[key][0],
            )
    return coverage
