"""A dead-letter read that stops before the broker-reported end says so: the read, ``k2 dlq list``
and ``/v1/dlq`` (a real Tansu broker of its own with letters in it, so other tests' "no dead letters"
hold; the read is stopped early by a limit or a zero time budget)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from k2.api.keys import KeyStore
from k2.bus.broker import tansu_process
from k2.bus.dlq import dlq_headers
from k2.bus.topics import ensure_topics
from k2.cli import app
from k2.config import Settings
from k2.landing.dlq import read_dead_letters
from k2.telemetry.procs import free_port
from tests.api.helpers import serve
from tests.support.broker import stop_memory_broker

LETTERS = 5


@pytest.fixture
def own_broker(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    port = free_port()
    proc = tansu_process(port, tmp_path / "tansu-dlq.log").start()
    try:
        yield settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{port}"})
    finally:
        stop_memory_broker(proc)


def _letters(settings: Settings, unique: str) -> str:
    """A one-partition DLQ topic holding LETTERS letters, one batch each (Tansu reports the end of the last batch)."""
    topic = f"market.crypto.trades.part{unique}.dlq"
    ensure_topics(settings, [topic], partitions=1)
    producer = Producer(settings.kafka_client_config())
    for offset in range(LETTERS):
        headers = dlq_headers("avro_decode", "expected an Avro body", topic[:-4], 0, offset)
        producer.produce(topic, key=b"BTCUSDT", value=b"\x00not avro %d" % offset, headers=headers)
        assert producer.flush(10) == 0
    return topic


def _env(settings: Settings) -> dict[str, Any]:
    return {
        "K2_DATA_DIR": str(settings.data_dir),
        "K2_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "K2_SCHEMA_REGISTRY_URL": settings.registry_url,
        "COLUMNS": "300",
    }


def test_a_short_read_says_where_it_stopped(own_broker: Settings, unique: str) -> None:
    settings = own_broker
    topic = _letters(settings, unique)
    whole = read_dead_letters(settings, topic, idle_seconds=0.5)
    assert len(whole) == LETTERS and whole.complete and whole.stopped == []
    capped = read_dead_letters(settings, topic, limit=2, idle_seconds=0.5)
    assert len(capped) == 2 and not capped.complete
    [stop] = capped.stopped
    assert (stop.topic, stop.partition, stop.next_offset, stop.end) == (topic, 0, 2, LETTERS)
    assert f"stopped at offset 2 of {LETTERS} on partition 0" in capped.partial_message()
    timed_out = read_dead_letters(settings, topic, idle_seconds=0.5, max_seconds=0.0)
    assert not timed_out.complete and timed_out.stopped[0].next_offset == len(timed_out)

    runner = CliRunner()
    listed = runner.invoke(app, ["dlq", "list", "--topic", topic, "--limit", "2"], env=_env(settings))
    assert listed.exit_code == 0, listed.output
    assert f"partial: stopped at offset 2 of {LETTERS} on partition 0" in listed.stderr, listed.stderr
    assert "2 dead letters" in listed.stdout
    full = runner.invoke(app, ["dlq", "list", "--topic", topic], env=_env(settings))
    assert full.exit_code == 0 and "partial" not in full.stderr, full.stderr

    admin, _ = KeyStore.from_settings(settings).create("admin", "admin")
    with (
        serve(settings) as server,
        httpx.Client(base_url=server.url, headers={"X-API-Key": admin}, timeout=60) as c,
    ):
        body = c.get("/v1/dlq", params={"topic": topic, "limit": 2}).json()
        assert body["row_count"] == 2 and body["partial"] is True, body
        assert body["stopped_at"] == [{"topic": topic, "partition": 0, "offset": 2, "end": LETTERS}]
        assert f"stopped at offset 2 of {LETTERS} on partition 0" in body["partial_reason"]
        csv = c.get("/v1/dlq", params={"topic": topic, "limit": 2, "format": "csv"})
        assert csv.headers["x-partial"] == "true"
        complete = c.get("/v1/dlq", params={"topic": topic}).json()
        assert complete["row_count"] == LETTERS and complete["partial"] is False
        assert complete["stopped_at"] == []
