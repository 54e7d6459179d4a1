"""Fuzz (hypothesis): malformed messages interleaved with valid ones, on the real broker and registry.

Every malformed message must end in ``<topic>.dlq`` with a reason, its original key, value and headers
and its source offset; every valid message must land; the consumer never crashes; and the offsets stored
in the table cover exactly the messages that were landed or dead-lettered (nothing committed past a
message that was neither). Each example uses its own exchange (so its own topics).
"""

from __future__ import annotations

import itertools
import json
import uuid
from typing import Any

from confluent_kafka import Message, Producer
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from k2.bus import topic_name
from k2.bus.producer import MarketDataProducer
from k2.bus.topics import ensure_topics
from k2.config import Settings
from k2.lake.summary import OFFSETS_KEY
from k2.landing import LandingConsumer
from k2.landing.dlq import read_dead_letters
from k2.model import QUOTE, TRADE
from k2.model.values import to_unscaled
from tests.landing.helpers import make_trades, table_keys

# kind -> reasons accepted for it (random bytes may fail in any of the decode checks)
EXPECTED: dict[str, set[str]] = {
    "random_bytes": {
        "truncated",
        "bad_magic",
        "unknown_schema_id",
        "avro_decode",
        "trailing_bytes",
        "wrong_record",
        "decimal_overflow",
    },
    "bad_magic": {"bad_magic"},
    "unknown_schema_id": {"unknown_schema_id"},
    "truncated_avro": {"avro_decode", "truncated"},
    "trailing_bytes": {"trailing_bytes"},
    "decimal_too_wide": {"decimal_overflow"},  # 9+ bytes: does not even fit int64
    "decimal_out_of_range": {"decimal_out_of_range"},  # fits int64, not decimal(18,8)
    "zero_price": {"non_positive_price"},
    "negative_quantity": {"non_positive_quantity"},
    "unknown_side": {"unknown_side"},
    "future_timestamp": {"timestamp_out_of_window"},
    "ancient_timestamp": {"timestamp_out_of_window"},
    "crossed_quote": {"crossed_quote"},
}
TRADE_KINDS = [k for k in EXPECTED if k not in ("random_bytes", "crossed_quote")]

message_kinds = st.one_of(
    st.tuples(st.just("random_bytes"), st.binary(max_size=80)),
    st.tuples(st.sampled_from(TRADE_KINDS), st.integers(min_value=1, max_value=1_000)),
)
_ids = itertools.count(1)


def _trade(exchange: str, trade_id: int) -> dict[str, Any]:
    row = make_trades("BTCUSDT", trade_id, 1, exchange=exchange)[0]
    return {**row, "ingest_ts": row["receipt_ts"]}


def _malformed_trade(kind: str, variation: int, exchange: str, encode: Any) -> bytes:
    row = _trade(exchange, 10**12 + variation)  # ids no valid message uses: landing one would show
    valid = encode(row)
    if kind == "bad_magic":
        return bytes([1 + variation % 255]) + valid[1:]
    if kind == "unknown_schema_id":
        return b"\x00" + (900_000_000 + variation).to_bytes(4, "big") + valid[5:]
    if kind == "truncated_avro":
        return valid[: max(0, len(valid) - 1 - variation % (len(valid) - 5))]
    if kind == "trailing_bytes":
        return valid + bytes([variation % 256]) * (1 + variation % 3)
    if kind == "decimal_too_wide":
        return encode({**row, "price": 10**20 + variation})
    if kind == "decimal_out_of_range":
        return encode({**row, "quantity": 10**18 + variation})
    if kind == "zero_price":
        return encode({**row, "price": -variation if variation % 2 else 0})
    if kind == "negative_quantity":
        return encode({**row, "quantity": -variation})
    if kind == "unknown_side":
        return encode({**row, "side": ["SIDEWAYS", "buy", "", "B"][variation % 4]})
    if kind == "future_timestamp":
        return encode({**row, "exchange_ts": 4_102_444_800_000_000 + variation})  # 2100
    if kind == "ancient_timestamp":
        return encode(
            {**row, "exchange_ts": -variation * 10**12 if variation % 2 else 86_400_000_000}
        )  # 1970
    raise AssertionError(kind)


def _quote(exchange: str, update_id: int, crossed: bool) -> dict[str, Any]:
    bid, ask = ("61837.65", "61837.64") if crossed else ("61837.63", "61837.64")
    return {
        "exchange": exchange,
        "symbol": "BTCUSDT",
        "instrument": "BTC-USDT",
        "asset_class": "crypto",
        "update_id": update_id,
        "bid_price": to_unscaled(bid),
        "bid_size": to_unscaled("1.5"),
        "ask_price": to_unscaled(ask),
        "ask_size": to_unscaled("2"),
        "exchange_ts": 1_723_161_255_342_000,
        "receipt_ts": 1_723_161_255_342_000,
        "ingest_ts": 1_723_161_255_342_000,
        "vendor": {},
    }


@hsettings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    malformed=st.lists(message_kinds, min_size=1, max_size=25),
    valid_count=st.integers(min_value=60, max_value=150),  # >= 64 per batch exercises the block decoder
    quotes=st.lists(st.booleans(), min_size=1, max_size=6),
    seed=st.randoms(use_true_random=False),
)
def test_malformed_messages_are_dead_lettered_and_valid_ones_land(
    settings: Settings, malformed: list[tuple[str, Any]], valid_count: int, quotes: list[bool], seed: Any
) -> None:
    n = next(_ids)
    exchange = f"fz{uuid.uuid4().hex[:6]}{n}"
    s = settings.model_copy(update={"consumer_group": f"fz-{exchange}", "consumer_session_timeout_ms": 1000})
    trades_topic, quotes_topic = (
        topic_name("crypto", "trades", exchange),
        topic_name("crypto", "quotes", exchange),
    )
    ensure_topics(s, [trades_topic, quotes_topic])
    encoders = MarketDataProducer(s)
    encode_trade = encoders.encoder(TRADE, trades_topic).encode
    encode_quote = encoders.encoder(QUOTE, quotes_topic).encode

    # (topic, value, kind, key): valid trades with unique ids, malformed ones at random positions.
    plan: list[tuple[str, bytes, str, tuple[str, str, int] | None]] = []
    for i in range(valid_count):
        plan.append(
            (trades_topic, encode_trade(_trade(exchange, 1 + i)), "valid", (exchange, "BTCUSDT", 1 + i))
        )
    for kind, variation in malformed:
        value = (
            variation if kind == "random_bytes" else _malformed_trade(kind, variation, exchange, encode_trade)
        )
        plan.insert(seed.randrange(len(plan) + 1), (trades_topic, value, kind, None))
    for j, crossed in enumerate(quotes):
        plan.append(
            (
                quotes_topic,
                encode_quote(_quote(exchange, j + 1, crossed)),
                "crossed_quote" if crossed else "valid_quote",
                None,
            )
        )

    positions: dict[int, tuple[int, int]] = {}  # plan index -> (partition, offset)

    def delivered(index: int) -> Any:
        def report(err: Any, msg: Message) -> None:
            assert err is None, err
            positions[index] = (int(msg.partition() or 0), int(msg.offset() or 0))

        return report

    raw = Producer({"bootstrap.servers": s.bootstrap_servers, "enable.idempotence": True, "acks": "all"})
    for index, (topic, value, kind, _) in enumerate(plan):
        raw.produce(
            topic,
            value=value,
            key=b"BTCUSDT",
            headers=[("fuzz.kind", kind.encode())],
            on_delivery=delivered(index),
        )
    assert raw.flush(30) == 0

    consumer = LandingConsumer(s, topics=[trades_topic, quotes_topic])
    consumer.run(idle_exit_seconds=1.5)  # returning at all: the consumer did not crash

    # Valid ones landed, exactly once; no malformed one did.
    landed = [k for k in table_keys(consumer.tables["trades"]) if k[0] == exchange]
    assert landed == sorted(k for _, _, kind, k in plan if kind == "valid" and k is not None)
    quote_ids = sorted(
        consumer.tables["quotes"]
        .scan(row_filter=f"exchange == '{exchange}'")
        .to_arrow()["update_id"]
        .to_pylist()
    )
    assert quote_ids == [j + 1 for j, crossed in enumerate(quotes) if not crossed]

    # Every malformed one is in the DLQ with a fitting reason, original bytes, key, headers, source offset.
    letters = []
    for topic in (trades_topic, quotes_topic):
        if any(t == topic and kind not in ("valid", "valid_quote") for t, _, kind, _ in plan):
            letters += read_dead_letters(s, topic + ".dlq", idle_seconds=1.0)
    by_source = {(d.source_topic, d.source_partition, d.source_offset): d for d in letters}
    assert len(by_source) == len(letters)
    expected_dead = {
        (topic, *positions[i]): (value, kind)
        for i, (topic, value, kind, _) in enumerate(plan)
        if kind not in ("valid", "valid_quote")
    }
    assert set(by_source) == set(expected_dead)
    for source, (value, kind) in expected_dead.items():
        letter = by_source[source]
        assert letter.reason in EXPECTED[kind], (kind, letter.reason, letter.detail)
        assert letter.detail
        assert letter.value == value and letter.key == b"BTCUSDT"
        assert letter.original_headers == [("fuzz.kind", kind.encode())]

    # The stored offsets cover every message produced (each landed or dead-lettered), no more, no less.
    for short, topic in (("trades", trades_topic), ("quotes", quotes_topic)):
        table = consumer.tables[short]
        table.refresh()
        stored = json.loads(table.current_snapshot().summary.additional_properties[OFFSETS_KEY])[topic]  # type: ignore[union-attr]
        produced: dict[str, int] = {}
        for i, (t, *_rest) in enumerate(plan):
            if t == topic:
                partition, offset = positions[i]
                produced[str(partition)] = max(produced.get(str(partition), 0), offset + 1)
        assert stored == produced
