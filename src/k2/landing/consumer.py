"""The landing consumer: Kafka -> Avro decode -> validate -> dedup -> Iceberg, exactly once.

Protocol (see also :mod:`k2.lake.summary`):

1. Messages are buffered per table until ``landing_commit_rows`` rows, ``landing_commit_interval_seconds``
   (counted from the previous flush's start; see ``Buffer.flush_due`` in :mod:`k2.landing.buffer`) or ``landing_max_buffered_bytes`` is reached. While a batch is being committed the consumer's
   partitions are paused, so a slow Iceberg never makes the consumer buffer without limit. The byte bound
   counts each message's value plus ``ROW_MEMORY`` (its Message object, decoded row and share of the
   Parquet write), so it bounds memory: peak RSS <= RSS after the first commit + the bound + 2 x
   ``consumer_fetch_max_bytes`` (librdkafka's queue and a fetch in flight) + 64 MiB (tests/landing/test_memory.py).
2. Undecodable and invalid messages go to ``<topic>.dlq`` (original bytes, key, headers, source offset,
   reason) and the DLQ producer is flushed *before* the Iceberg commit, so nothing is committed past a
   message that was neither landed nor dead-lettered.
3. The rows and the offsets they cover are written in **one** Iceberg commit (snapshot summary). Before
   committing, the consumer re-reads the table's stored offsets and checks that, for every partition in
   the batch, the table still holds the offset this consumer started from; a partition another writer
   has moved (a zombie after a rebalance) is dropped from the batch and re-read. A concurrent commit
   (``CommitFailedException``) is retried after a refresh, recomputing the summary from the new state.
4. Kafka group offsets are committed after the Iceberg commit (informational: resumption uses the table).
5. On every assignment the consumer resumes from the offsets stored in the table and checks that the
   last landed message is still in the log with the same checksum. If not (broker log reset, topic
   recreated) it follows ``landing_on_offset_reset``: ``restart`` from the log start (dedup drops what
   is already landed) or ``fail`` with :class:`OffsetResetError`. It never silently skips data.

This module is the orchestrator (the poll loop, flushing with pause/resume, the zombie check and the commit
retry); each step lives in a room of its own:

- :mod:`k2.landing.routes`: which table, record type and id column a topic lands into;
- :mod:`k2.landing.kafka_config`: librdkafka settings of the group member;
- :mod:`k2.landing.buffer`: the buffered messages per table and the commit policy (rows, bytes, interval);
- :mod:`k2.landing.assignment`: where an assigned partition resumes, the log check, the reset policy;
- :mod:`k2.landing.batch`: one table's batch: redeliveries dropped, decoded, validated, its coverage;
- :mod:`k2.landing.deadletter`: rejects to ``<topic>.dlq``;
- :mod:`k2.landing.gapcache`: the open gaps of the gap ledger (:mod:`k2.landing.ledger`);
- :mod:`k2.landing.commit`: the snapshot summary of a commit and the conflict-failing table view;
- :mod:`k2.landing.gauges`: lag and freshness gauges; :mod:`k2.landing.memory`: releasing freed memory.

Example (needs a broker, registry and catalog)::

    consumer = LandingConsumer(load_settings())
    consumer.run(idle_exit_seconds=5)
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from k2.bus.serde import AvroBatchDecoder, registry_client
from k2.bus.topics import ensure_topics
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.lake.summary import (
    OffsetMap,
    offsets_from_summary,
)
from k2.lake.writer import append
from k2.landing.assignment import (
    LAST_KEY,
    offset_reset,
    stored_positions,
    stored_value,
    verify_log,
)
from k2.landing.batch import Batch, Coverage, Rows, coverage_of, decode, fresh_batch, lineage, validate_rows
from k2.landing.buffer import FETCH_MESSAGES, ROW_MEMORY, Buffer
from k2.landing.commit import QUALITY_KEY, commit_properties, commit_view
from k2.landing.currency import ReferenceCurrencies
from k2.landing.deadletter import DeadLetters
from k2.landing.dedup import DedupResult, HighWaterMarks, deduplicate, sequential_exchanges
from k2.landing.errors import LandingError, OffsetResetError
from k2.landing.gapcache import OpenGaps
from k2.landing.gauges import LandingGauges
from k2.landing.gcpause import CollectorHold, collector_paused
from k2.landing.kafka_config import fetch_config, group_config
from k2.landing.memory import release_memory
from k2.landing.routes import DEDUP, ROUTES, TABLE_ROUTES, TOPIC_REGEX, route
from k2.model import RecordType
from k2.pacing import Backoff
from k2.telemetry.metrics import metric

log = structlog.get_logger("k2.landing")

# The consumer's public names, and those of its rooms that callers (k2.ops.drain, tests, benchmarks) import
# from here since before the rooms existed.
__all__ = [
    "LAST_KEY",
    "QUALITY_KEY",
    "TOPIC_REGEX",
    "LandingConsumer",
    "LandingError",
    "LandingStats",
    "OffsetResetError",
    "commit_view",
    "fetch_config",
    "group_config",
    "release_memory",
    "route",
    "run_landing",
    "stored_value",
]


@dataclass
class LandingStats:
    """Counters of one landing consumer's run."""

    consumed: int = 0
    landed: int = 0
    duplicates: int = 0
    late: int = 0
    dead_lettered: int = 0
    gaps: int = 0
    commits: int = 0
    commit_conflicts: int = 0
    resets: int = 0
    dropped_stale: int = 0
    redelivered: int = 0
    peak_buffered_bytes: int = 0
    largest_fetch_bytes: int = 0
    per_table: dict[str, int] = field(default_factory=lambda: defaultdict(int))


# An unbound accessor: map(_ERROR, messages) runs at C speed, unlike a generator of method calls.
_ERROR = Message.error
# How long an idle-exit landing holding no partition waits for one before counting idle time: a group join
# takes session.timeout.ms / 2 on Tansu, and longer on a loaded machine or while another member leaves.
_ASSIGNMENT_WAIT = 30.0
_GAUGE_INTERVAL = 1.0
# Kept under their old names: tests and benchmarks import them from here.
_FETCH_MESSAGES = FETCH_MESSAGES
_ROW_MEMORY = ROW_MEMORY


class LandingConsumer:
    """One landing consumer process (several may run in one consumer group).

    Example (needs a broker, registry and catalog)::

        stats = LandingConsumer(settings, topics=["market.crypto.trades.binance"]).run(idle_exit_seconds=5)
    """

    def __init__(
        self,
        settings: Settings,
        topics: list[str] | None = None,
        name: str | None = None,
        on_commit: Callable[[str, int], None] | None = None,
    ) -> None:
        self.settings = settings
        self.name = name or f"landing-{uuid.uuid4().hex[:8]}"
        self.catalog = load_catalog(settings)
        self.tables: dict[str, Table] = ensure_tables(self.catalog, settings)
        self._currencies = ReferenceCurrencies(self.tables["instruments"])
        self.registry = registry_client(settings.registry_url)
        self.decoders = {
            short: AvroBatchDecoder(self.registry, record) for short, record, _ in ROUTES.values()
        }
        self.marks = {
            short: HighWaterMarks(settings.landing_hwm_cache_size) for short, _, _ in ROUTES.values()
        }
        self.sequential = {short: sequential_exchanges(settings, short) for short, _, _ in ROUTES.values()}
        self.on_commit = on_commit
        # Called just before each Iceberg append (table, rows): tests use it to make Iceberg slow.
        self.before_commit: Callable[[str, int], None] | None = None
        self.stats = LandingStats()
        self._topics = topics
        self._buffer = Buffer(settings)  # messages per table and the commit policy (k2.landing.buffer)
        self._topic_tables: dict[str, str] = {}
        self._last_gauges = 0.0
        self._assigned_at = 0.0
        self._unassigned_since = 0.0  # the last revoke or empty assignment (monotonic)
        self._subscribed = False
        # The table's stored next offset per partition as this consumer last saw it (zombie check).
        self._expected: dict[tuple[str, int], int | None] = {}
        # Next offset to land per partition (OFFSET_BEGINNING: from the log start). After resume() K2
        # seeks here explicitly, and messages below it (a redelivery) are dropped before landing.
        self._next: dict[tuple[str, int], int] = {}
        self._assigned: list[TopicPartition] = []
        self._dead_letters = DeadLetters(settings)  # <topic>.dlq (k2.landing.deadletter)
        # The gap ledger's open gaps of the pairs seen (k2.landing.gapcache).
        self._open_gaps = OpenGaps(self.tables, self.name)
        self._stop = threading.Event()
        self._cluster_id = ""
        self.consumer = Consumer(group_config(settings, self.name))
        self._m_rows = metric("k2_landing_rows_total")
        self._m_commits = metric("k2_landing_commits_total")
        self._m_batch = metric("k2_landing_batch_rows")
        self._m_latency = metric("k2_landing_commit_seconds")
        self._m_dups = metric("k2_landing_duplicates_total")
        self._m_late = metric("k2_landing_out_of_order_total")
        self._m_paused = metric("k2_landing_paused_partitions").unlabelled()
        self._m_buffered = metric("k2_landing_buffered_bytes").unlabelled()
        self._gauges = LandingGauges()  # lag and freshness (k2.landing.gauges)
        # Produced (ingest_ts) -> committed latencies of the last 5 minutes' commits, per table (k2 status).
        self.freshness = self._gauges.freshness

    # -- assignment ---------------------------------------------------------------------------------
    def _table_for_topic(self, topic: str) -> tuple[str, RecordType, str]:
        return route(topic)

    def _short_for_topic(self, topic: str) -> str:
        short = self._topic_tables.get(topic)
        if short is None:
            short = self._topic_tables[topic] = self._table_for_topic(topic)[0]
        return short

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for marks in self.marks.values():
            marks.clear()
        self._open_gaps.clear()  # another consumer may have opened or closed gaps meanwhile
        checks = stored_positions(self.tables, partitions, self._expected)
        if checks:
            verdict = verify_log(
                self.settings, [(tp.topic, tp.partition, off, crc) for tp, off, crc in checks]
            )
            for tp, _, _ in checks:
                if not verdict[(tp.topic, tp.partition)]:
                    self._handle_reset(tp.topic, tp.partition, "last landed message missing or different")
                    tp.offset = OFFSET_BEGINNING
        for tp in partitions:
            self._next[(tp.topic, tp.partition)] = tp.offset
        self._assigned = list(partitions)
        self._assigned_at = time.monotonic()
        if not partitions:
            self._unassigned_since = self._assigned_at
        self._buffer.last_flush_started = float("-inf")
        consumer.assign(partitions)
        log.info(
            "assigned",
            consumer=self.name,
            partitions=[(tp.topic, tp.partition, tp.offset) for tp in partitions],
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Land what we hold before giving the partitions away, so the next owner starts after it.
        try:
            self.flush()
        except Exception:
            log.exception("flush on revoke failed; buffered messages will be re-read by the next owner")
            self._clear_buffers()
        consumer.unassign()
        self._assigned = []
        self._unassigned_since = time.monotonic()

    def _handle_reset(self, topic: str, partition: int, why: str) -> None:
        self.stats.resets += 1
        offset_reset(self.settings, topic, partition, why)

    # -- main loop ------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask :meth:`run` to flush and return."""
        self._stop.set()

    def subscribe(self) -> None:
        """Join the consumer group (the given topics, or every market trades/quotes topic).

        Example (needs a broker)::

            consumer.subscribe()
            while consumer.stats.consumed < 1000:
                consumer.poll_once()
        """
        if self._topics:
            ensure_topics(self.settings, self._topics)
            self.consumer.subscribe(self._topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        else:
            self.consumer.subscribe([TOPIC_REGEX], on_assign=self._on_assign, on_revoke=self._on_revoke)
        self._subscribed = True
        log.info("subscribed", consumer=self.name, topics=self._topics or TOPIC_REGEX)

    def run(self, idle_exit_seconds: float | None = None, max_seconds: float | None = None) -> LandingStats:
        """Consume and land until :meth:`stop`, SIGTERM, ``idle_exit_seconds`` without messages, or ``max_seconds``."""
        if not self._subscribed:
            self.subscribe()
        started = last_message = time.monotonic()
        hold = (
            CollectorHold()
        )  # the cyclic collector stays off while a batch is buffered (k2.landing.gcpause)
        try:
            while not self._stop.is_set():
                if not self._buffer.buffered_rows:
                    hold.between_batches()
                now = time.monotonic()
                if max_seconds is not None and now - started > max_seconds:
                    break
                if (
                    idle_exit_seconds is not None
                    and self._idle_for(now, last_message, started) > idle_exit_seconds
                ):
                    break  # what is buffered is flushed below
                consumed, flushed = self.poll_once()
                if consumed or flushed:
                    last_message = time.monotonic()  # time spent committing is not idle time
                last_message = max(last_message, self._assigned_at)  # nor is joining and verifying the log
            self.flush()
        finally:
            hold.release()
            self.close()
        return self.stats

    def _idle_for(self, now: float, last_message: float, started: float) -> float:
        """Seconds this landing has been idle; time holding no partition counts only past a bound.

        A group join on a loaded broker can take longer than a short idle exit, and a regex subscription
        may first be answered with no partition (the topics' metadata not seen yet) and the real
        assignment only after the next metadata refresh. A landing that gave up meanwhile would leave the
        backlog unlanded and return as if it were done.
        """
        if not self._assigned:
            return now - max(started, last_message, self._unassigned_since) - _ASSIGNMENT_WAIT
        return now - last_message

    def poll_once(self, timeout: float = 0.2) -> tuple[int, bool]:
        """Consume one batch into the buffer, then flush if the commit policy says so.

        Returns (messages consumed, whether a flush happened). The per-message work here is kept to a
        few C calls: decoding, validation and dedup are vectorised per batch in :meth:`flush`.

        Example (needs a broker)::

            consumed, flushed = consumer.poll_once(timeout=0.5)
        """
        if self._buffer.buffered_rows:  # wake up for the commit interval, not up to ``timeout`` after it
            timeout = min(timeout, max(0.01, self._buffer.flush_due() - time.monotonic()))
        with collector_paused():  # ~1 us per message saved (k2.landing.gcpause)
            messages = self.consumer.consume(num_messages=self._buffer.fetch_limit(), timeout=timeout)
        if messages and any(map(_ERROR, messages)):
            good = []
            for msg in messages:
                error = msg.error()
                if error is None:
                    good.append(msg)
                else:
                    self._on_error(msg, error)
            messages = good
        if messages:
            shorts = {self._short_for_topic(tp.topic) for tp in self._assigned}
            size = self._buffer.add(messages, shorts, self._short_for_topic)
            self.stats.consumed += len(messages)
            self.stats.largest_fetch_bytes = max(self.stats.largest_fetch_bytes, size)
            self.stats.peak_buffered_bytes = max(self.stats.peak_buffered_bytes, self._buffer.buffered_bytes)
        flushed = False
        if self._buffer.should_flush():
            self.flush(keep_fetching=True)
            flushed = True
        elif time.monotonic() - self._last_gauges >= _GAUGE_INTERVAL:
            self.update_gauges()
        return len(messages), flushed

    def _on_error(self, msg: Message, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.code() == KafkaError._AUTO_OFFSET_RESET or error.code() == KafkaError.OFFSET_OUT_OF_RANGE:
            topic, partition = str(msg.topic()), int(msg.partition() or 0)
            self._handle_reset(topic, partition, f"offset out of range ({error.str()})")
            self._next[(topic, partition)] = OFFSET_BEGINNING
            self.consumer.seek(TopicPartition(topic, partition, OFFSET_BEGINNING))
            return
        if error.fatal():
            raise LandingError(f"fatal Kafka error: {error.str()}")
        log.warning("kafka error", error=error.str())

    def close(self) -> None:
        """Leave the group and release clients (buffer must already be flushed)."""
        with contextlib.suppress(KafkaException, RuntimeError):
            self.consumer.close()
        self._dead_letters.flush()

    def _clear_buffers(self) -> None:
        self._buffer.clear()
        self._m_buffered.set(0)

    # -- committing ----------------------------------------------------------------------------------
    def flush(self, keep_fetching: bool = False) -> None:
        """Land everything buffered (one Iceberg commit per table), then commit group offsets.

        The assigned partitions are paused while Iceberg commits, so a slow Iceberg stops fetching
        instead of growing memory; on resume each partition is sought to its next offset to land.
        ``keep_fetching`` (the poll loop's flushes by row count or interval, never by the byte bound)
        skips the pause: librdkafka keeps pre-fetching during the commit (its queue is bounded by
        ``consumer_fetch_max_bytes``), whereas pausing and seeking would discard that queue and make
        every commit wait for fresh broker round trips.

        Example (needs a broker and catalog)::

            consumer.flush()
        """
        if not self._buffer.buffered_rows:
            return
        self._buffer.last_flush_started = time.monotonic()
        self._m_buffered.set(self._buffer.buffered_bytes)
        # Taken out of the buffer so that each table's messages are freed as soon as its rows are decoded
        # (see _land): the Message objects cost ~10x their value bytes.
        by_table = {short: messages for short, messages in self._buffer.messages.items() if messages}
        self._buffer.messages.clear()
        backpressure = self._buffer.buffered_bytes >= self.settings.landing_max_buffered_bytes
        paused = [] if keep_fetching and not backpressure else list(self._assigned)
        if paused:
            self.consumer.pause(paused)
            self._m_paused.set(len(paused))
        try:
            group_offsets: list[TopicPartition] = []
            for short in list(by_table):
                group_offsets.extend(self._land(short, by_table.pop(short)))
            self._clear_buffers()
            if group_offsets:
                try:
                    self.consumer.commit(offsets=group_offsets, asynchronous=False)
                except KafkaException as exc:  # informational only: the table holds the truth
                    log.warning("group offset commit failed", error=str(exc))
        finally:
            if paused:
                try:
                    self.consumer.resume(paused)
                    for tp in paused:
                        position = self._next.get((tp.topic, tp.partition))
                        if position is not None:
                            self.consumer.seek(TopicPartition(tp.topic, tp.partition, position))
                except KafkaException as exc:
                    log.warning("resume/seek failed; partitions will be reassigned", error=str(exc))
                self._m_paused.set(0)
        self.update_gauges()

    # -- landing one table's batch: decode, validate, dedup, gaps, write, commit ------------------------
    def _land(self, short: str, messages: list[Message]) -> list[TopicPartition]:
        """Land one table's buffered messages; returns the group offsets to commit (empty: nothing to do)."""
        mine = {tp.topic for tp in self._assigned if self._short_for_topic(tp.topic) == short}
        batch, redelivered = fresh_batch(messages, mine, self._next)
        self.stats.redelivered += redelivered
        del messages  # memory: from here on only the batch holds the Message objects
        if batch is None:
            return []
        decoded = decode(self.decoders[short], batch)
        good, positions, rejects = validate_rows(
            short,
            batch,
            decoded,
            self.settings,
            self.tables[short],
            self.marks[short],
            self.sequential[short],
        )
        del decoded
        good = self._currencies.fill(lineage(good, batch, positions))
        # Flushed: nothing is committed past an unrecorded reject.
        self.stats.dead_lettered += self._dead_letters.send(batch.messages, rejects)
        coverage = coverage_of(batch, self._next)
        batch.messages = []  # memory: the Message objects are freed before the Iceberg write needs its share
        release_memory()
        return self._commit(short, batch, Rows(good, positions), coverage, len(rejects))

    def _commit(
        self, short: str, batch: Batch, rows: Rows, coverage: Coverage, rejected: int
    ) -> list[TopicPartition]:
        """Dedup, record gaps and append rows + offsets in one Iceberg commit, retried on a conflict."""
        table = self.tables[short]
        backoff = Backoff(0.05, 1.0)
        for _attempt in range(20):
            table.refresh()
            snapshot = table.current_snapshot()
            summary = snapshot.summary if snapshot is not None else None
            if not self._drop_stale(short, batch, rows, coverage, offsets_from_summary(summary)):
                return []
            result = self._dedup(short, rows.good)
            # The common case (nothing dropped) makes no copy.
            data = rows.good if result.keep.all() else rows.good.filter(pa.array(result.keep))
            properties = commit_properties(
                summary, coverage, self.name, self._cluster(), data.num_rows, result, rejected
            )
            if result.gaps:
                # before the data commit: see k2.landing.ledger
                self.stats.gaps += self._open_gaps.record(short, result.gaps)
            started = time.monotonic()
            view = commit_view(table)
            if self.before_commit is not None:
                self.before_commit(short, data.num_rows)
            try:
                append(view, data, short, properties)
            except CommitFailedException:
                self.stats.commit_conflicts += 1
                self._m_commits.labels(table=short, outcome="conflict").inc()
                self.marks[short].clear()  # advanced for this attempt: recompute them from the table
                time.sleep(backoff.next_delay())
                continue
            table.metadata, table.metadata_location = view.metadata, view.metadata_location
            self._committed(short, data, result, coverage, time.monotonic() - started)
            return [TopicPartition(t, p, span[1] + 1) for (t, p), span in coverage.ranges.items()]
        self._m_commits.labels(table=short, outcome="failed").inc()
        raise LandingError(
            f"expected an Iceberg commit to {short} within 20 attempts, found continuous conflicts"
        )

    def _drop_stale(
        self, short: str, batch: Batch, rows: Rows, coverage: Coverage, stored: OffsetMap
    ) -> bool:
        """Drop the partitions another writer moved since this consumer read them (a zombie after a
        rebalance) from the batch and seek them to the stored offset; False when nothing is left."""
        stale = [
            k
            for k in coverage.ranges
            if stored_value(stored, k[0], k[1]) != self._expected.get(k, stored_value(stored, k[0], k[1]))
        ]
        if not stale:
            return True
        # Another writer landed ids of these partitions: the cached high-water marks and open gaps are ours,
        # not the table's. Kept, the next batch after the seek would read the other writer's ids as a gap.
        self.marks[short].clear()
        self._open_gaps.forget(short)  # re-read from the ledger with the next batch of each pair
        row_partitions = batch.partitions_array[rows.positions]
        row_topics = (
            np.array(batch.topic_names, dtype=object)[batch.topic_codes[rows.positions]]
            if len(rows.positions)
            else np.array([], dtype=object)
        )
        keep = np.array(
            [(t, p) not in stale for t, p in zip(row_topics, row_partitions, strict=True)], dtype=bool
        )
        self.stats.dropped_stale += int((~keep).sum())
        rows.good, rows.positions = rows.good.filter(pa.array(keep)), rows.positions[keep]
        for key in stale:
            log.warning(
                "partition moved by another writer; dropping its rows from this batch",
                topic=key[0],
                partition=key[1],
            )
            coverage.ranges.pop(key)
            coverage.last_crc.pop(key, None)
            value = stored_value(stored, key[0], key[1])
            self._expected[key] = value
            self._next[key] = value if value is not None else OFFSET_BEGINNING
            if any(tp.topic == key[0] and tp.partition == key[1] for tp in self._assigned):
                self.consumer.seek(
                    TopicPartition(key[0], key[1], value if value is not None else OFFSET_BEGINNING)
                )
        return bool(coverage.ranges)

    def _dedup(self, short: str, good: pa.Table) -> DedupResult:
        """Dedup by natural key against the table (k2.landing.dedup); loads the open gaps of new pairs."""
        _, _, id_column = TABLE_ROUTES[short]
        sequential = self.sequential[short]
        dedup = DEDUP.get(short, deduplicate)
        result = dedup(good, id_column, self.tables[short], self.marks[short], sequential)
        if sequential and good.num_rows:
            self._open_gaps.load(short, good, sequential)
        return result

    def _committed(
        self, short: str, data: pa.Table, result: DedupResult, coverage: Coverage, elapsed: float
    ) -> None:
        """After the Iceberg commit: metrics, stats, next offsets, gaps the landed ids closed, the hook."""
        landed = data.num_rows
        self._m_commits.labels(table=short, outcome="ok").inc()
        self._m_latency.labels(table=short).observe(elapsed)
        self._m_batch.labels(table=short).observe(landed)
        self._m_rows.labels(table=short).inc(landed)
        self._m_dups.labels(table=short).inc(result.duplicates)
        self._m_late.labels(table=short).inc(result.late)
        self.stats.landed += landed
        self.stats.per_table[short] += landed
        self.stats.duplicates += result.duplicates
        self.stats.late += result.late
        self.stats.commits += 1
        log.info(
            "committed",
            table=short,
            rows=landed,
            writer=self.name,
            cids=sorted(coverage.cids),
            seconds=round(elapsed, 3),
        )
        if landed:
            self._gauges.committed(short, data)
            self._open_gaps.close_filled(short, data)
        for (t, p), span in coverage.ranges.items():
            self._expected[(t, p)] = span[1] + 1
            self._next[(t, p)] = span[1] + 1
        if self.on_commit is not None:
            self.on_commit(short, landed)

    def _cluster(self) -> str:
        if not self._cluster_id:
            try:
                self._cluster_id = str(self.consumer.list_topics(timeout=5).cluster_id or "")
            except KafkaException:
                self._cluster_id = ""
        return self._cluster_id

    def update_gauges(self) -> None:
        """Publish the buffered bytes, lag per assigned partition and freshness per table (k2.landing.gauges).

        Example (needs a broker)::

            consumer.update_gauges()  # k2_landing_consumer_lag{topic,partition}, k2_landing_freshness_seconds{table}
        """
        self._last_gauges = time.monotonic()
        self._m_buffered.set(self._buffer.buffered_bytes)
        self._gauges.publish(self.consumer, self._assigned, self._next)


def run_landing(
    settings: Settings, idle_exit_seconds: float | None = None, topics: list[str] | None = None
) -> LandingStats:
    """Run one landing consumer until SIGTERM/SIGINT (or idle), serving /metrics when configured.

    Example::

        stats = run_landing(load_settings(), idle_exit_seconds=10)
    """
    consumer = LandingConsumer(settings, topics=topics)
    # Subscribed before /metrics answers: `k2 up` waits for that port, so when it returns the landing is
    # already joining its group (measured: the demo's first trade was sent 2.6 s before the subscription).
    consumer.subscribe()
    if settings.landing_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.landing_metrics_port, addr="127.0.0.1")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: consumer.stop())
        signal.signal(signal.SIGINT, lambda *_: consumer.stop())
    # Scheduled table maintenance (k2.lake.maintenance; off unless K2_MAINTENANCE_INTERVAL_SECONDS > 0).
    from k2.lake.maintenance import start_scheduler

    maintenance = start_scheduler(settings)
    # End-of-day tags (k2.lake.tags; K2_EOD_TAGS, on by default): history that outlives snapshot expiry.
    from k2.lake.tags import start_eod_tagger

    tagger = start_eod_tagger(settings)
    # Book snapshots (k2.lake.book_snapshots; K2_BOOK_SNAPSHOT_RUN_SECONDS): at start, then on a schedule.
    from k2.lake.book_snapshots import start_book_snapshotter

    snapshotter = start_book_snapshotter(settings)
    try:
        return consumer.run(idle_exit_seconds=idle_exit_seconds)
    finally:
        if maintenance is not None:
            maintenance.stop()
        if tagger is not None:
            tagger.stop()
        if snapshotter is not None:
            snapshotter.stop()
