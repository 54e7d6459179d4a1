"""A dead-letter read ends at the log end a fetch reported, not after an idle wait, and never early.

Real broker (the shared Tansu): a DLQ topic of four partitions, letters in several batches on one of
them, three never written. The read returns every letter and says it ended by the log end
(``DeadLetters.ended_by``); a quiet read finishes well within the idle wait (a ratio, not a timed bound).
"""

from __future__ import annotations

import time

from confluent_kafka import Producer

from k2.bus.dlq import dlq_headers
from k2.bus.topics import ensure_topics
from k2.config import Settings
from k2.landing.dlq import read_dead_letters, replayed_letters, replayed_topic

LETTERS = 30
IDLE = 3.0  # the fallback wait each read is given: a read ended by the log end takes a fraction of it


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


def test_a_read_returns_every_letter_and_ends_by_the_log_end(settings: Settings, unique: str) -> None:
    topic = _dlq(settings, unique)
    for _ in range(3):
        letters = read_dead_letters(settings, topic, idle_seconds=IDLE)
        assert [d.value for d in letters] == [b"letter %d" % i for i in range(LETTERS)]
        assert letters.complete and letters.ended_by == "log_end"


def test_a_quiet_read_finishes_well_within_the_idle_wait(settings: Settings, unique: str) -> None:
    topic = _dlq(settings, unique, letters=5, partitions=2)
    read_dead_letters(settings, topic, idle_seconds=IDLE)  # warm: topic metadata, connections
    started = time.monotonic()
    letters = read_dead_letters(settings, topic, idle_seconds=IDLE)
    took = time.monotonic() - started
    assert len(letters) == 5 and letters.ended_by == "log_end"
    assert took < IDLE / 2, (
        f"expected a read ended by the log end to take under half the idle wait, took {took:.2f} s"
    )


def test_a_limited_read_is_still_partial_and_says_so(settings: Settings, unique: str) -> None:
    topic = _dlq(settings, unique)
    capped = read_dead_letters(settings, topic, limit=25, idle_seconds=IDLE)
    assert len(capped) == 25 and not capped.complete and capped.ended_by is None
    [stop] = capped.stopped
    # The end named is the log end a fetch reported (30), not Tansu's ListOffsets minimum (21).
    assert (stop.partition, stop.next_offset, stop.end) == (1, 25, LETTERS)


def test_replay_markers_are_read_to_the_log_end(settings: Settings, unique: str) -> None:
    dlq = f"market.crypto.trades.rm{unique}.dlq"
    topic = replayed_topic(dlq)
    ensure_topics(settings, [dlq, topic], partitions=1)
    producer = Producer(settings.kafka_client_config())
    for offset in range(LETTERS):
        producer.produce(topic, key=b"0:%d" % offset, value=b'{"replayed_ts": 1, "to": "x"}')
        if offset % 10 == 9:
            assert producer.flush(30) == 0
    started = time.monotonic()
    found = replayed_letters(settings, [dlq], idle_seconds=IDLE)
    took = time.monotonic() - started
    assert sorted(found) == [(dlq, 0, offset) for offset in range(LETTERS)]
    assert took < IDLE / 2, f"expected the marker read to end by the log end, took {took:.2f} s"
