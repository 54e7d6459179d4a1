"""The market-data producer: idempotent (acks=all), compressed, bounded, and loud about failures.

* Key = exchange-native symbol, so one symbol's messages stay ordered in one partition.
* A full local queue **blocks** the caller (polling for delivery reports) and counts the wait in
  ``k2_producer_blocked_seconds_total``; data is never dropped.
* Every delivery error is counted (``k2_producer_errors_total``) and kept; :meth:`flush` raises
  :class:`DeliveryError` listing them, so a failed delivery can never pass silently.
* **Recovery.** A restarted broker (Tansu forgets producer ids) makes librdkafka's idempotent producer
  retry ``UnknownProducerId`` forever without a report. So: a message that fails with a transient,
  producer-state or timeout error is kept and re-sent; a fatal error, a producer-state error or no
  acknowledgement for ``producer_stall_seconds`` while messages wait makes the producer **recreate** its
  librdkafka handle (new producer id, so idempotence starts afresh), purge the old one and re-send every
  message it had not acknowledged. Hazard: a purged in-flight message may already be in the log, so a
  re-send can duplicate it in Kafka; the landing deduplicates by natural key, so the lake does not.
* **Tansu and idempotence.** Tansu 0.6 on ``s3://`` acknowledges an idempotent producer's retried
  batches after a SIGKILL + restart without writing them (measured: 1,042 and 4,186 of 10,000 in-flight
  messages reported delivered, absent from the log). Against Tansu the producer is therefore not
  idempotent (``producer_idempotence=auto``): one request in flight keeps each partition's order, and a
  retry may duplicate a message, which the landing drops by natural key (measured: 0 lost, 5,542 dups).
* **Batches.** :meth:`send_many` (dict rows), :meth:`send_table` (canonical Arrow columns) and
  :meth:`send_buffered` (rows held until 10,000 or a flush) encode column-wise and produce from one loop
  with one delivery callback per batch; each message still gets ``k2.cid`` (or the caller's headers) and
  its own ``k2.mid``, a failed one is found by its value bytes and re-sent with them. Hazard: a batch's
  callback keeps its encoded values alive until every message of it is reported.
* **Bound.** When messages have waited ``producer_delivery_timeout_seconds`` without any acknowledgement,
  :meth:`send`, :meth:`flush` and :meth:`check` raise :class:`DeliveryError`: callers exit non-zero
  instead of hanging.

Example:
    >>> from k2.config import Settings
    >>> producer_config(Settings(kafka_bootstrap_servers="127.0.0.1:9092"))["enable.idempotence"]
    True
    >>> producer_config(Settings(), idempotent=False)["max.in.flight.requests.per.connection"]
    1
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from functools import partial
from operator import itemgetter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import KafkaError, Message, Producer

from k2.bus.avro_encode import NotUniform
from k2.bus.broker import TANSU_CLUSTER_ID
from k2.bus.dlq import dlq_headers
from k2.bus.lineage import MID_HEADER, message_id_header
from k2.bus.serde import AvroEncoder, RegistryUnavailableError, registry_client
from k2.bus.topics import dlq_topic, ensure_topics, topic_name
from k2.config import Settings
from k2.model import RecordType
from k2.model.arrow import arrow_to_records
from k2.model.values import now_micros
from k2.pacing import Backoff
from k2.telemetry.logging import CID_HEADER, get_logger, new_correlation_id
from k2.telemetry.metrics import metric

log = get_logger(__name__)

# Errors after which the message is re-sent (under the delivery bound) rather than reported.
_RESEND = {
    KafkaError._MSG_TIMED_OUT, KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT, KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN, KafkaError._FATAL, KafkaError.UNKNOWN_PRODUCER_ID,
    KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, KafkaError.INVALID_PRODUCER_EPOCH, KafkaError.PRODUCER_FENCED,
    KafkaError.INVALID_PRODUCER_ID_MAPPING, KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION,
    KafkaError.REQUEST_TIMED_OUT, KafkaError.NOT_ENOUGH_REPLICAS,
}  # fmt: skip
# Errors that mean the librdkafka handle's producer state is unusable: recreate it.
_RECREATE = {
    KafkaError._FATAL,
    KafkaError._MSG_TIMED_OUT,
    KafkaError.UNKNOWN_PRODUCER_ID,
    KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
    KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError.PRODUCER_FENCED,
    KafkaError.INVALID_PRODUCER_ID_MAPPING,
}
_PURGED = {KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT}
_BUFFER_ROWS = 10_000  # rows send_buffered holds before sending them as one batch


class DeliveryError(RuntimeError):
    """One or more messages were not acknowledged by the broker."""

    def __init__(self, errors: list[tuple[str, str]], message: str | None = None) -> None:
        sample = "; ".join(f"{t}: {e}" for t, e in errors[:5])
        super().__init__(
            message
            or f"expected every message to be acknowledged, found {len(errors)} delivery errors ({sample})"
        )
        self.errors = errors


_IDEMPOTENT: dict[str, bool] = {}


def idempotence_wanted(settings: Settings) -> bool:
    """Whether the producer may be idempotent on this broker (``producer_idempotence``; see its hazard).

    ``auto`` asks the broker for its cluster id once per process and bootstrap address: Tansu's means off.
    """
    if settings.producer_idempotence != "auto":
        return settings.producer_idempotence == "on"
    key = settings.bootstrap_servers
    if key not in _IDEMPOTENT:
        from confluent_kafka.admin import AdminClient

        try:
            cluster = (
                AdminClient({**settings.kafka_client_config(), "log_level": 0})
                .list_topics(timeout=5)
                .cluster_id
            )
        except Exception:  # broker unreachable now: decide by whether it is the local (Tansu) broker
            return not settings.embedded_broker
        _IDEMPOTENT[key] = cluster != TANSU_CLUSTER_ID
    return _IDEMPOTENT[key]


def producer_config(settings: Settings, idempotent: bool = True) -> dict[str, Any]:
    """librdkafka producer settings K2 uses (acks=all, bounded queue; idempotent, or one request in flight)."""
    ordering: dict[str, Any] = (
        {"enable.idempotence": True}
        if idempotent
        else {"enable.idempotence": False, "max.in.flight.requests.per.connection": 1}
    )
    return {
        **settings.kafka_client_config(),
        **ordering,
        "acks": "all",
        "compression.type": settings.producer_compression,
        "linger.ms": settings.producer_linger_ms,
        "queue.buffering.max.messages": settings.producer_queue_max_messages,
        "queue.buffering.max.kbytes": settings.producer_queue_max_kbytes,
        "batch.num.messages": 10_000,
        "message.timeout.ms": int(settings.producer_delivery_timeout_seconds * 1000),
    }


def _ingest_fill(record: RecordType) -> dict[str, int] | None:
    """The value given to a batch's rows without ``ingest_ts``: the batch's send time (None: no such field)."""
    return {"ingest_ts": now_micros()} if any(f.name == "ingest_ts" for f in record.fields) else None


class MarketDataProducer:
    """Produce canonical records (wire form) to their topics.

    Example (needs a broker and registry)::

        with MarketDataProducer(settings) as producer:
            producer.send(TRADE, trade_row)
    """

    def __init__(self, settings: Settings, create_topics: bool = True) -> None:
        self.settings = settings
        self._resend: list[tuple[str, bytes | None, bytes | None, Any]] = []
        self._recreate_wanted = False
        self._busy = False
        self._last_progress = self._last_recreate = self._last_check = time.monotonic()
        self.recreated = 0
        self._idempotent = idempotence_wanted(settings)
        self._closed = False
        self._resending = False
        self._retired: list[Producer] = []
        self._producer = self._new_producer()
        self._registry = registry_client(settings.registry_url)
        self._encoders: dict[tuple[str, str], AvroEncoder] = {}
        self._create_topics = create_topics
        self._dlq_topics: set[str] = set()  # DLQ topics ensured by dead_letter
        self.errors: list[tuple[str, str]] = []
        self.delivered = 0
        self.sent = 0
        self.sent_in_batches = 0  # of `sent`: messages sent as batches of one topic by send_many
        self._buffer: list[dict[str, Any]] = []  # rows held by send_buffered
        self._buffer_record: RecordType | None = None
        # ops: every message sent gets a `k2.cid` header naming this producer session (see k2.telemetry.logging).
        self.correlation_id = new_correlation_id()
        self._cid_headers = [(CID_HEADER, self.correlation_id.encode())]
        # lineage: every message sent gets a `k2.mid` header (this session's id : sequence), see k2.bus.lineage.
        self._producer_id = self.correlation_id.encode()
        self.sequence = 0
        self._delivered_by_topic: dict[str, int] = {}
        self._reporters: dict[str, tuple[list[int], Callable[[Any, KafkaError | None, Message], None]]] = {}
        self._topics: dict[tuple[str, str, str], str] = {}
        self._m_delivered = metric("k2_producer_messages_total")
        self._m_errors = metric("k2_producer_errors_total")
        self._m_depth = metric("k2_producer_queue_depth").unlabelled()
        self._m_blocked = metric("k2_producer_blocked_seconds_total").unlabelled()
        self._m_recreated = metric("k2_producer_recreated_total").unlabelled()

    def _new_producer(self) -> Producer:
        return Producer({**producer_config(self.settings, self._idempotent), "error_cb": self._on_error})

    def _on_error(self, err: KafkaError) -> None:
        # librdkafka's client-level errors: only a fatal one (idempotence state lost) needs action.
        if err.fatal():
            log.warning("producer_fatal_error", error=str(err))
            self._recreate_wanted = True

    def encoder(self, record: RecordType, topic: str) -> AvroEncoder:
        key = (record.name, topic)
        enc = self._encoders.get(key)
        if enc is None:
            if self._create_topics:
                ensure_topics(self.settings, [topic])
            enc = self._encoders[key] = self._register(record, topic)
        return enc

    def _register(self, record: RecordType, topic: str) -> AvroEncoder:
        """Register ``record``'s schema for ``topic``, waiting for a registry that answered this producer before.

        A registry that is down when a producer first needs it fails at once (nothing was ever reachable:
        the stack is not up). One that answered earlier and is gone now is being restarted (``k2 down`` /
        ``k2 up`` under a running stream whose first quote comes during the restart): it is waited for up
        to ``producer_delivery_timeout_seconds``, as the broker is, then the error is raised.
        """
        deadline = time.monotonic() + self.settings.producer_delivery_timeout_seconds
        backoff = Backoff(0.2, 2.0)
        while True:
            try:
                return AvroEncoder(self._registry, record, topic)
            except RegistryUnavailableError as exc:
                if not self._encoders or time.monotonic() >= deadline:
                    raise
                log.warning("registry_unavailable_waiting", topic=topic, record=record.name, error=str(exc))
                time.sleep(backoff.next_delay())

    def _on_delivery(self, hdrs: Any, err: KafkaError | None, msg: Message) -> None:
        # Called once per message (``partial(self._on_delivery, hdrs)``): keep it cheap, publish the counters in
        # bulk (_publish_metrics). ``hdrs`` are the message's headers: a delivery report's ``msg.headers()``
        # is always None in confluent-kafka, so a re-send would otherwise lose k2.cid and k2.mid.
        if err is not None:
            code = err.code()
            if code not in _PURGED:
                self._m_errors.labels(topic=str(msg.topic()), error=err.name()).inc()
            if err.fatal() or code in _RECREATE:
                self._recreate_wanted = True
            if code in _RESEND or err.fatal() or err.retriable():
                self._resend.append((str(msg.topic()), msg.key(), msg.value(), hdrs))
            else:
                self.errors.append((str(msg.topic()), str(err)))
        else:
            topic = str(msg.topic())
            self._delivered_by_topic[topic] = self._delivered_by_topic.get(topic, 0) + 1

    def _reporter(self, topic: str) -> Callable[[Any, KafkaError | None, Message], None]:
        """``topic``'s delivery callback for batches: a success only bumps a counter (no ``msg.topic()``),
        a failure goes to :meth:`_on_delivery`."""
        known = self._reporters.get(topic)
        if known is not None:
            return known[1]
        cell, on_delivery = [0], self._on_delivery

        def report(hdrs: Any, err: KafkaError | None, msg: Message) -> None:
            if err is None:
                cell[0] += 1
            else:
                on_delivery(hdrs, err, msg)

        self._reporters[topic] = (cell, report)
        return report

    def _batch_reporter(
        self, topic: str, base: list[tuple[str, Any]], first: int, values: list[bytes]
    ) -> Callable[[KafkaError | None, Message], None]:
        """One delivery callback for a whole encoded batch (no per-message ``partial``): a success bumps
        ``topic``'s counter; a failure finds its message's sequence from its value bytes (an index built on
        the batch's first failure; identical values share their sequences, one each) and rebuilds the
        headers it was sent with, so a re-send keeps ``k2.cid`` and ``k2.mid``.

        Hazard: the callback holds ``values`` until librdkafka has reported every message of the batch."""
        cell, on_delivery, prefix = self._reporters[topic][0], self._on_delivery, self._producer_id + b":"
        index: dict[bytes, list[int]] = {}

        def report(err: KafkaError | None, msg: Message) -> None:
            if err is None:
                cell[0] += 1
                return
            if not index:
                for position, value in enumerate(values):
                    index.setdefault(value, []).append(first + position)
            sequences = index.get(msg.value() or b"")
            sequence = sequences.pop(0) if sequences else first  # else: unreachable (a value of the batch)
            on_delivery([*base, (MID_HEADER, b"%s%d" % (prefix, sequence))], err, msg)

        return report

    def _publish_metrics(self) -> None:
        counts, self._delivered_by_topic = self._delivered_by_topic, {}
        for topic, (cell, _) in self._reporters.items():
            if cell[0]:
                counts[topic] = counts.get(topic, 0) + cell[0]
                cell[0] = 0
        if counts:
            self._last_progress = time.monotonic()
        for topic, count in counts.items():
            self.delivered += count
            self._m_delivered.labels(topic=topic).inc(count)
        self._m_depth.set(len(self._producer))

    def topic_for(self, record: RecordType, row: dict[str, Any]) -> str:
        key = (row["asset_class"], record.data_type.value, row["exchange"])
        topic = self._topics.get(key)
        if topic is None:
            topic = self._topics[key] = topic_name(*key)
        return topic

    def send(
        self,
        record: RecordType,
        row: dict[str, Any],
        topic: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Encode and enqueue one record; blocks (never drops) while the local queue is full."""
        if self._buffer:
            self._drain_buffer()
        if (
            "ingest_ts" in row
            and row["ingest_ts"] is None
            or "ingest_ts" not in row
            and any(f.name == "ingest_ts" for f in record.fields)
        ):
            row = {**row, "ingest_ts": now_micros()}
        target = topic or self.topic_for(record, row)
        value = self.encoder(record, target).encode(row)
        base = self._cid_headers if headers is None else list(headers.items())
        self.produce_raw(
            target,
            row["symbol"].encode(),
            value,
            self._with_message_id(base),
        )

    def _with_message_id(self, base: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """``base`` + this message's ``k2.mid`` header (the one place the message id is set; k2.bus.lineage)."""
        self.sequence += 1
        return [*base, message_id_header(self._producer_id, self.sequence)]

    def produce_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: dict[str, str] | list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Enqueue already-encoded bytes (DLQ, replay); blocks while the queue is full (never past the bound)."""
        hdrs: Any = list(headers.items()) if isinstance(headers, dict) else headers
        if not self._busy:  # the delivery clock starts when the first message waits, not at the last ack
            self._busy = True
            self._last_progress = time.monotonic()
        self._enqueue(topic, key, value, hdrs)
        self.sent += 1
        if self.sent % 1000 == 0:
            self._producer.poll(0)
            self.check()

    def dead_letter(self, source_topic: str, key: bytes | None, raw: bytes, reason: str, detail: str) -> None:
        """Send ``raw`` (an input that could not become a row of ``source_topic``) to ``<source_topic>.dlq``
        with the DLQ headers; the DLQ topic is ensured once per producer (when it creates topics)."""
        target = dlq_topic(source_topic)
        if self._create_topics and target not in self._dlq_topics:
            ensure_topics(self.settings, [target])
            self._dlq_topics.add(target)
        self.produce_raw(target, key, raw, dlq_headers(reason, detail, source_topic))

    def _enqueue(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        hdrs: Any,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        report = on_delivery or partial(self._on_delivery, hdrs)
        waited = 0.0
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=hdrs, on_delivery=report)
                break
            except BufferError:
                start = time.monotonic()
                self._producer.poll(0.05)
                waited += time.monotonic() - start
                self.check()
        if waited:
            self._m_blocked.inc(waited)

    def outstanding(self) -> int:
        """Messages sent but not acknowledged yet (queued, in flight or waiting to be re-sent)."""
        return len(self._producer) + len(self._resend) + sum(len(old) for old in self._retired)

    def check(self) -> None:
        """Serve delivery reports, recover a stuck producer, re-send; raise :class:`DeliveryError` past the bound.

        Cheap enough to call often (streams call it from their housekeeping tick).
        """
        now = time.monotonic()
        self._last_check = now
        self._producer.poll(0)
        for old in list(self._retired):  # a recreated handle's purge reports arrive on its own poll
            old.poll(0)
            if len(old) == 0:
                self._retired.remove(old)
        self._publish_metrics()
        if self.outstanding() == 0:
            self._busy = False
            self._last_progress = now
            return
        idle = now - self._last_progress
        if idle >= self.settings.producer_delivery_timeout_seconds:
            self._give_up(idle)
        stalled = (
            idle >= self.settings.producer_stall_seconds
            and now - self._last_recreate >= self.settings.producer_stall_seconds
        )
        if self._recreate_wanted or stalled:
            self._recreate(
                f"no acknowledgement for {idle:.1f}s"
                if stalled and not self._recreate_wanted
                else "producer state lost"
            )
        if self._resend and not self._resending:  # a check() nested in the re-send loop only recreates
            self._resending = True
            try:
                while self._resend:
                    pending, self._resend = self._resend, []
                    for topic, key, value, hdrs in pending:
                        self._enqueue(topic, key, value, hdrs)
            finally:
                self._resending = False

    def _give_up(self, idle: float) -> None:
        waiting = self.outstanding()
        message = (
            f"expected the broker at {self.settings.bootstrap_servers} to acknowledge messages within "
            f"{self.settings.producer_delivery_timeout_seconds:g}s (K2_PRODUCER_DELIVERY_TIMEOUT_SECONDS), found "
            f"{waiting} messages unacknowledged for {idle:.0f}s after {self.recreated} producer restarts"
        )
        self.errors.append(("(producer)", message))
        raise DeliveryError([("(producer)", message)], message)

    def _recreate(self, why: str) -> None:
        """Replace the librdkafka handle; every message it had not acknowledged is queued for re-sending."""
        old = self._producer
        old.purge(in_queue=True, in_flight=True, blocking=False)
        old.poll(0)  # the purge's delivery reports move the messages to self._resend
        if len(old):
            self._retired.append(old)  # polled by check() until every report has come back
        self._producer = self._new_producer()
        self._recreate_wanted = False
        self._last_recreate = time.monotonic()
        self.recreated += 1
        self._m_recreated.inc()
        log.warning("producer_recreated", reason=why, resend=len(self._resend), restarts=self.recreated)

    def send_many(
        self,
        record: RecordType,
        rows: Iterable[dict[str, Any]],
        topic: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> int:
        """Send many records; returns how many were enqueued. Each topic's rows (in their order) are encoded
        column-wise (:meth:`k2.bus.serde.AvroEncoder.encode_many`); rows without ``ingest_ts`` get the batch's
        send time. ``headers`` replace the ``k2.cid`` header, as in :meth:`send`; every message still gets
        its own ``k2.mid``. Rows held by :meth:`send_buffered` go first, so the order of a topic is kept."""
        self._drain_buffer()
        batch = rows if isinstance(rows, list) else list(rows)
        if topic is not None or len(batch) < 16:
            groups = {topic: batch}
        else:
            identities = list(map(itemgetter("asset_class", "exchange"), batch))
            if len(set(identities)) == 1:
                groups = {self.topic_for(record, batch[0]): batch}
            else:  # several topics: one batch per topic, each in the callers' order
                groups = {}
                for row in batch:
                    groups.setdefault(self.topic_for(record, row), []).append(row)
        for target, group in groups.items():
            self._send_batch(record, group, target, headers)
        return len(batch)

    def _send_batch(
        self,
        record: RecordType,
        batch: list[dict[str, Any]],
        target: str | None,
        headers: dict[str, str] | None,
    ) -> None:
        if target is None or len(batch) < 16:
            for row in batch:
                self.send(record, row, target, headers)
            return
        values = self.encoder(record, target).encode_many(batch, _ingest_fill(record))
        self._send_encoded(target, [s.encode() for s in map(itemgetter("symbol"), batch)], values, headers)

    def send_table(
        self,
        record: RecordType,
        table: pa.Table,
        topic: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> int:
        """Send the rows of a canonical Arrow table (:mod:`k2.model.arrow`) as :meth:`send_many` sends rows,
        encoded straight from the columns (:mod:`k2.bus.avro_columns`): no dict per row.

        Raises :class:`k2.bus.avro_encode.NotUniform`, with nothing sent, when the columns are not the
        canonical ones or (without ``topic``) the rows are for more than one topic: the caller then sends
        wire-form rows with :meth:`send_many`. ``ingest_ts`` nulls get the batch's send time."""
        self._drain_buffer()
        if table.num_rows == 0:
            return 0
        target = topic
        if target is None:
            found = [pc.unique(table[name]).to_pylist() for name in ("asset_class", "exchange")]
            if any(len(values) != 1 for values in found):
                raise NotUniform(f"expected the rows of one topic, found asset classes and exchanges {found}")
            target = self.topic_for(record, {"asset_class": found[0][0], "exchange": found[1][0]})
        values = self.encoder(record, target).encode_table(table, _ingest_fill(record))
        self._send_encoded(target, table["symbol"].cast(pa.binary()).to_pylist(), values, headers)
        return table.num_rows

    def send_arrow(
        self,
        record: RecordType,
        table: pa.Table,
        topic: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> int:
        """Send any Arrow table of ``record`` in order, ``_BUFFER_ROWS`` rows at a time: each slice from its
        columns (:meth:`send_table`), or, when the column path refuses it (not the canonical columns, rows of
        several topics), as wire-form rows (:meth:`send_many`). Null ``ingest_ts`` get the send time."""
        for start in range(0, table.num_rows, _BUFFER_ROWS):
            batch = table.slice(start, _BUFFER_ROWS)
            try:
                self.send_table(record, batch, topic, headers)
            except NotUniform:
                self.send_many(record, arrow_to_records(record, batch), topic, headers)
        return table.num_rows

    def send_buffered(self, record: RecordType, row: dict[str, Any]) -> None:
        """Hold ``row`` and send the held rows with :meth:`send_many` once ``_BUFFER_ROWS`` are held (or
        another record type comes, or :meth:`send`, :meth:`send_many`, :meth:`flush` is called).

        For sources that make one row at a time (the Tardis depth importers). Hazard: a held row is not
        in librdkafka's queue yet, so nothing is sent until the buffer fills or the caller flushes; a
        producer closed with ``flush=False`` drops the held rows (as it drops unacknowledged ones)."""
        if self._buffer_record is not record:
            self._drain_buffer()
            self._buffer_record = record
        self._buffer.append(row)
        if len(self._buffer) >= _BUFFER_ROWS:
            self._drain_buffer()

    def _drain_buffer(self) -> None:
        if self._buffer and self._buffer_record is not None:
            held, self._buffer = self._buffer, []
            self.send_many(self._buffer_record, held)

    def _send_encoded(
        self, topic: str, keys: list[bytes], values: list[bytes], headers: dict[str, str] | None
    ) -> None:
        """Enqueue a batch encoded column-wise (:meth:`send_many`, :meth:`send_table`): ``headers`` replace the
        ``k2.cid`` header, as in :meth:`send`."""
        base = self._cid_headers if headers is None else list(headers.items())
        self._produce_encoded(topic, keys, values, base)
        self.sent_in_batches += len(values)

    def _produce_encoded(
        self, topic: str, keys: list[bytes], values: list[bytes], base: list[tuple[str, Any]]
    ) -> None:
        """Enqueue one topic's encoded messages, each with the ``base`` headers (``k2.cid``) and its own
        ``k2.mid`` (``producer:sequence``, as :func:`k2.bus.lineage.message_id_header` makes it). The hot
        loop is one ``produce()`` per message; a full queue falls back to :meth:`_enqueue` (blocks, never
        drops) and delivery reports are served every 1,000 messages, as :meth:`produce_raw` does."""
        if not self._busy:
            self._busy = True
            self._last_progress = time.monotonic()
        self._reporter(topic)
        prefix, sequence, sent = self._producer_id + b":", self.sequence, self.sent
        on_delivery = self._batch_reporter(topic, base, sequence + 1, values)
        produce = self._producer.produce
        try:
            for key, value in zip(keys, values, strict=True):
                sequence += 1
                hdrs: list[tuple[str, Any]] = [*base, (MID_HEADER, b"%s%d" % (prefix, sequence))]
                sent += 1
                try:
                    produce(topic, value, key, on_delivery=on_delivery, headers=hdrs)
                except BufferError:
                    self.sequence, self.sent = sequence, sent
                    self._enqueue(topic, key, value, hdrs, on_delivery)
                    produce = self._producer.produce  # a check() may have recreated the handle
                if sent % 1000 == 0:
                    self.sequence, self.sent = sequence, sent
                    self._producer.poll(0)
                    self.check()
                    produce = self._producer.produce
        finally:
            self.sequence, self.sent = sequence, sent

    def flush(self, timeout: float | None = None) -> None:
        """Wait for every delivery report, recovering as :meth:`check` does; raise :class:`DeliveryError`.

        Raises when a message failed for good, or when nothing was acknowledged for the delivery bound
        (or ``timeout`` seconds, when given) while messages wait.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self._drain_buffer()
        while self.outstanding():
            self._producer.flush(0.2)
            self.check()
            if deadline is not None and time.monotonic() > deadline and self.outstanding():
                raise DeliveryError(
                    [("(queue)", f"{self.outstanding()} messages still unacknowledged after {timeout}s")]
                )
        self._publish_metrics()
        self._busy = False
        if self.errors:
            errors, self.errors = self.errors, []
            raise DeliveryError(errors)

    def close(self, timeout: float | None = None, flush: bool = True) -> None:
        """Flush (see :meth:`flush`; skipped with ``flush=False``), then release the librdkafka handle; idempotent.

        When the flush fails the handle is released anyway (unacknowledged messages are dropped from
        this process) and the error is raised.
        """
        if self._closed:
            return
        try:
            if flush:
                self.flush(timeout)
        finally:
            self._closed = True
            self._producer.purge(in_queue=True, in_flight=True, blocking=False)
            self._producer.poll(0)
            self._resend, self._retired, self._buffer = [], [], []
            del self._producer

    def __enter__(self) -> MarketDataProducer:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:  # keep the caller's exception, not a second one; after a DeliveryError do not wait again
            failed = isinstance(exc_type, type) and issubclass(exc_type, DeliveryError)
            with contextlib.suppress(Exception):
                self.close(10.0, flush=not failed)
