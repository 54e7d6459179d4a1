"""The tests' brokers: stopping private Tansu brokers (memory storage) without the graceful-shutdown wait,
and reading a topic's messages back raw."""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import Consumer

from k2.config import Settings
from k2.telemetry.procs import ManagedProcess


def stop_memory_broker(proc: ManagedProcess) -> None:
    """Stop a Tansu on memory storage at once (SIGKILL) and wait for it to exit.

    Its log dies with the process either way. SIGTERM (``ManagedProcess.stop``) waits for open client
    connections to drain: measured 5.05 s with one idle producer still connected, 0.06 s with none, and
    the tests' clients are often only closed by the garbage collector, so every private broker paid ~5 s
    at teardown. Not for brokers whose shutdown is under test or that keep their log (S3 storage).
    """
    proc.kill()


def consume_all(settings: Settings, topic: str, count: int) -> list[tuple[bytes, bytes, Any]]:
    """(value, key, headers) of the first ``count`` messages of ``topic`` (waits up to 120 s)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"g{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages: list[tuple[bytes, bytes, Any]] = []
    try:
        deadline = time.monotonic() + 120
        while len(messages) < count and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None:
                    messages.append((msg.value(), msg.key(), msg.headers()))
    finally:
        consumer.close()
    return messages
