"""A dead-letter read ends at the log end a fetch reported, not after an idle wait, and never early.

A real Tansu broker of this module's own (letters on the shared one would break other tests' "no dead
letters"): a DLQ topic of four partitions, letters in several batches on one of
them, three never written. The read returns every letter and says it ended by the log end
(``DeadLetters.ended_by``); a quiet read finishes well within the idle wait (a ratio, not a timed bound).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from k2.bus.broker import tansu_process
from k2.bus.dlq import dlq_headers
from k2.bus.topics import ensure_topics
from k2.cli import app
from k2.config import Settings
from k2.landing.dlq import read_dead_letters, replayed_letters, replayed_topic
from k2.telemetry.procs import free_port
from tests.support.broker import stop_memory_broker

LETTERS = 30
IDLE = 6.0  # the fallback wait each read is given: a read ended by the log end takes a fraction of it


@pytest.fixture(scope="module")
def own_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    proc = tansu_process(port, tmp_path_factory.mktemp("dlq-read") / "tansu.log").start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_memory_broker(proc)


@pytest.fixture
def own(settings: Settings, own_bootstrap: str) -> Settings:
    return settings.model_copy(update={"kafka_bootstrap_servers": own_bootstrap})


def _dlq(settings: Settings, unique: str, letters: int = LETTERS, partitions: int = 4) -> str:
    """A K2 DLQ topic of ``partitions`` partitions holding ``letters`` letters on partition 1, in batches of 10."""
    topic = f"market.crypto.trades.rd{unique}.dlq"
    ensure_topics(settings, [topic], partitions=partitions)
    producer = Producer(settings.kafka_client_config())
    for offset in range(letters):
        headers = dlq_headers("avro_decode", "expected an Avro body", topic[:-4], 0, offset)
        producer.produce(topic, key=b"K", value=b"letter %d" % offset, headers=headers, partition=1)
        if offset % 10 == 9:
            assert producer.flush(30) == 0  # one batch per ten letters: Tansu's ListOffsets says 21, not 30
    assert producer.flush(30) == 0
    return topic


def test_a_read_returns_every_letter_and_ends_by_the_log_end(own: Settings, unique: str) -> None:
    topic = _dlq(own, unique)
    for _ in range(3):
        letters = read_dead_letters(own, topic, idle_seconds=IDLE)
        assert [d.value for d in letters] == [b"letter %d" % i for i in range(LETTERS)]
        assert letters.complete and letters.ended_by == "log_end"


def test_a_quiet_read_finishes_well_within_the_idle_wait(own: Settings, unique: str) -> None:
    topic = _dlq(own, unique, letters=5, partitions=2)
    read_dead_letters(own, topic, idle_seconds=IDLE)  # warm: topic metadata, connections
    started = time.monotonic()
    letters = read_dead_letters(own, topic, idle_seconds=IDLE)
    took = time.monotonic() - started
    assert len(letters) == 5 and letters.ended_by == "log_end"
    assert took < IDLE / 2, (
        f"expected a read ended by the log end to take under half the idle wait, took {took:.2f} s"
    )


def test_a_limited_read_is_still_partial_and_says_so(own: Settings, unique: str) -> None:
    topic = _dlq(own, unique)
    capped = read_dead_letters(own, topic, limit=25, idle_seconds=IDLE)
    assert len(capped) == 25 and not capped.complete and capped.ended_by is None
    [stop] = capped.stopped
    # The end named is the log end a fetch reported (30), not Tansu's ListOffsets minimum (21).
    assert (stop.partition, stop.next_offset, stop.end) == (1, 25, LETTERS)


def test_replay_markers_are_read_to_the_log_end(own: Settings, unique: str) -> None:
    dlq = f"market.crypto.trades.rm{unique}.dlq"
    topic = replayed_topic(dlq)
    ensure_topics(own, [dlq, topic], partitions=1)
    producer = Producer(own.kafka_client_config())
    for offset in range(LETTERS):
        producer.produce(topic, key=b"0:%d" % offset, value=b'{"replayed_ts": 1, "to": "x"}')
        if offset % 10 == 9:
            assert producer.flush(30) == 0
    started = time.monotonic()
    found = replayed_letters(own, [dlq], idle_seconds=IDLE)
    took = time.monotonic() - started
    assert sorted(found) == [(dlq, 0, offset) for offset in range(LETTERS)]
    assert took < IDLE / 2, f"expected the marker read to end by the log end, took {took:.2f} s"


def test_the_cli_says_on_stderr_when_a_dead_letter_read_is_partial(own: Settings, unique: str) -> None:
    """`k2 dlq list --limit` and `k2 dlq replay --limit` cut short: the letters shown or replayed are only those
    read, and stderr says where the read stopped (the same `_say_partial` as `k2 dlq show` of a letter beyond
    the read); stdout stays the listing. A read that got everything says nothing."""
    topic = _dlq(own, unique)
    env = {
        "K2_DATA_DIR": str(own.data_dir),
        "K2_KAFKA_BOOTSTRAP_SERVERS": own.bootstrap_servers,
        "K2_SCHEMA_REGISTRY_URL": own.registry_url,
        "COLUMNS": "300",
    }
    runner = CliRunner()
    stopped = (
        f"warning: partial: stopped at offset 25 of {LETTERS} on partition 1 of {topic}"  # the CLI's line
    )
    listed = runner.invoke(app, ["dlq", "list", "--topic", topic, "--limit", "25"], env=env)
    assert listed.exit_code == 0, listed.output
    assert "25 dead letters" in listed.stdout and stopped in listed.stderr
    assert stopped not in listed.stdout
    whole = runner.invoke(app, ["dlq", "list", "--topic", topic, "--limit", "100"], env=env)
    assert (
        whole.exit_code == 0 and f"{LETTERS} dead letters" in whole.stdout and "partial" not in whole.stderr
    )
    # Replay of a cut read: only what was read is considered (these letters are not valid trades: they stay).
    replayed = runner.invoke(app, ["dlq", "replay", "--topic", topic, "--limit", "25"], env=env)
    assert stopped in replayed.stderr, replayed.output
