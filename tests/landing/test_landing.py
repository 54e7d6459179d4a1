"""Landing consumer against the real broker, registry and Iceberg catalog: the basic paths."""

from __future__ import annotations

import json
from decimal import Decimal

import pyarrow as pa
import pytest
from confluent_kafka import Consumer

from k2.bus import MarketDataProducer, topic_name
from k2.bus.dlq import DeadLetter
from k2.config import Settings
from k2.lake.summary import OFFSETS_KEY, RANGES_KEY
from k2.landing import LandingConsumer
from k2.landing.ledger import current_gaps
from k2.model import QUOTE, TRADE
from k2.model.values import to_unscaled
from tests.landing.helpers import make_trades, table_keys
from tests.support.broker import stop_memory_broker
from tests.support.landing import land_messages


def _settings(settings: Settings, unique: str) -> Settings:
    return settings.model_copy(update={"consumer_group": f"g-{unique}", "consumer_session_timeout_ms": 1000})


def test_lands_trades_with_offsets_in_the_same_commit(settings: Settings, unique: str) -> None:
    settings = _settings(settings, unique)
    exchange = f"x{unique}"
    rows = make_trades("BTCUSDT", 1_000, 3_000, exchange=exchange) + make_trades(
        "ETHUSDT", 50, 2_000, exchange=exchange
    )
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, rows)
    consumer = LandingConsumer(settings, topics=[topic_name("crypto", "trades", exchange)])
    stats = land_messages(consumer, len(rows))
    table = consumer.tables["trades"]
    keys = [k for k in table_keys(table) if k[0] == exchange]
    assert keys == sorted((exchange, r["symbol"], r["trade_id"]) for r in rows)
    assert stats.landed == len(rows)
    summary = table.current_snapshot().summary
    offsets = json.loads(summary.additional_properties[OFFSETS_KEY])
    topic = topic_name("crypto", "trades", exchange)
    assert sum(offsets[topic].values()) == len(rows)  # next offsets over all partitions = messages consumed
    assert RANGES_KEY in summary.additional_properties
    # Values are exact: compare one row's decimals with the produced unscaled integers.
    scanned = (
        table.scan(row_filter=f"exchange == '{exchange}' and symbol == 'BTCUSDT' and trade_id == 1000")
        .to_arrow()
        .to_pylist()[0]
    )
    source = next(r for r in rows if r["trade_id"] == 1000 and r["symbol"] == "BTCUSDT")
    assert to_unscaled(scanned["price"]) == source["price"]
    assert to_unscaled(scanned["quantity"]) == source["quantity"]


def test_restart_resumes_from_table_offsets_without_duplicates(settings: Settings, unique: str) -> None:
    settings = _settings(settings, unique)
    exchange = f"r{unique}"
    first = make_trades("BTCUSDT", 1, 1_000, exchange=exchange)
    second = make_trades("BTCUSDT", 1_001, 1_000, exchange=exchange)
    topics = [topic_name("crypto", "trades", exchange)]
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, first)
    land_messages(LandingConsumer(settings, topics=topics), len(first))
    # A different group: group offsets are empty, the table's offsets must be used.
    other = settings.model_copy(update={"consumer_group": f"other-{unique}"})
    with MarketDataProducer(other) as producer:
        producer.send_many(TRADE, second)
    consumer = LandingConsumer(other, topics=topics)
    stats = land_messages(consumer, len(second))
    assert stats.consumed == len(second)  # resumed after the stored offsets, not from the beginning
    keys = [k for k in table_keys(consumer.tables["trades"]) if k[0] == exchange]
    assert keys == [(exchange, "BTCUSDT", i) for i in range(1, 2_001)]


def test_duplicates_dropped_and_gaps_recorded(settings: Settings, unique: str) -> None:
    settings = _settings(settings, unique)
    exchange = "coinbase"  # sequential ids: gaps are tracked
    symbol = f"G{unique.upper()}USDT"
    topics = [topic_name("crypto", "trades", exchange)]
    rows = make_trades(symbol, 100, 500, exchange=exchange)
    dropped = {150, 151, 152, 400}
    sent = [r for r in rows if r["trade_id"] not in dropped]
    sent += [rows[10], rows[20], rows[499]]  # duplicates, one after the newest id
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, sent[:300])
    consumer = LandingConsumer(settings, topics=topics)
    land_messages(consumer, 300)
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, sent[300:] + [rows[5]])  # a duplicate of an id landed in an earlier commit
    consumer = LandingConsumer(settings, topics=topics)
    stats = land_messages(consumer, len(sent) - 300 + 1)
    keys = [k[2] for k in table_keys(consumer.tables["trades"]) if k[1] == symbol]
    assert keys == sorted(set(range(100, 600)) - dropped)
    assert stats.duplicates >= 1
    gaps = current_gaps(consumer.tables["gaps"], symbol=symbol)
    assert sorted(
        zip(gaps["first_missing_id"].to_pylist(), gaps["last_missing_id"].to_pylist(), strict=True)
    ) == [(150, 152), (400, 400)]
    assert set(gaps["status"].to_pylist()) == {"open"}


def _read_dlq(settings: Settings, topic: str, expected: int) -> list[DeadLetter]:
    from k2.landing.dlq import read_dead_letters

    letters = read_dead_letters(settings, topic + ".dlq", idle_seconds=2)
    assert len(letters) == expected, [(d.reason, d.detail) for d in letters]
    return letters


def test_invalid_and_undecodable_messages_go_to_dlq_with_original_bytes(
    settings: Settings, unique: str
) -> None:
    settings = _settings(settings, unique)
    exchange = f"d{unique}"
    topic = topic_name("crypto", "trades", exchange)
    good = make_trades("BTCUSDT", 1, 10, exchange=exchange)
    bad_price = {**make_trades("BTCUSDT", 100, 1, exchange=exchange)[0], "price": 0}
    bad_side = {**make_trades("BTCUSDT", 101, 1, exchange=exchange)[0], "side": "SIDEWAYS"}
    future = {**make_trades("BTCUSDT", 102, 1, exchange=exchange)[0], "exchange_ts": 4_102_444_800_000_000}
    garbage = b"\x00\x00\x00\x00\x01not avro at all"
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, good[:5])
        producer.send(TRADE, bad_price)
        producer.send(TRADE, bad_side)
        producer.send(TRADE, future)
        producer.produce_raw(topic, b"BTCUSDT", garbage, [("origin", b"fuzz")])
        producer.produce_raw(topic, b"BTCUSDT", b"\x07")
        producer.send_many(TRADE, good[5:])
    consumer = LandingConsumer(settings, topics=[topic])
    stats = land_messages(consumer, 15)
    assert stats.landed == 10
    assert stats.dead_lettered == 5
    letters = _read_dlq(settings, topic, 5)
    reasons = sorted(d.reason for d in letters)
    # The garbage names schema id 1: unknown to a fresh registry, or (when another test registered it
    # first on the session's registry) an id whose schema does not decode it or is another record.
    garbage_reasons = {"avro_decode", "unknown_schema_id", "wrong_record"}
    assert len(set(reasons) & garbage_reasons) == 1, reasons
    assert sorted(r for r in reasons if r not in garbage_reasons) == sorted(
        ["non_positive_price", "unknown_side", "timestamp_out_of_window", "truncated"]
    )
    raw = next(d for d in letters if d.value == garbage)
    assert raw.original_headers == [("origin", b"fuzz")]
    assert raw.source_topic == topic and raw.source_offset >= 0
    # Offsets cover the dead-lettered messages too: nothing is re-read on restart.
    assert LandingConsumer(settings, topics=[topic]).run(idle_exit_seconds=1.5).consumed == 0


def test_quotes_land_and_crossed_quotes_are_rejected(settings: Settings, unique: str) -> None:
    settings = _settings(settings, unique)
    exchange = f"q{unique}"
    base = {
        "exchange": exchange,
        "symbol": "BTCUSDT",
        "instrument": "BTC-USDT",
        "asset_class": "crypto",
        "bid_size": to_unscaled("1.5"),
        "ask_size": to_unscaled("2"),
        "exchange_ts": 1_723_161_255_342_000,
        "receipt_ts": 1_723_161_255_342_000,
        "ingest_ts": None,
        "vendor": {"ts_source": "receipt"},
    }
    quotes = [
        {**base, "update_id": 1, "bid_price": to_unscaled("61837.63"), "ask_price": to_unscaled("61837.64")},
        {**base, "update_id": 2, "bid_price": to_unscaled("61837.65"), "ask_price": to_unscaled("61837.64")},
        {**base, "update_id": 3, "bid_price": None, "ask_price": to_unscaled("61837.64")},
    ]
    with MarketDataProducer(settings) as producer:
        producer.send_many(QUOTE, quotes)
    consumer = LandingConsumer(settings, topics=[topic_name("crypto", "quotes", exchange)])
    land_messages(consumer, len(quotes))
    table = consumer.tables["quotes"]
    landed = table.scan(row_filter=f"exchange == '{exchange}'").to_arrow().sort_by("update_id")
    assert landed["update_id"].to_pylist() == [1, 3]
    assert landed["bid_price"].to_pylist() == [Decimal("61837.63000000"), None]
    letters = _read_dlq(settings, topic_name("crypto", "quotes", exchange), 1)
    assert letters[0].reason == "crossed_quote"


def test_dlq_replay_lands_after_fix_exactly_once(settings: Settings, unique: str) -> None:
    """A message dead-lettered for an unknown schema id lands once the id exists (replayed twice)."""
    from k2.landing.dlq import read_dead_letters, replay_dead_letters

    settings = _settings(settings, unique)
    exchange = f"p{unique}"
    topic = topic_name("crypto", "trades", exchange)
    producer = MarketDataProducer(settings)
    row = make_trades("BTCUSDT", 7, 1, exchange=exchange)[0]
    encoded = producer.encoder(TRADE, topic).encode({**row, "ingest_ts": row["exchange_ts"]})
    # Simulate a producer that briefly wrote a bad frame: a wrong magic byte on a valid body.
    producer.produce_raw(topic, b"BTCUSDT", b"\x01" + encoded[1:])
    producer.flush()
    land_messages(LandingConsumer(settings, topics=[topic]), 1)
    letters = read_dead_letters(settings, topic + ".dlq", idle_seconds=2)
    assert [d.reason for d in letters] == ["bad_magic"]
    fixed = [DeadLetter(**{**letters[0].__dict__, "value": encoded})]
    replay_dead_letters(settings, fixed)
    replay_dead_letters(settings, fixed)  # replayed twice: still exactly once
    consumer = LandingConsumer(settings, topics=[topic])
    land_messages(consumer, 1)  # the second replay moves nothing: one message in the topic
    assert [k for k in table_keys(consumer.tables["trades"]) if k[0] == exchange] == [
        (exchange, "BTCUSDT", 7)
    ]


def test_bad_key_in_summary_is_not_needed_for_arrow_roundtrip() -> None:
    # The canonical Arrow schema is what the table stores: no drift between the three schema forms.
    # The table adds only its table-side (lineage) columns, last; the Avro message never carries them.
    from k2.lake.catalog import TABLES

    for tdef in TABLES.values():
        iceberg_names = [f.name for f in tdef.record.iceberg_schema().fields]
        message_names = [f["name"] for f in tdef.record.avro_schema()["fields"]]
        table_side = [f.name for f in tdef.record.table_fields]
        assert tdef.record.arrow_schema().names == message_names
        assert iceberg_names == tdef.record.table_arrow_schema().names == message_names + table_side
        assert not any(name.startswith("lineage_") for name in message_names)
        assert isinstance(tdef.record.arrow_schema(), pa.Schema)


def test_consumer_uses_no_group_offsets_for_resumption(settings: Settings, unique: str) -> None:
    """Group offsets are committed after Iceberg (for monitoring) and match the table's offsets."""
    settings = _settings(settings, unique)
    exchange = f"c{unique}"
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, make_trades("BTCUSDT", 1, 200, exchange=exchange))
    topic = topic_name("crypto", "trades", exchange)
    consumer = LandingConsumer(settings, topics=[topic])
    land_messages(consumer, 200)
    stored = json.loads(
        consumer.tables["trades"].current_snapshot().summary.additional_properties[OFFSETS_KEY]
    )[topic]
    probe = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": settings.consumer_group})
    from confluent_kafka import TopicPartition

    committed = probe.committed([TopicPartition(topic, int(p)) for p in stored], timeout=10)
    probe.close()
    assert {str(tp.partition): tp.offset for tp in committed} == stored


@pytest.mark.parametrize("policy", ["restart", "fail"])
def test_broker_reset_is_detected(tmp_path, schema_registry: str, unique: str, policy: str) -> None:
    """A broker whose log was reset (memory broker restarted) is detected, never silently skipped."""
    from k2.bus.broker import tansu_process
    from k2.landing import OffsetResetError
    from k2.telemetry.procs import free_port

    port = free_port()
    settings = Settings(
        data_dir=tmp_path / "k2",
        kafka_bootstrap_servers=f"127.0.0.1:{port}",
        schema_registry_url=schema_registry,
        consumer_session_timeout_ms=2000,
        landing_commit_interval_seconds=0.5,
        landing_metrics_port=0,
        consumer_group=f"g-{unique}",
        landing_on_offset_reset=policy,
        landing_verify_timeout_seconds=2,
    )
    exchange = f"z{unique}"
    broker = tansu_process(port, tmp_path / "tansu1.log").start()
    try:
        with MarketDataProducer(settings) as producer:
            producer.send_many(TRADE, make_trades("BTCUSDT", 1, 300, exchange=exchange))
        land_messages(LandingConsumer(settings), 300)
    finally:
        stop_memory_broker(broker)
    broker = tansu_process(port, tmp_path / "tansu2.log").start()  # empty log: offsets start at 0 again
    try:
        with MarketDataProducer(settings) as producer:
            producer.send_many(TRADE, make_trades("BTCUSDT", 301, 100, exchange=exchange))
        consumer = LandingConsumer(settings)
        if policy == "fail":
            with pytest.raises(OffsetResetError, match="K2_LANDING_ON_OFFSET_RESET=fail"):
                consumer.run(idle_exit_seconds=3)
        else:
            stats = land_messages(consumer, 100)
            assert stats.resets >= 1
            keys = [k for k in table_keys(consumer.tables["trades"]) if k[0] == exchange]
            assert keys == [(exchange, "BTCUSDT", i) for i in range(1, 401)]
    finally:
        stop_memory_broker(broker)


def test_idle_exit_waits_for_a_slow_group_join_before_counting_idle_time(
    settings: Settings, unique: str
) -> None:
    # Tansu answers a join after session.timeout.ms / 2: 3 s here, longer than the 1 s idle exit. A landing
    # that counted the join as idle time returned before its first assignment with the backlog unlanded.
    settings = settings.model_copy(
        update={"consumer_group": f"j-{unique}", "consumer_session_timeout_ms": 6000}
    )
    exchange = f"j{unique}"
    rows = make_trades("BTCUSDT", 1, 500, exchange=exchange)
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, rows)
    consumer = LandingConsumer(settings, topics=[topic_name("crypto", "trades", exchange)])
    stats = consumer.run(idle_exit_seconds=1, max_seconds=90)
    assert stats.landed == len(rows)
    assert [k for k in table_keys(consumer.tables["trades"]) if k[0] == exchange] == [
        (exchange, "BTCUSDT", i) for i in range(1, 501)
    ]
