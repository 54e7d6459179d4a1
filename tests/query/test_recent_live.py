"""A hybrid read of a topic that never goes quiet ends once it has read past the log's end at its start.

Before issue 15's change the Kafka half read until no message arrived for ``IDLE_SECONDS``: on a live
topic (a trade every few ms) it followed the stream until ``query_recent_timeout_seconds`` and then
flagged itself ``time_bound``. Now a partition is finished when a high watermark asked *after* the
read started is above the one asked at its start and the read got past it (everything present at the
start lies below it), or when it is quiet. Every row acknowledged before the read is still returned.
Real Tansu broker and K2's registry; nothing mocked.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from k2.bus.producer import MarketDataProducer
from k2.bus.serde import AvroEncoder, registry_client
from k2.bus.topics import ensure_topics, topic_name
from k2.config import Settings
from k2.model import TRADE
from k2.model.values import now_micros
from k2.query import recent
from tests.support.factories import wire_trade


def _stream(settings: Settings, topic: str, stop: threading.Event, acked: list[int]) -> None:
    """One trade every ~5 ms until ``stop``; ``acked`` gets each trade id the broker acknowledged."""
    encoder = AvroEncoder(registry_client(settings.registry_url), TRADE, topic)
    producer = Producer({**settings.kafka_client_config(), "linger.ms": 1, "acks": "all"})
    base = now_micros() - 60_000_000
    trade_id = 0

    def delivered(err: Any, msg: Any) -> None:
        if err is None:
            acked.append(int(msg.key()))

    while not stop.is_set():
        trade_id += 1
        row = {**wire_trade(topic.rsplit(".", 1)[1], trade_id, base + trade_id), "ingest_ts": base}
        producer.produce(topic, encoder.encode(row), key=str(trade_id).encode(), on_delivery=delivered)
        producer.poll(0)
        time.sleep(0.005)
    producer.flush(30)


def test_read_of_a_never_quiet_topic_ends_with_every_row_present_at_its_start(
    settings: Settings, unique: str
) -> None:
    exchange = f"lv{unique}"
    topic = topic_name("crypto", "trades", exchange)
    ensure_topics(settings.model_copy(update={"topic_partitions": 1}), [topic])
    settings = settings.model_copy(update={"query_recent_timeout_seconds": 10.0})
    stop, acked = threading.Event(), []
    producer = threading.Thread(target=_stream, args=(settings, topic, stop, acked), daemon=True)
    producer.start()
    try:
        deadline = time.monotonic() + 60
        while len(acked) < 200 and time.monotonic() < deadline:  # the stream is flowing
            time.sleep(0.05)
        for _ in range(3):
            before = set(acked)
            read = recent.read_recent(settings, "trades", {}, None, exchange)
            assert not read.truncated, (read.reason, read.seconds)
            assert before <= set(read.table["trade_id"].to_pylist())  # nothing present at the start missing
    finally:
        stop.set()
        producer.join(60)
    assert len(acked) > len(before)  # the stream was still flowing during the last read


def test_read_of_a_quiet_topic_ends_at_the_log_end_not_after_an_idle_wait(
    settings: Settings, unique: str
) -> None:
    """Four partitions, three never written: every one is finished by a fetch's log end, none by the wait."""
    exchange = f"lq{unique}"
    topic = topic_name("crypto", "trades", exchange)
    ensure_topics(settings.model_copy(update={"topic_partitions": 4}), [topic])
    base = now_micros() - 60_000_000
    rows = [{**wire_trade(exchange, i, base + i), "ingest_ts": base} for i in range(1, 301)]
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, rows)  # several batches, one partition (the symbol is the key)
    for _ in range(3):
        read = recent.read_recent(settings, "trades", {}, None, exchange)
        assert not read.truncated
        assert sorted(read.table["trade_id"].to_pylist()) == list(range(1, 301))
        assert read.ended_by == "log_end"


def test_tansu_fetch_high_watermark_is_the_log_end(settings: Settings, unique: str) -> None:
    """The broker fact :meth:`k2.query.recent._Part.passed` rests on (Tansu 0.6): a fetch response's high
    watermark is the log end, while ListOffsets answers the first offset of the last batch + 1."""
    topic = topic_name("crypto", "trades", f"lw{unique}")
    ensure_topics(settings.model_copy(update={"topic_partitions": 1}), [topic])
    producer = Producer(settings.kafka_client_config())
    for _ in range(3):  # three batches of 100
        for _ in range(100):
            producer.produce(topic, b"x", partition=0)
        producer.flush(30)
    consumer = Consumer({**settings.kafka_client_config(), "group.id": f"lw{unique}"})
    try:
        listed = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=30, cached=False)
        assert consumer.get_watermark_offsets(TopicPartition(topic, 0), cached=True)[1] < 0  # no fetch yet
        consumer.assign([TopicPartition(topic, 0, 250)])
        read = 0
        deadline = time.monotonic() + 30
        while read < 50 and time.monotonic() < deadline:
            read += len([m for m in consumer.consume(100, timeout=0.1) if m.error() is None])
        fetched = consumer.get_watermark_offsets(TopicPartition(topic, 0), cached=True)
    finally:
        consumer.close()
    assert read == 50
    assert fetched[1] == 300  # the log end
    assert listed[1] <= 300  # ListOffsets: a minimum only (201 on Tansu 0.6, 300 on Kafka)
