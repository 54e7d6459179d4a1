"""The landing consumer: Kafka -> Avro decode -> validate -> dedup -> Iceberg, exactly once.

Protocol (see also :mod:`k2.landing.offsets`):

1. Messages are buffered per table until ``landing_commit_rows`` rows, ``landing_commit_interval_seconds``
   or ``landing_max_buffered_bytes`` is reached. While a batch is being committed the consumer's
   partitions are paused, so a slow Iceberg never makes the consumer buffer without limit.
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

Example (needs a broker, registry and catalog)::

    consumer = LandingConsumer(load_settings())
    consumer.run(idle_exit_seconds=5)
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
import zlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from k2.bus.dlq import dlq_headers
from k2.bus.producer import MarketDataProducer
from k2.bus.serde import AvroBatchDecoder, registry_client
from k2.bus.topics import dlq_topic, ensure_topics, parse_topic
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.lake.writer import append
from k2.landing.dedup import HighWaterMarks, deduplicate
from k2.landing.offsets import (
    CLUSTER_KEY,
    OFFSETS_KEY,
    RANGES_KEY,
    WRITER_KEY,
    OffsetMap,
    merge_offsets,
    offsets_from_summary,
)
from k2.landing.validate import validate
from k2.model import GAP, QUOTE, TRADE, RecordType
from k2.model.arrow import records_to_arrow
from k2.model.values import now_micros
from k2.ops.metrics import metric

log = structlog.get_logger("k2.landing")

LAST_KEY = "k2.kafka.last"
QUALITY_KEY = "k2.quality"
TOPIC_REGEX = r"^market\.[a-z]+\.(trades|quotes)\.[a-z0-9_-]+$"
_ROUTES: dict[str, tuple[str, RecordType, str]] = {
    "trades": ("trades", TRADE, "trade_id"),
    "quotes": ("quotes", QUOTE, "update_id"),
}


class OffsetResetError(RuntimeError):
    """The broker's log no longer holds what the table says was landed, and the policy is ``fail``."""


class LandingError(RuntimeError):
    """The landing consumer cannot continue safely."""


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
    per_table: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def stored_value(offsets: OffsetMap, topic: str, partition: int) -> int | None:
    parts = offsets.get(topic)
    if parts is None:
        return None
    value = parts.get(str(partition))
    return None if value is None else int(value)


def _summary_json(summary: Any, key: str) -> dict[str, Any]:
    if summary is None:
        return {}
    raw = summary.additional_properties.get(key)
    return json.loads(raw) if raw else {}


class LandingConsumer:
    """One landing consumer process (several may run in one consumer group)."""

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
        self.registry = registry_client(settings.registry_url)
        self.decoders = {kind: AvroBatchDecoder(self.registry, record) for kind, (_, record, _) in _ROUTES.items()}
        self.marks = {short: HighWaterMarks(settings.landing_hwm_cache_size) for short, _, _ in _ROUTES.values()}
        self.sequential = frozenset(e.strip() for e in settings.landing_sequential_exchanges.split(",") if e.strip())
        self.on_commit = on_commit
        self.stats = LandingStats()
        self._topics = topics
        self._buffers: dict[str, list[Message]] = defaultdict(list)
        self._buffered_bytes = 0
        self._buffered_rows = 0
        self._first_buffered = 0.0
        self._expected: dict[tuple[str, int], int | None] = {}
        # Next offset to read per partition; librdkafka drops prefetched messages on pause(), and after
        # resume() K2 seeks here explicitly rather than trusting the client's notion of position.
        self._next: dict[tuple[str, int], int] = {}
        self._assigned: list[TopicPartition] = []
        self._dlq_producer: MarketDataProducer | None = None
        self._dlq_topics: set[str] = set()
        self._open_gaps: dict[tuple[str, str], list[list[int]]] = defaultdict(list)
        self._stop = threading.Event()
        self._cluster_id = ""
        self.consumer = Consumer(
            {
                **settings.kafka_client_config(),
                "group.id": settings.consumer_group,
                "client.id": self.name,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "error",
                "session.timeout.ms": settings.consumer_session_timeout_ms,
                "heartbeat.interval.ms": max(100, settings.consumer_session_timeout_ms // 5),
                "max.poll.interval.ms": max(settings.consumer_session_timeout_ms + 1, 600_000),
                "fetch.max.bytes": settings.consumer_fetch_max_bytes,
                "queued.max.messages.kbytes": max(1024, settings.consumer_fetch_max_bytes // 1024),
                "topic.metadata.refresh.interval.ms": 5_000,
                "partition.assignment.strategy": "range",
            }
        )
        self._m_rows = metric("k2_landing_rows_total")
        self._m_commits = metric("k2_landing_commits_total")
        self._m_batch = metric("k2_landing_batch_rows")
        self._m_latency = metric("k2_landing_commit_seconds")
        self._m_dups = metric("k2_landing_duplicates_total")
        self._m_late = metric("k2_landing_out_of_order_total")
        self._m_gaps = metric("k2_landing_gaps_total")
        self._m_dlq = metric("k2_landing_dlq_total")
        self._m_paused = metric("k2_landing_paused_partitions").unlabelled()
        self._m_buffered = metric("k2_landing_buffered_bytes").unlabelled()
        self._m_lag = metric("k2_landing_consumer_lag")
        self._m_fresh = metric("k2_landing_freshness_seconds")
        self._newest: dict[str, int] = {}

    # -- assignment ---------------------------------------------------------------------------------
    def _table_for_topic(self, topic: str) -> tuple[str, RecordType, str]:
        _, data_type, _ = parse_topic(topic)
        return _ROUTES[data_type]

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for marks in self.marks.values():
            marks.clear()
        summaries: dict[str, Any] = {}
        for short in {self._table_for_topic(tp.topic)[0] for tp in partitions}:
            table = self.tables[short]
            table.refresh()
            snapshot = table.current_snapshot()
            summaries[short] = snapshot.summary if snapshot is not None else None
        checks = []
        for tp in partitions:
            short = self._table_for_topic(tp.topic)[0]
            stored = stored_value(offsets_from_summary(summaries[short]), tp.topic, tp.partition)
            self._expected[(tp.topic, tp.partition)] = stored
            if stored is None or stored == 0:
                tp.offset = OFFSET_BEGINNING
            else:
                tp.offset = stored
                last = _summary_json(summaries[short], LAST_KEY).get(tp.topic, {}).get(str(tp.partition))
                if last:
                    offset, crc = (int(x) for x in last.split(":"))
                    checks.append((tp, offset, crc))
        if checks:
            verdict = self._verify_log([(tp.topic, tp.partition, off, crc) for tp, off, crc in checks])
            for tp, _, _ in checks:
                if not verdict[(tp.topic, tp.partition)]:
                    self._handle_reset(tp.topic, tp.partition, "last landed message missing or different")
                    tp.offset = OFFSET_BEGINNING
        for tp in partitions:
            self._next[(tp.topic, tp.partition)] = tp.offset
        self._assigned = list(partitions)
        consumer.assign(partitions)
        log.info("assigned", consumer=self.name, partitions=[(tp.topic, tp.partition, tp.offset) for tp in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Land what we hold before giving the partitions away, so the next owner starts after it.
        try:
            self.flush()
        except Exception:
            log.exception("flush on revoke failed; buffered messages will be re-read by the next owner")
            self._clear_buffers()
        consumer.unassign()
        self._assigned = []

    def _handle_reset(self, topic: str, partition: int, why: str) -> None:
        self.stats.resets += 1
        message = (
            f"{topic}[{partition}]: expected the log to still hold the messages the table says were landed, found "
            f"{why} (broker reset or topic recreated)"
        )
        if self.settings.landing_on_offset_reset == "fail":
            raise OffsetResetError(message + "; K2_LANDING_ON_OFFSET_RESET=fail")
        log.error("offset reset: restarting partition from the log start with dedup", detail=message)

    def _verify_log(self, checks: list[tuple[str, int, int, int]]) -> dict[tuple[str, int], bool]:
        """For each (topic, partition, offset, crc): is the message at offset still there with that crc?"""
        verdict = {(t, p): False for t, p, _, _ in checks}
        expected = {(t, p): (o, c) for t, p, o, c in checks}
        probe = Consumer(
            {
                **self.settings.kafka_client_config(),
                "group.id": f"k2-verify-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "error",
            }
        )
        try:
            probe.assign([TopicPartition(t, p, o) for t, p, o, _ in checks])
            pending = set(verdict)
            deadline = time.monotonic() + self.settings.landing_verify_timeout_seconds
            while pending and time.monotonic() < deadline:
                for msg in probe.consume(num_messages=len(pending) * 4, timeout=0.2):
                    key = (msg.topic(), msg.partition())
                    if key not in pending:
                        continue
                    if msg.error() is not None:
                        pending.discard(key)  # out of range or similar: verdict stays False
                        continue
                    offset, crc = expected[key]
                    if msg.offset() == offset:
                        verdict[key] = zlib.crc32(msg.value() or b"") == crc
                        pending.discard(key)
                    elif msg.offset() > offset:
                        pending.discard(key)
        finally:
            probe.close()
        return verdict

    # -- main loop ------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask :meth:`run` to flush and return."""
        self._stop.set()

    def run(self, idle_exit_seconds: float | None = None, max_seconds: float | None = None) -> LandingStats:
        """Consume and land until :meth:`stop`, SIGTERM, ``idle_exit_seconds`` without messages, or ``max_seconds``."""
        if self._topics:
            ensure_topics(self.settings, self._topics)
            self.consumer.subscribe(self._topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        else:
            self.consumer.subscribe([TOPIC_REGEX], on_assign=self._on_assign, on_revoke=self._on_revoke)
        started = last_message = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if max_seconds is not None and now - started > max_seconds:
                    break
                if idle_exit_seconds is not None and now - last_message > idle_exit_seconds and not self._buffered_rows:
                    break
                messages = self.consumer.consume(num_messages=10_000, timeout=0.2)
                for msg in messages:
                    error = msg.error()
                    if error is not None:
                        self._on_error(msg, error)
                        continue
                    self._buffers[msg.topic()].append(msg)
                    value = msg.value()
                    self._buffered_bytes += len(value) if value else 0
                    if not self._buffered_rows:
                        self._first_buffered = time.monotonic()
                    self._buffered_rows += 1
                if messages:
                    last_message = time.monotonic()
                    self.stats.consumed += len(messages)
                if self._should_flush():
                    self.flush()
                    last_message = time.monotonic()  # time spent committing is not idle time
            self.flush()
        finally:
            self.close()
        return self.stats

    def _should_flush(self) -> bool:
        if not self._buffered_rows:
            return False
        return (
            self._buffered_rows >= self.settings.landing_commit_rows
            or self._buffered_bytes >= self.settings.landing_max_buffered_bytes
            or time.monotonic() - self._first_buffered >= self.settings.landing_commit_interval_seconds
        )

    def _on_error(self, msg: Message, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.code() == KafkaError._AUTO_OFFSET_RESET or error.code() == KafkaError.OFFSET_OUT_OF_RANGE:
            topic, partition = msg.topic(), msg.partition()
            self._handle_reset(str(topic), int(partition or 0), f"offset out of range ({error.str()})")
            self._next[(str(topic), int(partition or 0))] = OFFSET_BEGINNING
            self.consumer.seek(TopicPartition(topic, partition, OFFSET_BEGINNING))
            return
        if error.fatal():
            raise LandingError(f"fatal Kafka error: {error.str()}")
        log.warning("kafka error", error=error.str())

    def close(self) -> None:
        """Leave the group and release clients (buffer must already be flushed)."""
        try:
            self.consumer.close()
        except (KafkaException, RuntimeError):
            pass
        if self._dlq_producer is not None:
            self._dlq_producer.flush()

    def _clear_buffers(self) -> None:
        self._buffers.clear()
        self._buffered_bytes = 0
        self._buffered_rows = 0
        self._m_buffered.set(0)

    # -- committing ----------------------------------------------------------------------------------
    def flush(self) -> None:
        """Land everything buffered (one Iceberg commit per table), then commit group offsets."""
        if not self._buffered_rows:
            return
        self._m_buffered.set(self._buffered_bytes)
        by_table: dict[str, list[Message]] = defaultdict(list)
        for topic, messages in self._buffers.items():
            by_table[self._table_for_topic(topic)[0]].extend(messages)
        paused = list(self._assigned)
        if paused:
            self.consumer.pause(paused)
            self._m_paused.set(len(paused))
        try:
            group_offsets: list[TopicPartition] = []
            for short, messages in by_table.items():
                group_offsets.extend(self._land(short, messages))
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
        self._update_lag()

    def _land(self, short: str, messages: list[Message]) -> list[TopicPartition]:
        _, record, id_column = _ROUTES["trades" if short == "trades" else "quotes"]
        table = self.tables[short]
        decoder = self.decoders["trades" if short == "trades" else "quotes"]
        values = [m.value() for m in messages]
        decoded = decoder.decode(values)
        rejects: list[tuple[int, str, str]] = [(pos, err.reason, err.detail) for pos, err in decoded.failures]
        good = decoded.table
        positions = np.asarray(decoded.indices, dtype=np.int64)
        if good.num_rows:
            topics_of_rows = np.array([messages[int(i)].topic() for i in positions], dtype=object)
            # Validate per topic so the exchange/asset class can be checked against the topic name.
            invalid_mask = np.zeros(good.num_rows, dtype=bool)
            for topic in set(topics_of_rows.tolist()):
                asset_class, _, exchange = parse_topic(topic)
                rows = np.flatnonzero(topics_of_rows == topic)
                subset = good if len(rows) == good.num_rows else good.take(pa.array(rows))
                for row, reason, detail in validate(
                    record,
                    subset,
                    now_us=now_micros(),
                    max_future_us=int(self.settings.landing_max_future_seconds * 1_000_000),
                    expected_exchange=exchange,
                    expected_asset_class=asset_class,
                ):
                    invalid_mask[rows[row]] = True
                    rejects.append((int(positions[rows[row]]), reason, detail))
            if invalid_mask.any():
                good = good.filter(pa.array(~invalid_mask))
                positions = positions[~invalid_mask]
        self._dead_letter(messages, rejects)

        # Offsets covered: every consumed message, landed or dead-lettered or deduplicated.
        ranges: dict[tuple[str, int], list[int]] = {}
        last_crc: dict[tuple[str, int], tuple[int, int]] = {}
        msg_partitions = np.fromiter((m.partition() for m in messages), dtype=np.int64, count=len(messages))
        msg_offsets = np.fromiter((m.offset() for m in messages), dtype=np.int64, count=len(messages))
        msg_topics = [m.topic() for m in messages]
        topic_names = sorted(set(msg_topics))
        topic_codes = np.array([topic_names.index(t) for t in msg_topics], dtype=np.int64) if len(topic_names) > 1 else np.zeros(len(messages), dtype=np.int64)
        for code, topic in enumerate(topic_names):
            for partition in np.unique(msg_partitions[topic_codes == code]):
                selected = np.flatnonzero((topic_codes == code) & (msg_partitions == partition))
                offsets = msg_offsets[selected]
                top = int(selected[int(np.argmax(offsets))])
                key = (topic, int(partition))
                ranges[key] = [int(offsets.min()), int(offsets.max())]
                last_crc[key] = (int(msg_offsets[top]), zlib.crc32(messages[top].value() or b""))
        row_partitions = msg_partitions[positions]
        row_topics = np.array(topic_names, dtype=object)[topic_codes[positions]] if len(positions) else np.array([], dtype=object)

        landed = 0
        for attempt in range(20):
            table.refresh()
            snapshot = table.current_snapshot()
            summary = snapshot.summary if snapshot is not None else None
            stored = offsets_from_summary(summary)
            stale = [k for k in ranges if stored_value(stored, k[0], k[1]) != self._expected.get(k, stored_value(stored, k[0], k[1]))]
            if stale:
                self.stats.dropped_stale += sum(1 for t, p in zip(row_topics, row_partitions, strict=True) if (t, p) in stale)
                keep = np.array([(t, p) not in stale for t, p in zip(row_topics, row_partitions, strict=True)], dtype=bool)
                good, positions = good.filter(pa.array(keep)), positions[keep]
                row_topics, row_partitions = row_topics[keep], row_partitions[keep]
                for key in stale:
                    log.warning("partition moved by another writer; dropping its rows from this batch", topic=key[0], partition=key[1])
                    ranges.pop(key)
                    last_crc.pop(key, None)
                    value = stored_value(stored, key[0], key[1])
                    self._expected[key] = value
                    self._next[key] = value if value is not None else OFFSET_BEGINNING
                    if any(tp.topic == key[0] and tp.partition == key[1] for tp in self._assigned):
                        self.consumer.seek(TopicPartition(key[0], key[1], value if value is not None else OFFSET_BEGINNING))
                if not ranges:
                    return []
            marks = self.marks[short]
            result = deduplicate(good, id_column, table, marks, self.sequential if short == "trades" else frozenset())
            data = good.filter(pa.array(result.keep))
            new_offsets = merge_offsets(stored, {t: {str(p): span[1] + 1} for (t, p), span in ranges.items()})
            last = _summary_json(summary, LAST_KEY)
            for (t, p), (offset, crc) in last_crc.items():
                last.setdefault(t, {})[str(p)] = f"{offset}:{crc}"
            quality = {f"{e}/{s}": [d, late] for (e, s), (d, late) in result.per_symbol.items()}
            properties = {
                OFFSETS_KEY: json.dumps(new_offsets, sort_keys=True),
                RANGES_KEY: json.dumps({t: {str(p): span} for (t, p), span in ranges.items()}, sort_keys=True),
                LAST_KEY: json.dumps(last, sort_keys=True),
                CLUSTER_KEY: self._cluster(),
                WRITER_KEY: self.name,
                "k2.rows.landed": str(data.num_rows),
                "k2.rows.duplicates": str(result.duplicates),
                "k2.rows.late": str(result.late),
                "k2.rows.dead_lettered": str(len(rejects)),
            }
            if quality:
                properties[QUALITY_KEY] = json.dumps(quality, sort_keys=True)
            if result.gaps or result.late_keys:
                self._record_gaps(short, result.gaps, result.late_keys)
            started = time.monotonic()
            try:
                append(table, data, short, properties)
            except CommitFailedException:
                self.stats.commit_conflicts += 1
                self._m_commits.labels(table=short, outcome="conflict").inc()
                # The marks were advanced for this attempt; recompute them from the table.
                marks.clear()
                time.sleep(min(0.05 * (attempt + 1), 1.0) * (0.5 + np.random.random()))
                continue
            elapsed = time.monotonic() - started
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
            if landed:
                newest = int(pa.compute.max(data["exchange_ts"]).cast(pa.int64()).as_py())
                self._newest[short] = max(newest, self._newest.get(short, 0))
                self._m_fresh.labels(table=short).set(max(0.0, (now_micros() - self._newest[short]) / 1e6))
            for (t, p), span in ranges.items():
                self._expected[(t, p)] = span[1] + 1
                self._next[(t, p)] = span[1] + 1
            if self.on_commit is not None:
                self.on_commit(short, landed)
            return [TopicPartition(t, p, span[1] + 1) for (t, p), span in ranges.items()]
        self._m_commits.labels(table=short, outcome="failed").inc()
        raise LandingError(f"expected an Iceberg commit to {short} within 20 attempts, found continuous conflicts")

    def _cluster(self) -> str:
        if not self._cluster_id:
            try:
                self._cluster_id = str(self.consumer.list_topics(timeout=5).cluster_id or "")
            except KafkaException:
                self._cluster_id = ""
        return self._cluster_id

    def _dead_letter(self, messages: list[Message], rejects: list[tuple[int, str, str]]) -> None:
        if not rejects:
            return
        if self._dlq_producer is None:
            self._dlq_producer = MarketDataProducer(self.settings, create_topics=False)
        for position, reason, detail in sorted(rejects):
            msg = messages[position]
            target = dlq_topic(msg.topic())
            if target not in self._dlq_topics:
                ensure_topics(self.settings, [target])
                self._dlq_topics.add(target)
            timestamp = msg.timestamp()[1] if msg.timestamp() else -1
            headers = dlq_headers(reason, detail, msg.topic(), msg.partition(), msg.offset(), timestamp, msg.headers())
            self._dlq_producer.produce_raw(target, msg.key(), msg.value(), headers)
            self._m_dlq.labels(topic=msg.topic(), reason=reason).inc()
        self._dlq_producer.flush()  # raises DeliveryError: then nothing is committed past these messages
        self.stats.dead_lettered += len(rejects)

    def _record_gaps(
        self,
        short: str,
        gaps: list[tuple[str, str, int, int, int | None, int | None]],
        late_keys: list[tuple[str, str, int]],
    ) -> None:
        detected = now_micros()
        rows = []
        for exchange, symbol, low, high, before, after in gaps:
            rows.append(self._gap_row(exchange, symbol, short, low, high, before, after, detected, "open", None))
            bucket = self._open_gaps[(exchange, symbol)]
            bucket.append([low, high, high - low + 1])
            if len(bucket) > 1000:
                bucket.pop(0)
        for exchange, symbol, ident in late_keys:
            for gap in self._open_gaps.get((exchange, symbol), []):
                if gap[0] <= ident <= gap[1] and gap[2] > 0:
                    gap[2] -= 1
                    if gap[2] == 0:
                        rows.append(
                            self._gap_row(exchange, symbol, short, gap[0], gap[1], None, None, detected, "backfilled", "late arrivals filled it")
                        )
                    break
        if not rows:
            return
        # Written before the data commit: gap rows are keyed (gap_key) so a retry rewrites the same gap.
        gaps_table = self.tables["gaps"]
        for _ in range(20):
            try:
                gaps_table.refresh()
                append(gaps_table, records_to_arrow(GAP, rows), "gaps", {WRITER_KEY: self.name})
                break
            except CommitFailedException:
                time.sleep(0.05)
        self.stats.gaps += sum(1 for r in rows if r["status"] == "open")
        self._m_gaps.labels(table=short).inc(sum(1 for r in rows if r["status"] == "open"))

    @staticmethod
    def _gap_row(
        exchange: str, symbol: str, data_type: str, low: int, high: int, before: int | None, after: int | None,
        detected: int, status: str, detail: str | None,
    ) -> dict[str, Any]:
        return {
            "exchange": exchange,
            "symbol": symbol,
            "data_type": data_type,
            "first_missing_id": low,
            "last_missing_id": high,
            "missing_count": high - low + 1,
            "start_ts": before,
            "end_ts": after,
            "detected_ts": detected,
            "source": "landing",
            "status": status,
            "gap_key": f"{exchange}/{symbol}/{data_type}/{low}-{high}",
            "detail": detail,
        }

    def _update_lag(self) -> None:
        for tp in self._assigned:
            try:
                low, high = self.consumer.get_watermark_offsets(tp, timeout=1, cached=True)
                position = self.consumer.position([TopicPartition(tp.topic, tp.partition)])[0].offset
            except KafkaException:
                continue
            if high >= 0 and position >= 0:
                self._m_lag.labels(topic=tp.topic, partition=tp.partition).set(max(0, high - position))


def run_landing(settings: Settings, idle_exit_seconds: float | None = None, topics: list[str] | None = None) -> LandingStats:
    """Run one landing consumer until SIGTERM/SIGINT (or idle), serving /metrics when configured.

    Example::

        stats = run_landing(load_settings(), idle_exit_seconds=10)
    """
    if settings.landing_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.landing_metrics_port, addr="127.0.0.1")
    consumer = LandingConsumer(settings, topics=topics)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: consumer.stop())
        signal.signal(signal.SIGINT, lambda *_: consumer.stop())
    return consumer.run(idle_exit_seconds=idle_exit_seconds)
