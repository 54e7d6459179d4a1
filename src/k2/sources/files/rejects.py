"""Where bad lines of a vendor file go: the DLQ topic, or a local rejects file when no broker answers.

Each bad line becomes one record on ``<topic>.dlq`` (``<topic>`` is the topic the file's rows would use,
e.g. ``market.crypto.trades.binance``) with the raw line bytes as value, the symbol as key and the usual
DLQ headers (:func:`k2.bus.dlq.dlq_headers`: reason, detail, source partition/offset ``-1``) plus
``k2.source.file`` and ``k2.source.line``.

Choice for direct-to-Iceberg imports when no broker is reachable: the bad lines are written to
``<data_dir>/rejects/<topic>.dlq/<file>.<sha256[:12]>.jsonl`` (one JSON object per line: file, line,
reason, detail, raw text) and the import says so, rather than failing a bulk backfill for want of a
broker. Either way the rejects are persisted (DLQ flushed / file synced) *before* the rows around them
are committed, so no line is ever neither imported nor rejected. Re-importing a file rejects its bad
lines again. "No broker" is decided at once: when no bootstrap address accepts a TCP connection within
half a second the local file is used (no multi-second Kafka probe per import).

Example:
    >>> headers = file_headers("x.csv", 7)
    >>> headers
    [('k2.source.file', b'x.csv'), ('k2.source.line', b'7')]
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from k2.bus.dlq import dlq_headers
from k2.bus.producer import MarketDataProducer
from k2.bus.topics import dlq_topic, ensure_topics
from k2.config import Settings
from k2.sources.files.parse import BadRow
from k2.telemetry.metrics import metric

FILE_HEADER = "k2.source.file"
LINE_HEADER = "k2.source.line"
SAMPLES = 10


def file_headers(file_name: str, line: int) -> list[tuple[str, bytes]]:
    """The extra DLQ headers naming the source file and line."""
    return [(FILE_HEADER, file_name.encode()), (LINE_HEADER, str(line).encode())]


def broker_answers(bootstrap: str, timeout: float = 0.5) -> bool:
    """Whether any ``host:port`` of ``bootstrap`` accepts a TCP connection within ``timeout`` seconds.

    >>> broker_answers(""), broker_answers("127.0.0.1:1")
    (False, False)
    """
    for server in (s.strip() for s in bootstrap.split(",")):
        host, _, port = server.rpartition(":")
        if not host or not port.isdigit():
            continue
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                return True
        except OSError:
            continue
    return False


class RejectSink:
    """Collects a file's bad lines and persists them (DLQ topic or local file) on :meth:`flush`."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        file_name: str,
        sha256: str,
        key: str,
        producer: MarketDataProducer | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.dlq = dlq_topic(topic)
        self.file_name = file_name
        self.sha256 = sha256
        self.key = key.encode()
        self._producer = producer
        self._own_producer = False
        self._pending: list[BadRow] = []
        self.count = 0
        self.by_reason: dict[str, int] = {}
        self.destination: str | None = None  # "dlq:<topic>" or the local file path
        self.samples: list[str] = []  # the first bad lines, for the user
        self._metric = metric("k2_source_errors_total")

    def add(self, rows: list[BadRow]) -> None:
        self._pending.extend(rows)

    def _broker(self) -> MarketDataProducer | None:
        if self._producer is not None:
            return self._producer
        if not broker_answers(self.settings.bootstrap_servers):
            return None  # no broker configured or none accepts a connection at once: the local file, no wait
        # A quiet probe (librdkafka would log every refused connection): is the broker answering Kafka?
        probe = AdminClient({**self.settings.kafka_client_config(), "log_level": 0})
        try:
            probe.list_topics(timeout=5.0)
            ensure_topics(self.settings, [self.dlq])
        except (KafkaException, TimeoutError):
            return None
        self._producer = MarketDataProducer(self.settings, create_topics=False)
        self._own_producer = True
        return self._producer

    def flush(self) -> None:
        """Persist pending bad lines (DLQ when a broker answers, else the local rejects file)."""
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        producer = self._broker() if self.destination is None or self.destination.startswith("dlq:") else None
        if producer is not None:
            ensure_topics(self.settings, [self.dlq])
            for row in rows:
                headers = dlq_headers(
                    row.reason,
                    f"{self.file_name}:{row.line}: {row.detail}",
                    self.topic,
                    original=file_headers(self.file_name, row.line),
                )
                producer.produce_raw(self.dlq, self.key, row.raw, headers)
            producer.flush()
            self.destination = f"dlq:{self.dlq}"
        else:
            folder = self.settings.data_dir / "rejects" / self.dlq
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{Path(self.file_name).name}.{self.sha256[:12]}.jsonl"
            with path.open("a", encoding="utf-8") as out:
                for row in rows:
                    out.write(
                        json.dumps(
                            {
                                "file": self.file_name,
                                "line": row.line,
                                "reason": row.reason,
                                "detail": row.detail,
                                "topic": self.topic,
                                "raw": row.raw.decode("utf-8", errors="backslashreplace"),
                            }
                        )
                        + "\n"
                    )
                out.flush()
                os.fsync(out.fileno())
            self.destination = str(path)
        for row in rows:
            self.by_reason[row.reason] = self.by_reason.get(row.reason, 0) + 1
            if len(self.samples) < SAMPLES:
                self.samples.append(f"{self.file_name}:{row.line}: {row.reason}: {row.detail}")
            self._metric.labels(source=f"file:{self.topic}", reason=row.reason).inc()
        self.count += len(rows)

    def close(self) -> None:
        self.flush()
        if self._own_producer and self._producer is not None:
            self._producer.close()  # flushes, then releases the handle (a leaked one logs at exit)
