"""K2 reads only its own dead-letter topics (issue 10): on a shared cluster another application's ``*.dlq``
topic, with a message in it, is not listed by ``k2 dlq list`` / ``/v1/dlq`` nor counted by ``k2 status``
(a real Tansu broker of its own, so the listing is exactly what this test wrote)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
from k2.ops.status import collect_status
from k2.telemetry.procs import free_port
from tests.api.dlq_helpers import dlq_env
from tests.api.helpers import serve


@pytest.fixture
def own_broker(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    port = free_port()
    proc = tansu_process(port, tmp_path / "tansu-foreign.log").start()
    try:
        yield settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{port}"})
    finally:
        proc.stop()


def _letter(settings: Settings, topic: str) -> None:
    ensure_topics(settings, [topic], partitions=1)
    producer = Producer(settings.kafka_client_config())
    headers = dlq_headers("avro_decode", "expected an Avro body", topic.removesuffix(".dlq"), 0, 0)
    producer.produce(topic, key=b"BTCUSDT", value=b"\x00not avro", headers=headers)
    assert producer.flush(10) == 0


def test_a_foreign_dlq_topic_is_not_listed(own_broker: Settings, unique: str) -> None:
    settings = own_broker
    ours = f"market.crypto.trades.own{unique}.dlq"
    foreign = "other.app.dlq"
    _letter(settings, ours)
    _letter(settings, foreign)  # looks like a K2 letter, headers and all: only its name says it is not ours

    letters = read_dead_letters(settings, idle_seconds=0.5)
    assert {d.dlq_topic for d in letters} == {ours}
    with pytest.raises(KeyError, match="expected a DLQ topic"):
        read_dead_letters(settings, foreign, idle_seconds=0.5)

    listed = CliRunner().invoke(app, ["dlq", "list"], env=dlq_env(settings))
    assert listed.exit_code == 0, listed.output
    assert ours in listed.output and foreign not in listed.output

    assert set(collect_status(settings)["dlq"]) == {ours}

    admin_key, _ = KeyStore.from_settings(settings).create("admin", "admin")
    with (
        serve(settings) as server,
        httpx.Client(base_url=server.url, timeout=60, headers={"X-API-Key": admin_key}) as c,
    ):
        response = c.get("/v1/dlq")
        assert response.status_code == 200, response.text
        assert {row["dlq_topic"] for row in response.json()["data"]} == {ours}
