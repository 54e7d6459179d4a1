"""Topic naming and creation: ``market.<asset_class>.<data_type>.<exchange>`` (key = symbol).

Example:
    >>> topic_name("crypto", "trades", "binance")
    'market.crypto.trades.binance'
    >>> dlq_topic("market.crypto.trades.binance")
    'market.crypto.trades.binance.dlq'
    >>> parse_topic("market.crypto.trades.binance")
    ('crypto', 'trades', 'binance')
"""

from __future__ import annotations

import re
import time
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from k2.config import Settings
from k2.model import AssetClass, DataType

_TOPIC = re.compile(r"^market\.([a-z]+)\.([a-z]+)\.([a-z0-9_-]+)$")


def topic_name(asset_class: str, data_type: str, exchange: str) -> str:
    """The topic for one venue's data of one type."""
    AssetClass(asset_class)
    DataType(data_type)
    if not re.fullmatch(r"[a-z0-9_-]+", exchange):
        raise ValueError(f"expected a lower-case exchange code, found {exchange!r}")
    return f"market.{asset_class}.{data_type}.{exchange}"


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of ``topic``."""
    return f"{topic}.dlq"


def is_dlq_topic(topic: str) -> bool:
    """Whether ``topic`` is one of K2's dead-letter topics: ``market.<asset_class>.<data_type>.<exchange>.dlq``.

    The one place that says which ``*.dlq`` topics are K2's (every K2 writer dead-letters to
    :func:`dlq_topic` of a market topic): ``k2 dlq``, ``/v1/dlq`` and ``k2 status`` read only these, so on a
    shared cluster another application's ``*.dlq`` topics are never listed, counted or replayed.

    >>> is_dlq_topic("market.crypto.trades.binance.dlq"), is_dlq_topic("other.app.dlq")
    (True, False)
    >>> is_dlq_topic("market.crypto.trades.binance"), is_dlq_topic("market.weather.rain.binance.dlq")
    (False, False)
    """
    if not topic.endswith(".dlq"):
        return False
    match = _TOPIC.match(topic.removesuffix(".dlq"))
    if match is None:
        return False
    return match.group(1) in {a.value for a in AssetClass} and match.group(2) in {d.value for d in DataType}


def parse_topic(topic: str) -> tuple[str, str, str]:
    """(asset_class, data_type, exchange) of a market topic; ValueError for other names."""
    match = _TOPIC.match(topic)
    if match is None:
        raise ValueError(f"expected market.<asset_class>.<data_type>.<exchange>, found {topic!r}")
    return match.group(1), match.group(2), match.group(3)


class BrokerUnavailableError(KafkaException):
    """No Kafka broker answered at the configured bootstrap servers.

    A :class:`~confluent_kafka.KafkaException`, so every caller that already waits out a broker outage
    (live feeds, the landing consumer, the rejects file) keeps doing so; its message says what was expected.
    """


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(settings.kafka_client_config())


def _metadata(admin: AdminClient, settings: Settings, timeout: float) -> Any:
    try:
        return admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailableError(
            f"expected a Kafka broker at {settings.bootstrap_servers}, found none answering within "
            f"{timeout:g} s ({exc.args[0].str() if exc.args and hasattr(exc.args[0], 'str') else exc}); "
            "start the local stack with `k2 up` or set K2_KAFKA_BOOTSTRAP_SERVERS"
        ) from None


def list_topics(settings: Settings, timeout: float = 10.0) -> dict[str, int]:
    """Topic name -> partition count, as the broker reports them (BrokerUnavailableError: no broker)."""
    metadata = _metadata(admin_client(settings), settings, timeout)
    return {name: len(t.partitions) for name, t in metadata.topics.items() if not name.startswith("__")}


def ensure_topics(
    settings: Settings, topics: list[str], partitions: int | None = None, timeout: float = 15.0
) -> None:
    """Create missing topics with ``topic_partitions`` partitions (idempotent)."""
    admin = admin_client(settings)
    existing = set(_metadata(admin, settings, timeout).topics)
    wanted = [t for t in dict.fromkeys(topics) if t not in existing]
    if not wanted:
        return
    futures = admin.create_topics(
        [
            NewTopic(
                t,
                num_partitions=partitions or settings.topic_partitions,
                replication_factor=settings.topic_replication_factor,
            )
            for t in wanted
        ],
        operation_timeout=timeout,
    )
    for future in futures.values():
        try:
            future.result()
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if set(wanted) <= set(admin.list_topics(timeout=timeout).topics):
            return
        time.sleep(0.1)
    raise TimeoutError(f"expected topics {wanted} to exist after creation, found them missing")
