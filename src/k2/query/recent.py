"""The Kafka half of the hybrid query: messages not yet landed in Iceberg, read and checked like the landing does.

Reads every partition of the table's topics from the offsets stored in the snapshot the Iceberg half
reads (every message below those offsets is in that snapshot, dead-lettered or deduplicated), with a
fresh consumer: partitions assigned explicitly, no group membership, nothing committed.

What the landing would refuse is never returned: values are decoded with the landing's decoder
(:class:`k2.bus.serde.AvroBatchDecoder`; undecodable messages are skipped), checked with the landing's
rules (:func:`k2.model.validate.validate`, per topic, with the exchange and asset class the topic names and
``landing_max_future_seconds``; invalid rows are skipped and counted) and de-duplicated in batch by natural
key (:func:`k2.model.dedup.first_of_each_key`; the client then drops keys already in the snapshot).

Each read builds its own consumer (no shared Kafka state between concurrent reads); the Avro decoder (a
registry client and a DuckDB connection, ~0.15 s to build) is kept between reads (:func:`pooled_decoder`).

A reset log (a memory broker restarted, a topic recreated) is detected like the landing does: each
partition is read from the *last landed* message (offset and CRC stored by the landing under
``k2.kafka.last``); when that message is not there, or differs, the partition is read from the log start
(the client's natural-key anti-join drops what is already in Iceberg) and ``resets`` names it.
Hazard: Tansu answers a fetch past the log end with nothing, so "not there" means "not delivered within
``VERIFY_SECONDS``": a broker slower than that makes a partition be re-read from its start (correct, slower).

Stopping never trusts the ListOffsets answer (Tansu reports the first offset of the last batch + 1): the
high watermark asked at the start is only a *minimum* to read up to. A partition is then finished when it
has been read up to the high watermark of a fetch response answered after the start (the log end, on Kafka
and on Tansu 0.6: measured, and pinned by a test), or, as a fallback, when no message of it arrived for
``IDLE_SECONDS``; ``ended_by`` says which. So a live topic that never goes quiet is read up to (a little
past) its end at the start, not followed until the time bound. A read that stops early says so:
``truncated`` with ``reason``
``"max_rows"`` (``query_recent_max_rows`` matching messages read) or ``"time_bound"``
(``query_recent_timeout_seconds`` passed while the log still had messages to read), and ``stopped_at``
({topic: {partition: next offset not read}}).

When nothing accepts a TCP connection at any bootstrap address, :class:`RecentUnavailableError` is raised
at once (no Kafka client is created, so no reconnect noise and no wait).

Example (needs a broker and registry)::

    recent = read_recent(settings, "trades", stored_offsets, symbol="BTCUSDT")
    recent.table.num_rows, recent.truncated, recent.reason
"""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from k2.bus.broker import end_offsets, fetched_watermarks, start_offset
from k2.bus.serde import AvroBatchDecoder, registry_client
from k2.bus.topics import parse_topic
from k2.config import Settings
from k2.lake.summary import OffsetMap
from k2.model import BOOK_DELTA, QUOTE, TRADE, RecordType
from k2.model.dedup import first_of_each_key
from k2.model.validate import validate
from k2.model.values import now_micros

IDLE_SECONDS = 0.15
POLL_SECONDS = 0.01  # one consume() call waits at most this (it returns early only with 10,000 messages)
VERIFY_SECONDS = 0.5
PROBE_SECONDS = 0.5
# Written by the landing consumer in every commit: {topic: {partition: "offset:crc32"}} of the last message landed.
LAST_KEY = "k2.kafka.last"
RECORDS: dict[str, tuple[RecordType, str]] = {
    "trades": (TRADE, "trade_id"),
    "quotes": (QUOTE, "update_id"),
    "book_deltas": (BOOK_DELTA, "last_update_id"),
}
# Natural-key columns after (exchange, symbol, id): one depth event changes several levels.
_MORE_KEY: dict[str, tuple[str, ...]] = {"book_deltas": ("side", "price")}


# Decoders kept between reads, per (registry URL, record): building one costs a registry client (an SSL
# context) and a DuckDB connection with the Avro extension, ~0.1-0.2 s of every hybrid read (measured).
_MAX_IDLE_DECODERS = 4
_decoders: dict[tuple[str, str], list[AvroBatchDecoder]] = {}
_decoders_lock = threading.Lock()
_decoders_built: dict[tuple[str, str], int] = {}


class RecentUnavailableError(RuntimeError):
    """Kafka or the schema registry could not be read for the hybrid query."""


@dataclass
class RecentRows:
    """Rows read from Kafka (canonical Arrow schema, validated, in-batch duplicates removed) and what it took."""

    table: pa.Table
    messages: int
    truncated: bool
    seconds: float
    reason: str | None = None
    stopped_at: OffsetMap = field(default_factory=dict)
    invalid: int = 0
    undecodable: int = 0
    resets: list[str] = field(default_factory=list)
    # How a complete read knew it had everything: "log_end" (every partition read up to the log end a fetch
    # reported after the start), "idle" (some partition only by IDLE_SECONDS without a message); else None.
    ended_by: str | None = None


def dedupe_keys(table: pa.Table, key: tuple[str, ...]) -> pa.Table:
    """Keep the first row of each natural key (order preserved): :func:`k2.model.dedup.first_of_each_key`.

    >>> t = pa.table({"e": ["a", "a", "a", "a", "b"], "id": [3, 1, 1, 3, 3], "v": [0, 1, 2, 3, 4]})
    >>> dedupe_keys(t, ("e", "id"))["v"].to_pylist()
    [0, 1, 4]
    """
    return first_of_each_key(table, key)


def broker_unreachable(bootstrap: str, timeout: float = PROBE_SECONDS) -> str | None:
    """None when some bootstrap address accepts a TCP connection, else why none did (no Kafka client involved).

    >>> broker_unreachable("127.0.0.1:1", 0.2) is not None
    True
    """
    problems = []
    for address in (a.strip() for a in bootstrap.split(",") if a.strip()):
        hostport = address.split("://", 1)[-1]
        host, _, port = hostport.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout=timeout):
                return None
        except (OSError, ValueError) as exc:
            problems.append(f"{address}: {exc}")
    return "; ".join(problems) or f"no bootstrap address in {bootstrap!r}"


def last_landed(summary: Mapping[str, str] | None) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> (offset, crc32) of the last message the landing committed (``k2.kafka.last``).

    >>> last_landed({"k2.kafka.last": '{"t": {"0": "41:123"}}'})
    {('t', 0): (41, 123)}
    """
    import json

    raw = (summary or {}).get(LAST_KEY)
    if not raw:
        return {}
    out: dict[tuple[str, int], tuple[int, int]] = {}
    for topic, parts in json.loads(raw).items():
        for partition, value in parts.items():
            offset, _, crc = str(value).partition(":")
            out[(topic, int(partition))] = (int(offset), int(crc or 0))
    return out


@contextmanager
def pooled_decoder(registry_url: str, record: RecordType) -> Iterator[AvroBatchDecoder]:
    """A decoder for ``record`` against ``registry_url``, used by one reader at a time and kept for the next.

    Each caller has the decoder to itself (a decoder holds one DuckDB connection); at most
    ``_MAX_IDLE_DECODERS`` idle ones are kept per key, so concurrent reads build their own and the pool stays
    small. Hazard: a decoder caches writer schemas by id (as the landing's long-lived decoder does); a
    registry replaced at the same URL by one that reuses ids for other schemas would need
    :func:`clear_decoders` (or a restart), exactly as the landing would.

    Example (needs a registry)::

        with pooled_decoder(settings.registry_url, TRADE) as decoder:
            decoder.decode(values)
    """
    key = (registry_url, record.name)
    with _decoders_lock:
        idle = _decoders.setdefault(key, [])
        decoder = idle.pop() if idle else None
    if decoder is None:
        decoder = AvroBatchDecoder(registry_client(registry_url), record)
        with _decoders_lock:
            _decoders_built[key] = _decoders_built.get(key, 0) + 1
    try:
        yield decoder
    finally:
        with _decoders_lock:
            if len(idle) < _MAX_IDLE_DECODERS:
                idle.append(decoder)


def decoders_built(registry_url: str, record: RecordType) -> int:
    """How many decoders :func:`pooled_decoder` has built for (``registry_url``, ``record``) in this process.

    >>> decoders_built("http://127.0.0.1:1", TRADE)
    0
    """
    with _decoders_lock:
        return _decoders_built.get((registry_url, record.name), 0)


def clear_decoders() -> None:
    """Forget the idle decoders (the next read builds new ones, with empty schema caches)."""
    with _decoders_lock:
        _decoders.clear()


def _topics(
    consumer: Consumer, data_type: str, exchange: str | None, timeout: float
) -> list[tuple[str, int]]:
    pattern = re.compile(
        rf"^market\.[a-z]+\.{data_type}\.{re.escape(exchange) if exchange else '[a-z0-9_-]+'}$"
    )
    metadata = consumer.list_topics(timeout=timeout)
    found: list[tuple[str, int]] = []
    for name, topic in metadata.topics.items():
        if pattern.match(name) and topic.error is None:
            found.extend((name, p) for p in topic.partitions)
    return sorted(found)


@dataclass
class _Part:
    """One partition's reading state."""

    next: int  # next offset not read (the stored offset until a message is read)
    high: int  # the reported high watermark: a lower bound of the log end
    check: tuple[int, int | None] | None  # the last landed message (offset, crc) still to be seen
    skip: bool = False  # just re-positioned: ignore what is left of the current batch
    low: int = -1  # the reported low watermark (-1: not reported)
    fetched: int = -1  # the high watermark of the last fetch answered (-1: none yet)
    last: float | None = None  # monotonic time of the last message read from this partition

    def passed(self) -> bool:
        """Read up to the log end a fetch answered after the read started: all that was there at the start.

        ``fetched`` is the high watermark of the last fetch response for this partition (librdkafka's
        cache, filled only by this consumer's fetches, all sent after the start's watermarks were asked).
        A fetch response's high watermark is the log end on Kafka and on Tansu 0.6 (measured, and pinned by
        ``tests/query/test_recent_live.py``; only Tansu's ListOffsets answer is the first offset of the
        last batch + 1, which is why ``high`` is only a minimum).
        """
        return self.check is None and self.fetched >= 0 and self.next >= max(self.fetched, self.high)


class _Reader:
    """The consume loop of :func:`read_recent` (bounded by rows and time)."""

    def __init__(
        self,
        consumer: Consumer,
        settings: Settings,
        parts: dict[tuple[str, int], _Part],
        keys: set[bytes] | None,
        deadline: float,
    ) -> None:
        self.consumer, self.parts, self.keys, self.deadline = consumer, parts, keys, deadline
        self.max_rows = settings.query_recent_max_rows
        self.values: list[bytes | None] = []
        self.topics: list[str] = []
        self.messages = 0
        self.reason: str | None = None
        self.resets: list[str] = []
        self.batch_time = time.monotonic()  # when the batch being taken was returned
        self.ended_by: str | None = None

    def run(self) -> None:
        assigned = time.monotonic()
        while True:
            now = time.monotonic()
            if now - assigned >= VERIFY_SECONDS:
                for key, part in self.parts.items():
                    if part.check is not None:
                        self._reset(key, part)
                        part.skip = False  # between batches: the next batch already reads the new position
            pending = any(p.check is not None or p.next < p.high for p in self.parts.values())
            open_parts = [p for p in self.parts.values() if not self._done(p, now, assigned)]
            if not pending and not open_parts:
                self.ended_by = "log_end" if all(p.passed() for p in self.parts.values()) else "idle"
                return
            if now >= self.deadline:
                # Partial when the log still had messages for us (below the minimum, or still arriving), or
                # when a partition's end is unknown: no watermark answered and no fetch yet (a loaded broker).
                if pending or any(p.last is not None or (p.high < 0 and p.fetched < 0) for p in open_parts):
                    self.reason = "time_bound"
                return
            batch = self.consumer.consume(
                num_messages=10_000, timeout=min(POLL_SECONDS, max(0.001, self.deadline - now))
            )
            self.batch_time = time.monotonic()
            for msg in batch:
                if not self._take(msg):
                    self.reason = "max_rows"
                    return
            for part in self.parts.values():
                part.skip = False
            self._note_ends()

    @staticmethod
    def _done(part: _Part, now: float, assigned: float) -> bool:
        """At or past the minimum, and either past the start's log end or quiet for ``IDLE_SECONDS``."""
        if part.check is not None or part.next < part.high:
            return False
        return part.passed() or now - (assigned if part.last is None else part.last) >= IDLE_SECONDS

    def _note_ends(self) -> None:
        """Take the high watermarks of the last fetches answered (librdkafka's cache: no request)."""
        for (topic, partition), part in self.parts.items():
            marks = fetched_watermarks(self.consumer, topic, partition)
            if marks is not None:
                part.fetched = marks[1]

    def _take(self, msg: Message) -> bool:
        """Account for one message; False when it is a matching row beyond ``query_recent_max_rows``."""
        if msg.error() is not None:
            return True
        key = (str(msg.topic()), int(msg.partition() or 0))
        part = self.parts.get(key)
        offset = msg.offset()
        if part is None or part.skip or offset is None or offset < part.next - (1 if part.check else 0):
            return True
        part.last = self.batch_time
        value = msg.value()
        if part.check is not None:
            expected, crc = part.check
            part.check = None
            if offset == expected and (crc is None or zlib.crc32(value or b"") == crc):
                return True  # the log still holds what was landed: continue after it
            self._reset(key, part)
            return True
        self.messages += 1
        if self.keys is not None and msg.key() is not None and msg.key() not in self.keys:
            part.next = offset + 1
            return True
        if len(self.values) >= self.max_rows:
            return False
        self.values.append(value)
        self.topics.append(key[0])
        part.next = offset + 1
        return True

    def _reset(self, key: tuple[str, int], part: _Part) -> None:
        part.check, part.next, part.skip = None, 0, True
        self.resets.append(f"{key[0]}[{key[1]}]")
        # seek() to a logical offset does not restart a partition Tansu answered with empty fetches: re-assign
        # every partition at its current position instead (this also drops what was fetched past it).
        self.consumer.assign([TopicPartition(t, p, _position(s)) for (t, p), s in self.parts.items()])


def _position(part: _Part) -> int:
    if part.check is not None:
        return part.check[0]
    return part.next if part.next > 0 else start_offset(part.low)


def read_recent(
    settings: Settings,
    short_name: str,
    stored: OffsetMap,
    symbol: str | Sequence[str] | None,
    exchange: str | None = None,
    *,
    last: Mapping[tuple[str, int], tuple[int, int]] | None = None,
) -> RecentRows:
    """Valid messages of ``symbol`` (one or several; None: all) after the ``stored`` offsets, de-duplicated in batch.

    ``last`` (from :func:`last_landed`) lets each partition be checked for a reset log first.

    Example (needs a broker and registry)::

        read_recent(settings, "trades", {"market.crypto.trades.binance": {"0": 19904}}, "BTCUSDT").table
    """
    record, id_column = RECORDS[short_name]
    symbols = None if symbol is None else [symbol] if isinstance(symbol, str) else list(symbol)
    started = time.monotonic()
    deadline = started + settings.query_recent_timeout_seconds
    down = broker_unreachable(
        settings.bootstrap_servers, min(PROBE_SECONDS, settings.query_recent_timeout_seconds)
    )
    if down is not None:
        raise RecentUnavailableError(
            f"expected Kafka at {settings.bootstrap_servers} for the hybrid query, found no broker answering ({down})"
        )
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"k2-query-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 50,
            "socket.connection.setup.timeout.ms": max(
                1000, int(settings.query_recent_timeout_seconds * 1000)
            ),
        }
    )
    try:
        try:
            partitions = _topics(
                # At least PROBE_SECONDS, as the TCP probe: a bound that passed before the broker's
                # metadata could arrive (0.1 s was too short on a loaded machine) is a time-bound read,
                # not an unavailable Kafka.
                consumer,
                record.data_type.value,
                exchange,
                max(PROBE_SECONDS, deadline - time.monotonic()),
            )
        except KafkaException as exc:
            raise RecentUnavailableError(
                f"expected Kafka at {settings.bootstrap_servers} for the hybrid query, found {exc}"
            ) from None
        if not partitions:
            return RecentRows(record.arrow_schema().empty_table(), 0, False, time.monotonic() - started)
        parts = _positions(consumer, partitions, stored, last or {}, deadline)
        consumer.assign([TopicPartition(t, p, _position(s)) for (t, p), s in parts.items()])
        reader = _Reader(
            consumer, settings, parts, None if symbols is None else {s.encode() for s in symbols}, deadline
        )
        reader.run()
    finally:
        consumer.close()
    key = (id_column, *_MORE_KEY.get(short_name, ()))
    result = _decode_and_check(settings, record, key, reader.values, reader.topics, symbols, exchange)
    result.messages, result.seconds, result.resets, result.ended_by = (
        reader.messages,
        time.monotonic() - started,
        reader.resets,
        reader.ended_by,
    )
    if reader.reason is not None:
        result.truncated, result.reason = True, reader.reason
        for (t, p), part in parts.items():
            result.stopped_at.setdefault(t, {})[str(p)] = part.next
    return result


def _positions(
    consumer: Consumer,
    partitions: list[tuple[str, int]],
    stored: OffsetMap,
    last: Mapping[tuple[str, int], tuple[int, int]],
    deadline: float,
) -> dict[tuple[str, int], _Part]:
    """Where each partition starts, the message that proves the log was not reset, and the minimum to read."""
    parts: dict[tuple[str, int], _Part] = {}
    # A lower bound only: Tansu's high watermark can be below the true end of the log.
    ends = end_offsets(consumer, partitions, deadline=deadline)
    for topic, partition in partitions:
        start = int(stored.get(topic, {}).get(str(partition), 0))
        check: tuple[int, int | None] | None = None
        if start > 0:
            landed = last.get((topic, partition))
            check = (
                (landed[0], landed[1]) if landed is not None and landed[0] == start - 1 else (start - 1, None)
            )
        low, high = ends.get((topic, partition), (-1, -1))  # -1: the broker did not answer
        parts[(topic, partition)] = _Part(next=start, high=int(high), check=check, low=int(low))
    return parts


def _decode_and_check(
    settings: Settings,
    record: RecordType,
    key: tuple[str, ...],
    values: list[bytes | None],
    topics: list[str],
    symbols: list[str] | None,
    exchange: str | None,
) -> RecentRows:
    """Decode (landing's decoder), validate (landing's rules, per topic), filter and de-duplicate in batch."""
    empty = RecentRows(record.arrow_schema().empty_table(), 0, False, 0.0)
    if not values:
        return empty
    try:
        with pooled_decoder(settings.registry_url, record) as decoder:
            decoded = decoder.decode(values)
    except Exception as exc:  # the registry being unreachable surfaces here
        raise RecentUnavailableError(
            f"expected the schema registry at {settings.registry_url} for the hybrid query, found {exc}"
        ) from None
    positions = np.asarray(decoded.indices, dtype=np.int64)
    order = np.argsort(positions, kind="stable")  # log order, so "first occurrence" means first in the log
    table, positions = decoded.table.take(pa.array(order)), positions[order]
    keep = np.ones(table.num_rows, dtype=bool)
    row_topics = np.array(topics, dtype=object)[positions] if len(positions) else np.array([], dtype=object)
    for topic in sorted(set(row_topics.tolist())):
        asset_class, _, topic_exchange = parse_topic(topic)
        rows = np.flatnonzero(row_topics == topic)
        subset = table if len(rows) == table.num_rows else table.take(pa.array(rows))
        problems = validate(
            record,
            subset,
            now_us=now_micros(),
            max_future_us=int(settings.landing_max_future_seconds * 1_000_000),
            expected_exchange=topic_exchange,
            expected_asset_class=asset_class,
        )
        for row, _, _ in problems:
            keep[rows[row]] = False
    invalid = int((~keep).sum())
    if invalid:
        table = table.filter(pa.array(keep))
    if table.num_rows and symbols is not None:
        mask = pc.is_in(table["symbol"], value_set=pa.array(symbols, pa.string()))
        if exchange is not None:
            mask = pc.and_(mask, pc.equal(table["exchange"], exchange))
        table = table.filter(mask)
    elif table.num_rows and exchange is not None:
        table = table.filter(pc.equal(table["exchange"], exchange))
    table = first_of_each_key(table, ("exchange", "symbol", *key))
    return RecentRows(table, 0, False, 0.0, invalid=invalid, undecodable=len(decoded.failures))
