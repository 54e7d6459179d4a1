"""The producer after a broker restart: it recovers and every message lands once, or it fails loudly in time.

Real servers only: Tansu on ``s3://`` storage in a real SeaweedFS (so the log survives the SIGKILL),
K2's registry, the real landing consumer, and ``k2 import --via-kafka`` as a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from k2.bus import MarketDataProducer
from k2.bus.broker import tansu_process
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.landing import LandingConsumer
from k2.model import TRADE
from k2.telemetry.procs import ManagedProcess, free_port
from tests.landing.helpers import make_trades, table_keys
from tests.support.seaweed import SeaweedServer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def seaweed() -> Iterator[SeaweedServer]:
    server = SeaweedServer(buckets=("k2-broker",)).start()
    yield server
    server.stop()


def _broker(port: int, log: Path, seaweed: SeaweedServer) -> ManagedProcess:
    return tansu_process(port, log, storage="s3://k2-broker/", s3_env=seaweed.env()).start()


def _land_all(settings: Settings, expected: int, timeout: float = 120.0) -> list[tuple[str, str, int]]:
    table = ensure_tables(load_catalog(settings), settings)["trades"]
    landing = LandingConsumer(settings)
    deadline = time.monotonic() + timeout
    try:
        landing.subscribe()
        while time.monotonic() < deadline:
            landing.poll_once(0.5)
            if landing.stats.landed + landing.stats.duplicates >= expected:
                landing.flush()
                break
        landing.flush()
    finally:
        landing.close()
    return table_keys(table)


def test_broker_sigkilled_and_restarted_mid_produce_every_message_lands_once(
    tmp_path: Path, seaweed: SeaweedServer, schema_registry: str
) -> None:
    port = free_port()
    broker = _broker(port, tmp_path / "tansu.log", seaweed)
    settings = Settings(
        data_dir=tmp_path / "k2",
        kafka_bootstrap_servers=f"127.0.0.1:{port}",
        schema_registry_url=schema_registry,
        consumer_session_timeout_ms=2000,
        landing_commit_interval_seconds=0.5,
        landing_metrics_port=0,
    )  # fmt: skip (default producer settings, so the same test runs against main's producer)
    rows = make_trades("BTCUSDT", 1_000, 12_000) + make_trades("ETHUSDT", 50_000, 12_000)
    producer = MarketDataProducer(settings)
    try:
        for row in rows[:2_000]:
            producer.send(TRADE, row)
        producer.flush()  # the topic exists and holds these on the durable log
        topic = producer.topic_for(TRADE, rows[0])
        encoder = producer.encoder(TRADE, topic)
        for first in range(2_000, 20_000, 6_000):  # three SIGKILLs + restarts, each mid-produce
            for row in rows[first : first + 6_000]:  # pre-encoded, so they are queued within milliseconds
                producer.produce_raw(topic, row["symbol"].encode(), encoder.encode({**row, "ingest_ts": 1}))
            producer.check() if hasattr(producer, "check") else producer._producer.poll(0)
            broker.kill()  # most of these are queued or in flight
            broker = _broker(port, tmp_path / "tansu.log", seaweed)
        started = time.monotonic()
        for row in rows[20_000:]:
            producer.send(TRADE, row)
        producer.flush()  # on main: stuck on UnknownProducerId until the 120 s message timeout
        assert time.monotonic() - started < 45, (
            "expected the producer to recover well within the delivery bound"
        )
    finally:
        producer.close(flush=False)
    keys = _land_all(settings, len(rows))
    broker.stop()
    expected = sorted(("binance", r["symbol"], r["trade_id"]) for r in rows)
    assert keys == expected  # every message once: nothing lost, re-sends deduplicated


def _write_trades_csv(path: Path, count: int) -> None:
    with path.open("w") as out:
        for i in range(count):
            ms = 1609632000000 + i // 10
            out.write(f"{540_000_000 + i},32176.45000000,0.01039300,334.40984485,{ms},True,True\n")


def test_broker_gone_for_good_import_via_kafka_exits_non_zero_within_the_bound(
    tmp_path: Path, schema_registry: str
) -> None:
    port = free_port()
    broker = tansu_process(port, tmp_path / "tansu.log").start()
    source = tmp_path / "BTCUSDT-trades-2021-01-03.csv"
    _write_trades_csv(source, 600_000)
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update(
        K2_CONFIG_FILE=os.environ["K2_CONFIG_FILE"], K2_DATA_DIR=str(tmp_path / "k2"),
        K2_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}", K2_SCHEMA_REGISTRY_URL=schema_registry,
        K2_PRODUCER_DELIVERY_TIMEOUT_SECONDS="10", K2_PRODUCER_STALL_SECONDS="2",
    )  # fmt: skip
    command = [
        sys.executable,
        "-m",
        "k2.cli",
        "import",
        "binance-trades",
        str(source),
        "--via-kafka",
        "--quiet",
    ]
    job = subprocess.Popen(
        command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for_first_message(f"127.0.0.1:{port}", "market.crypto.trades.binance", job)
        broker.kill()  # gone for good, mid-import
        killed = time.monotonic()
        out, err = job.communicate(timeout=90)  # on main: blocks on the full queue, then the 120 s timeouts
        elapsed = time.monotonic() - killed
    finally:
        if job.poll() is None:
            job.kill()
        broker.stop()
    assert job.returncode != 0, out[-2000:] + err[-2000:]
    assert elapsed < 10 + 20, (
        f"expected the import to give up within the 10 s bound (+ slack), took {elapsed:.0f}s"
    )
    assert (
        "delivery error: expected the broker at" in err and "K2_PRODUCER_DELIVERY_TIMEOUT_SECONDS" in err
    ), err[-3000:]
    assert "Traceback" not in err, err[-3000:]


def _wait_for_first_message(
    bootstrap: str, topic: str, job: subprocess.Popen[str], timeout: float = 60.0
) -> None:
    """Block until ``topic`` holds a message (the import is producing)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe", "log_level": 0})
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            assert job.poll() is None, (
                f"expected the import to be running, found it exited with {job.returncode}"
            )
            topics = consumer.list_topics(timeout=5).topics
            if topic in topics:
                for p in topics[topic].partitions:
                    if consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] > 0:
                        return
            time.sleep(0.05)
    finally:
        consumer.close()
    raise TimeoutError(f"expected the import to produce to {topic} within {timeout}s, found nothing")


def test_broker_restarted_empty_the_producer_delivers_again_instead_of_unknown_producer_id_forever(
    tmp_path: Path, schema_registry: str
) -> None:
    """The issue's case: a restarted memory:// broker forgets producer ids; new messages must still go through."""
    from confluent_kafka.admin import AdminClient, NewTopic

    port = free_port()
    broker = tansu_process(port, tmp_path / "tansu.log").start()
    bootstrap = f"127.0.0.1:{port}"
    settings = Settings(
        data_dir=tmp_path / "k2", kafka_bootstrap_servers=bootstrap, schema_registry_url=schema_registry
    )

    def create_topic() -> None:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("restart-test", 2, 1)])["restart-test"].result()

    create_topic()
    producer = MarketDataProducer(settings, create_topics=False)
    try:
        for i in range(2_000):
            producer.produce_raw("restart-test", b"k%d" % (i % 7), b"before-%d" % i)
        producer.flush()
        broker.kill()
        broker = tansu_process(port, tmp_path / "tansu.log").start()  # empty: memory storage
        create_topic()  # as `k2 up` + the first producer of the topic would
        started = time.monotonic()
        for i in range(2_000):
            producer.produce_raw("restart-test", b"k%d" % (i % 7), b"after-%d" % i)
        producer.flush()  # on main: UnknownProducerId retried until every message times out (120 s)
        assert time.monotonic() - started < 60
    finally:
        broker.stop()
        if hasattr(producer, "close"):
            producer.close(flush=False)


def test_a_registry_restarted_under_a_running_producer_is_waited_for(
    tmp_path: Path, broker: str, unique: str
) -> None:
    """A stream registered its trade schema, then the stack was restarted before its first quote: the
    quote's registration waits for the registry to come back instead of killing the stream (seen in the
    durable-stack test at load 25: `RegistryUnavailableError ... registering Quote`). A registry that
    never answered still fails at once."""
    import threading

    from k2.bus.registry.server import registry_process
    from k2.bus.serde import RegistryUnavailableError
    from k2.model import QUOTE
    from tests.support.factories import wire_quote

    port = free_port()
    store, log = f"sqlite:///{tmp_path / 'registry.db'}", tmp_path / "registry.log"
    registry = registry_process(port, store, log).start()
    settings = Settings(
        data_dir=tmp_path / "k2",
        kafka_bootstrap_servers=broker,
        schema_registry_url=f"http://127.0.0.1:{port}",
        producer_delivery_timeout_seconds=60.0,
    )
    exchange = f"rr{unique}"
    restarted: list[ManagedProcess] = []
    timer = threading.Timer(15.0, lambda: restarted.append(registry_process(port, store, log).start()))
    try:
        with MarketDataProducer(settings) as producer:
            producer.send(TRADE, make_trades("BTCUSDT", 1, 1, exchange=exchange)[0])
            registry.stop()
            timer.start()
            producer.send(QUOTE, wire_quote(exchange, 1, 1_723_161_600_000_000))
            timer.join()
            producer.flush()  # raises DeliveryError if the quote was not delivered
        assert restarted, "the quote was registered before the registry came back"
    finally:
        timer.cancel()  # a failing run must not leave a registry started after the test
        if timer.is_alive():
            timer.join()
        for proc in [registry, *restarted]:
            proc.stop()
    dead = settings.model_copy(update={"schema_registry_url": f"http://127.0.0.1:{free_port()}"})
    started = time.monotonic()
    with MarketDataProducer(dead) as producer, pytest.raises(RegistryUnavailableError):
        producer.send(TRADE, make_trades("BTCUSDT", 1, 1, exchange=exchange)[0])
    assert time.monotonic() - started < 30  # never waited the 60 s delivery bound
