"""The hybrid query: a trade still in Kafka is returned exactly once, before and after it lands (real broker)."""

from __future__ import annotations

from typing import Any

from k2.bus.producer import MarketDataProducer
from k2.bus.topics import topic_name
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.landing.consumer import LandingConsumer
from k2.model import QUOTE, TRADE
from k2.model.values import micros_to_datetime, now_micros
from k2.query.client import Client
from tests.support.factories import wire_quote, wire_trade
from tests.support.landing import land_messages


def _trade(exchange: str, trade_id: int, price: str, ts: int) -> dict[str, Any]:
    return wire_trade(exchange, trade_id, ts, price=price)


def test_unlanded_trade_returned_once_before_and_after_landing(settings: Settings, unique: str) -> None:
    exchange = f"qx{unique}"
    topic = topic_name("crypto", "trades", exchange)
    quote_topic = topic_name("crypto", "quotes", exchange)
    ensure_tables(load_catalog(settings), settings)
    base = now_micros() - 5_000_000
    client = Client(settings)
    with MarketDataProducer(settings) as producer:
        producer.send(TRADE, _trade(exchange, 100, "61837.63", base))
        producer.send(TRADE, _trade(exchange, 101, "61837.64", base + 1000))
        producer.send(TRADE, _trade(exchange, 101, "61837.64", base + 1000))  # a producer-retry duplicate
        producer.send(
            TRADE, _trade("other" + unique, 101, "1.0", base + 1000)
        )  # another exchange: filtered out
        producer.send(QUOTE, wire_quote(exchange, 7, base))
        producer.send(QUOTE, wire_quote(exchange, 7, base))

    # Not landed yet: only Kafka has them; include_recent defaults on for a range ending now.
    recent = client.trades("BTCUSDT", exchange=exchange)
    assert recent["trade_id"].to_pylist() == [100, 101]
    assert recent.recent_rows == 2 and recent.snapshot_ids == {"trades": None}
    assert [str(p) for p in recent["price"].to_pylist()] == ["61837.63000000", "61837.64000000"]
    assert client.quotes("BTCUSDT", exchange=exchange)["update_id"].to_pylist() == [7]
    # Bounded by rows: query_recent_max_rows caps what is read from Kafka.
    capped = Client(settings.model_copy(update={"query_recent_max_rows": 1}))
    assert capped.trades("BTCUSDT", exchange=exchange)["trade_id"].to_pylist() == [100]
    capped.close()
    assert client.bars("BTCUSDT", "1m", exchange=exchange)["trade_count"].to_pylist() in ([2], [1, 1])
    window = (micros_to_datetime(base - 60_000_000), micros_to_datetime(base + 60_000_000))
    assert client.vwap("BTCUSDT", *window, exchange=exchange, include_recent=True)[
        "trade_count"
    ].to_pylist() == [2]

    # Land them (the real landing consumer, one commit with the Kafka offsets in the summary).
    # 3 trades and 2 quotes on these topics (the other exchange's trade is on its own topic).
    stats = land_messages(LandingConsumer(settings, topics=[topic, quote_topic]), 5, max_seconds=30)
    assert stats.landed == 3
    assert client.quotes("BTCUSDT", exchange=exchange, include_recent=True)["update_id"].to_pylist() == [7]
    landed = client.trades("BTCUSDT", exchange=exchange, include_recent=False)
    assert landed["trade_id"].to_pylist() == [100, 101]
    after = client.trades("BTCUSDT", exchange=exchange, include_recent=True)
    assert after["trade_id"].to_pylist() == [100, 101]
    assert after.recent_rows == 0 and after.snapshot_ids["trades"] == client.snapshot_id("trades")

    # A late duplicate of a landed trade plus a new one after the stored offsets: the duplicate is dropped.
    with MarketDataProducer(settings) as producer:
        producer.send(TRADE, _trade(exchange, 101, "61837.64", base + 1000))
        producer.send(TRADE, _trade(exchange, 102, "61837.65", base + 2000))
    again = client.trades("BTCUSDT", exchange=exchange, include_recent=True)
    assert again["trade_id"].to_pylist() == [100, 101, 102]
    assert again.recent_rows == 2  # both read from Kafka; the copy of 101 already in Iceberg was dropped
    # Pinned to the landing snapshot, Kafka is never read.
    pinned = client.trades("BTCUSDT", exchange=exchange, as_of=after.snapshot_ids["trades"])
    assert pinned["trade_id"].to_pylist() == [100, 101] and pinned.recent_rows == 0
    client.close()
