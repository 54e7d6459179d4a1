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

from confluent_kafka import Producer

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
