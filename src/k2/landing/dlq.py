"""Reading and replaying the dead-letter queue (``k2 dlq list|show|replay``).

Replay **moves** letters, it never copies them back:

1. letters already replayed are skipped: each replayed letter gets a marker record (key
   ``partition:offset``, value JSON with when and where to) in ``<dlq topic>.replayed``, read back before
   every replay and shown by ``k2 dlq list``;
2. every other letter is checked with the landing's own checks first -- Avro decode, k2.model.validate
   (against its topic's exchange and asset class) and the id window of :func:`k2.landing.dedup.screen_ids`;
3. only letters that now pass are re-published to their source topic (original key, value and headers,
   plus ``k2.replayed_from``); the others stay in the DLQ, untouched, and are reported with why.

Hazard: the re-published letters are flushed *before* their markers; a crash between the two re-sends
them on the next replay, where the landing's dedup drops them (at-least-once replay, exactly once in
the table). A letter that is re-published but rejected by a landing with other settings comes back as
a *new* letter (new DLQ offset), which a later replay checks again.

Reading never stops at the ListOffsets end alone (Tansu reports the first offset of the last batch, plus
one): a partition is finished once read up to the high watermark of the first fetch answered for it after
the read started (the log end on Kafka and on Tansu 0.6; :func:`k2.bus.broker.fetched_watermarks`), and
never before the ListOffsets end. The read ends as soon as every partition is finished (``ended_by`` is
``"log_end"``); waiting until the topic is idle for ``idle_seconds`` stays only as the fallback for a
partition no fetch reported on (``"idle"``). Letters written after the start may or may not be read. A read
that stops before a partition's end (``limit`` reached, or ``max_seconds`` passed) says so:
:func:`read_dead_letters` returns a :class:`DeadLetters` list whose ``stopped`` names each such partition,
the next offset not read and its end (the fetched log end, else the ListOffsets end): "partial: stopped at
offset X of Y on partition P".

Example (needs a broker)::

    letters = read_dead_letters(settings, "market.crypto.trades.binance.dlq")
    report = replay_dead_letters(settings, letters)
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import structlog
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from k2.bus.broker import end_offsets, fetched_watermarks, start_offset
from k2.bus.dlq import DeadLetter
from k2.bus.producer import MarketDataProducer
from k2.bus.serde import AvroBatchDecoder, registry_client
from k2.bus.topics import ensure_topics, is_dlq_topic, list_topics, parse_topic
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.landing.dedup import HighWaterMarks, screen_ids, sequential_exchanges
from k2.landing.routes import route
from k2.model.validate import validate
from k2.model.values import now_micros

log = structlog.get_logger("k2.dlq")

REPLAYED_SUFFIX = ".replayed"


def replayed_topic(dlq: str) -> str:
    """The topic of ``dlq``'s replay markers.

    >>> replayed_topic("market.crypto.trades.binance.dlq")
    'market.crypto.trades.binance.dlq.replayed'
    """
    return dlq + REPLAYED_SUFFIX


def dlq_topics(settings: Settings) -> dict[str, int]:
    """K2's DLQ topic -> partition count (:func:`k2.bus.topics.is_dlq_topic`: other applications' ``*.dlq``
    topics on a shared cluster are not K2's to list or replay)."""
    return {t: n for t, n in list_topics(settings).items() if is_dlq_topic(t)}


@dataclass(frozen=True)
class Stop:
    """Where a dead-letter read stopped short of a partition's end (the log end a fetch reported, else the
    ListOffsets end)."""

    topic: str
    partition: int
    next_offset: int
    end: int

    def __str__(self) -> str:
        return f"stopped at offset {self.next_offset} of {self.end} on partition {self.partition} of {self.topic}"


class DeadLetters(list[DeadLetter]):
    """The dead letters read (a list), ``stopped``: the partitions the read left before their end, and
    ``ended_by``: how a complete read ended.

    >>> DeadLetters([], [Stop("t.dlq", 0, 2, 5)]).partial_message()
    'partial: stopped at offset 2 of 5 on partition 0 of t.dlq'
    >>> DeadLetters([]).complete
    True
    """

    def __init__(
        self, letters: list[DeadLetter], stopped: list[Stop] | None = None, ended_by: str | None = None
    ) -> None:
        super().__init__(letters)
        self.stopped: list[Stop] = list(stopped or [])
        # How a complete read knew it had everything: "log_end" (every partition read up to the log end a
        # fetch reported after the start) or "idle" (the fallback wait); None when it stopped short.
        self.ended_by = ended_by

    @property
    def complete(self) -> bool:
        """Whether the read reached every partition's end."""
        return not self.stopped

    def partial_message(self) -> str | None:
        """``partial: stopped at offset X of Y on partition P of T; ...`` (None when complete)."""
        return None if self.complete else "partial: " + "; ".join(map(str, self.stopped))


@dataclass
class _Partition:
    """One partition's reading state: the broker's ListOffsets answer, how far it was read, its log end."""

    listed: tuple[int, int] | None  # (low, high) ListOffsets reported at the start (None: no answer)
    next: int | None  # the next offset not read (None: unknown until a message or a fetch says)
    end: int | None = None  # the high watermark of the first fetch answered: the log end at the start

    def minimum(self) -> int:
        """The offset the read must reach at least: the ListOffsets end, raised to the fetched log end."""
        listed = self.listed[1] if self.listed is not None and self.listed[1] > self.listed[0] else 0
        return max(listed, self.end or 0)

    def reached_listed(self) -> bool:
        """Read up to the ListOffsets end (a partition it reported empty, or left out, has nothing to reach)."""
        if self.listed is None or self.listed[1] <= self.listed[0]:
            return True
        return self.next is not None and self.next >= self.listed[1]

    def passed(self) -> bool:
        """Read up to the log end a fetch answered after the read started: every letter there at the start."""
        return self.end is not None and self.next is not None and self.next >= self.minimum()


def _read_topics(
    settings: Settings, topics: dict[str, int], limit: int, idle_seconds: float, max_seconds: float
) -> tuple[list[Message], list[Stop], str | None]:
    """Every message of ``topics`` from the start (at most ``limit``), where the read stopped short of a
    partition's end (empty: it reached every one), and how a complete read ended (``"log_end"``/``"idle"``).

    A partition is finished once read up to the high watermark of the first fetch answered for it (the log
    end on Kafka and on Tansu 0.6, :func:`k2.bus.broker.fetched_watermarks`), and never before the end
    ListOffsets reported (on Tansu a lower bound: the first offset of the last batch, plus one). The read
    ends as soon as every partition is finished (``"log_end"``), or, as a fallback (a partition no fetch
    reported on), once it has reached every ListOffsets end and nothing arrived for ``idle_seconds``
    (``"idle"``).
    """
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"k2-dlq-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 50,  # an empty partition's fetch answers (with its log end) within 50 ms
        }
    )
    messages: list[Message] = []
    ended_by: str | None = None
    try:
        keys = [(t, p) for t, n in topics.items() for p in range(n)]
        listed = end_offsets(consumer, keys, timeout=10.0)
        parts = {key: _Partition(listed.get(key), _start(listed.get(key))) for key in keys}
        consumer.assign([TopicPartition(t, p, start_offset(part.next)) for (t, p), part in parts.items()])
        started = last = time.monotonic()
        while len(messages) < limit and time.monotonic() - started < max_seconds:
            if all(part.reached_listed() for part in parts.values()):
                if all(part.passed() for part in parts.values()):
                    ended_by = "log_end"
                    break
                if time.monotonic() - last >= idle_seconds:
                    ended_by = "idle"
                    break
            batch = consumer.consume(num_messages=min(1000, limit - len(messages)), timeout=0.02)
            for msg in batch:
                if msg.error() is None:
                    messages.append(msg)
                    parts[(str(msg.topic()), int(msg.partition() or 0))].next = int(msg.offset() or 0) + 1
            if batch:
                last = time.monotonic()
            _note_ends(consumer, parts)
    finally:
        consumer.close()
    stopped = [] if ended_by is not None else _stops(parts)
    if stopped:
        log.warning("dead-letter read stopped before the log end", stopped=[str(s) for s in stopped])
    return messages, stopped, ended_by


def _start(listed: tuple[int, int] | None) -> int | None:
    """The next offset to read before any message: the reported log start (None when not reported)."""
    return None if listed is None else listed[0]


def _note_ends(consumer: Consumer, parts: dict[tuple[str, int], _Partition]) -> None:
    """Keep each partition's first fetched log end (a later one would chase letters written after the start)."""
    for (topic, partition), part in parts.items():
        if part.end is None and (fetched := fetched_watermarks(consumer, topic, partition)) is not None:
            part.end = fetched[1]
            if part.next is None:  # nothing reported at the start: the fetch says where the log starts
                part.next = fetched[0]


def _stops(parts: dict[tuple[str, int], _Partition]) -> list[Stop]:
    """The partitions a read left before their end (the fetched log end, else the ListOffsets end)."""
    stops = []
    for (topic, partition), part in sorted(parts.items()):
        end = part.minimum()
        start = part.listed[0] if part.listed is not None else 0
        if end > (part.next if part.next is not None else start):
            stops.append(Stop(topic, partition, part.next if part.next is not None else start, end))
    return stops


def read_dead_letters(
    settings: Settings,
    topic: str | None = None,
    limit: int = 10_000,
    idle_seconds: float = 1.5,
    max_seconds: float = 30.0,
) -> DeadLetters:
    """Dead letters from one DLQ topic (or all), oldest first per partition, at most ``limit``.

    ``.stopped`` / ``.complete`` / ``.partial_message()`` say whether the read reached every partition's
    end, ``.ended_by`` how a complete read knew (see the module docstring). ``idle_seconds`` is only the
    fallback for a partition no fetch reported on: a read normally ends at the log end.
    """
    topics = dlq_topics(settings)
    if topic is not None:
        if topic not in topics:
            raise KeyError(f"expected a DLQ topic (one of {sorted(topics)}), found {topic!r}")
        topics = {topic: topics[topic]}
    if not topics:
        return DeadLetters([])
    messages, stopped, ended_by = _read_topics(settings, topics, limit, idle_seconds, max_seconds)
    letters = [DeadLetter.from_message(msg) for msg in messages]
    letters.sort(key=lambda d: (d.dlq_topic, d.dlq_partition, d.dlq_offset))
    return DeadLetters(letters, stopped, ended_by)


def replayed_letters(
    settings: Settings, dlqs: list[str], idle_seconds: float = 1.0
) -> dict[tuple[str, int, int], dict[str, object]]:
    """(DLQ topic, partition, offset) -> replay marker (``replayed_ts``, ``to``) for the letters of ``dlqs``."""
    existing = list_topics(settings)
    topics = {replayed_topic(d): existing[replayed_topic(d)] for d in dlqs if replayed_topic(d) in existing}
    if not topics:
        return {}
    found: dict[tuple[str, int, int], dict[str, object]] = {}
    messages, stopped, _ = _read_topics(settings, topics, 10_000_000, idle_seconds, 120.0)
    if stopped:  # a missed marker would let a replay re-publish a letter it already moved
        raise RuntimeError(
            "expected every replay marker read, found the read partial: " + "; ".join(map(str, stopped))
        )
    for msg in messages:
        partition, offset = (int(x) for x in (msg.key() or b"-1:-1").decode().split(":"))
        found[(str(msg.topic()).removesuffix(REPLAYED_SUFFIX), partition, offset)] = json.loads(
            msg.value() or b"{}"
        )
    return found


@dataclass
class ReplayReport:
    """What one replay did: letters re-published, letters left in the DLQ (with why), letters skipped."""

    replayed: list[DeadLetter] = field(default_factory=list)
    still_invalid: list[tuple[DeadLetter, str, str]] = field(default_factory=list)  # (letter, reason, detail)
    already_replayed: int = 0

    def reasons(self) -> dict[str, int]:
        """Why the letters left in the DLQ still fail, counted by reason."""
        return dict(Counter(reason for _, reason, _ in self.still_invalid))


def check_letters(settings: Settings, letters: list[DeadLetter]) -> list[tuple[str, str] | None]:
    """For each letter: None if it would land now, else ``(reason, detail)`` from the landing's own checks
    (decode, k2.model.validate against its topic, the id window of the high-water mark)."""
    verdicts: list[tuple[str, str] | None] = [None] * len(letters)
    by_topic: dict[str, list[int]] = {}
    for i, letter in enumerate(letters):
        by_topic.setdefault(letter.source_topic, []).append(i)
    registry = registry_client(settings.registry_url)
    tables = None
    for topic, indices in by_topic.items():
        try:
            short, record, id_column = route(topic)
            asset_class, _, exchange = parse_topic(topic)
        except (KeyError, ValueError):
            for i in indices:
                verdicts[i] = ("unknown_topic", f"expected a market trades/quotes topic, found {topic!r}")
            continue
        decoded = AvroBatchDecoder(registry, record).decode([letters[i].value for i in indices])
        for position, error in decoded.failures:
            verdicts[indices[position]] = (error.reason, error.detail)
        positions = np.asarray(decoded.indices, dtype=np.int64)
        rows = decoded.table
        max_future = int(settings.landing_max_future_seconds * 1_000_000)
        for row, reason, detail in validate(record, rows, now_micros(), max_future, exchange, asset_class):
            verdicts[indices[int(positions[row])]] = (reason, detail)
        passed = np.array([verdicts[indices[int(p)]] is None for p in positions], dtype=bool)
        if passed.any():
            tables = tables or ensure_tables(load_catalog(settings), settings)
            table = tables[short]
            subset = rows.filter(passed) if not passed.all() else rows
            kept = positions[passed]
            windowed = sequential_exchanges(settings, short)
            for row, reason, detail in screen_ids(
                subset, id_column, table, HighWaterMarks(1000), settings.landing_max_id_jump, windowed
            ):
                verdicts[indices[int(kept[row])]] = (reason, detail)
    return verdicts


def replay_dead_letters(settings: Settings, letters: list[DeadLetter]) -> ReplayReport:
    """Move the letters that now pass the landing's checks back to their source topics (see module docstring)."""
    report = ReplayReport()
    if not letters:
        return report
    done = replayed_letters(settings, sorted({d.dlq_topic for d in letters}))
    pending = [d for d in letters if (d.dlq_topic, d.dlq_partition, d.dlq_offset) not in done]
    report.already_replayed = len(letters) - len(pending)
    # Each letter once.
    pending = list({(d.dlq_topic, d.dlq_partition, d.dlq_offset): d for d in pending}.values())
    for letter, verdict in zip(pending, check_letters(settings, pending), strict=True):
        if verdict is None:
            report.replayed.append(letter)
        else:
            report.still_invalid.append((letter, *verdict))
    if not report.replayed:
        return report
    ensure_topics(settings, sorted({replayed_topic(d.dlq_topic) for d in report.replayed}), partitions=1)
    try:
        with MarketDataProducer(settings, create_topics=False) as producer:
            _publish(producer, report.replayed)
    except KafkaException as exc:  # pragma: no cover - surfaced as a DeliveryError normally
        raise RuntimeError(f"DLQ replay failed: {exc}") from exc
    return report


def _publish(producer: MarketDataProducer, letters: list[DeadLetter]) -> None:
    for letter in letters:
        origin = f"{letter.dlq_topic}:{letter.dlq_partition}:{letter.dlq_offset}".encode()
        producer.produce_raw(
            letter.source_topic,
            letter.key,
            letter.value,
            [*letter.original_headers, ("k2.replayed_from", origin)],
        )
    producer.flush()  # the letters first: a crash before the markers re-sends them, and dedup drops them
    replayed_ts = now_micros()
    for letter in letters:
        marker = json.dumps({"replayed_ts": replayed_ts, "to": letter.source_topic}).encode()
        producer.produce_raw(
            replayed_topic(letter.dlq_topic), f"{letter.dlq_partition}:{letter.dlq_offset}".encode(), marker
        )
    producer.flush()
