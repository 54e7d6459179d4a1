"""Coinbase message -> wire-form parsing and capture reading, on the real cryptofeed Coinbase capture."""

from __future__ import annotations

from collections import defaultdict

import orjson
import pytest

from k2.model import QUOTE, TRADE, DataType
from k2.model.values import to_unscaled
from k2.sources.coinbase import (
    CoinbaseFeed,
    iter_capture,
    iter_capture_lines,
    normalise_products,
    parse_frame,
    parse_rest_trade,
    parse_time,
)
from k2.sources.live import FatalSourceError, MalformedMessage
from tests.sources.helpers import COINBASE_CAPTURE


def _messages(kind: str) -> list[dict]:  # type: ignore[type-arg]
    return [
        m for _, raw in iter_capture_lines(COINBASE_CAPTURE) if (m := orjson.loads(raw)).get("type") == kind
    ]


def test_capture_yields_every_match_and_ticker() -> None:
    rows = list(iter_capture(COINBASE_CAPTURE))
    trades = [(row, raw) for record, row, raw in rows if record is TRADE]
    quotes = [(row, raw) for record, row, raw in rows if record is QUOTE]
    assert len(trades) == len(_messages("match")) + len(_messages("last_match")) == 107
    assert len(quotes) == len(_messages("ticker")) == 107
    per_product: dict[str, list[int]] = defaultdict(list)
    for row, raw in trades:
        per_product[row["symbol"]].append(row["trade_id"])
        assert row["price"] == to_unscaled(raw["price"]) and row["quantity"] == to_unscaled(raw["size"])
        # Coinbase's side is the maker's: the aggressor is the other side.
        assert row["side"] == {"buy": "SELL", "sell": "BUY"}[raw["side"]]
        assert row["source_sequence"] == raw["sequence"] and row["instrument"] == raw["product_id"]
        assert row["vendor"]["maker_order_id"] == raw["maker_order_id"]
        assert (row["vendor"].get("type") == "last_match") == (raw["type"] == "last_match")
    assert len(per_product) == 10
    for ids in per_product.values():  # contiguous per product: what gap detection relies on
        assert ids == list(range(ids[0], ids[0] + len(ids)))


def test_first_receipt_time_is_exact() -> None:
    ns, raw = next(iter_capture_lines(COINBASE_CAPTURE))
    assert ns == 1_618_677_817_061_845_000  # the capture line says 1618677817.061845
    assert orjson.loads(raw)["type"] == "subscriptions"


def test_ticker_maps_to_a_quote() -> None:
    raw = _messages("ticker")[0]
    event = parse_frame(orjson.dumps(raw), 5)
    assert event is not None and event.kind == "quote" and event.row is not None
    row = event.row
    assert set(row) == set(QUOTE.field_names)
    assert (row["update_id"], row["bid_price"], row["ask_price"]) == (
        raw["sequence"],
        to_unscaled(raw["best_bid"]),
        to_unscaled(raw["best_ask"]),
    )
    assert row["bid_size"] is None and row["ask_size"] is None  # the 2021 API sent no sizes
    assert row["exchange_ts"] == parse_time(raw["time"])[0]
    assert row["vendor"]["price"] == raw["price"] and row["vendor"]["volume_24h"] == raw["volume_24h"]
    newer = {**raw, "best_bid_size": "1.5", "best_ask_size": "0.25"}
    sized = parse_frame(orjson.dumps(newer), 5)
    assert sized is not None and sized.row is not None
    assert (sized.row["bid_size"], sized.row["ask_size"]) == (150_000_000, 25_000_000)


def test_times_parse_exactly() -> None:
    assert parse_time("2021-04-17T16:43:37.089723Z") == (1_618_677_817_089_723, True)
    assert parse_time("2021-04-17T16:43:37Z") == (1_618_677_817_000_000, True)
    assert parse_time("2021-04-17T18:43:37.5+02:00") == (1_618_677_817_500_000, True)
    assert parse_time("2021-04-17T16:43:37.123456789Z") == (1_618_677_817_123_456, False)
    raw = {**_messages("match")[0], "time": "2021-04-17T16:43:37.123456789Z"}
    event = parse_frame(orjson.dumps(raw), 0)
    assert event is not None and event.row is not None and event.row["vendor"]["time"] == raw["time"]
    with pytest.raises(ValueError, match="expected an ISO-8601 time"):
        parse_time("17/04/2021 16:43")


@pytest.mark.parametrize(
    ("change", "reason", "data_type"),
    [
        ({"price": None}, "missing_field", DataType.TRADES),
        ({"size": "1e-12"}, "bad_number", DataType.TRADES),
        ({"trade_id": "12"}, "bad_field", DataType.TRADES),
        ({"side": "up"}, "bad_field", DataType.TRADES),
        ({"time": "yesterday"}, "bad_field", DataType.TRADES),
    ],
)
def test_malformed_matches(change: dict, reason: str, data_type: DataType) -> None:  # type: ignore[type-arg]
    raw = {k: v for k, v in {**_messages("match")[0], **change}.items() if v is not None}
    with pytest.raises(MalformedMessage) as info:
        parse_frame(orjson.dumps(raw), 0)
    assert (info.value.reason, info.value.data_type, info.value.symbol) == (
        reason,
        data_type,
        raw["product_id"],
    )


def test_bad_json_routes_by_what_it_can_see() -> None:
    with pytest.raises(MalformedMessage) as info:
        parse_frame(b'{"type":"ticker","sequence":1,"product_id":"SKL-USD","best_bid":', 0)
    assert (info.value.reason, info.value.data_type, info.value.symbol) == (
        "bad_json",
        DataType.QUOTES,
        "SKL-USD",
    )
    with pytest.raises(MalformedMessage) as info:
        parse_frame(b'{"product_id":"SKL-USD"}', 0)
    assert info.value.reason == "missing_field"


def test_subscription_errors_are_fatal_other_errors_are_not() -> None:
    with pytest.raises(FatalSourceError, match="FOO-BAR is not a valid product"):
        parse_frame(
            b'{"type":"error","message":"Failed to subscribe","reason":"FOO-BAR is not a valid product"}', 0
        )
    event = parse_frame(b'{"type":"error","message":"rate limited","reason":"slow down"}', 0)
    assert event is not None and event.kind == "error"
    assert (
        parse_frame(
            b'{"type":"heartbeat","sequence":5,"last_trade_id":9,"product_id":"BTC-USD","time":"2021-04-17T16:43:37Z"}',
            0,
        )
        is None
    )
    assert parse_frame(orjson.dumps(_messages("l2update")[0]), 0) is None


def test_rest_trade_side_is_also_the_maker_side() -> None:
    raw = _messages("match")[0]
    item = {k: raw[k] for k in ("time", "trade_id", "price", "size", "side")}
    rest = parse_rest_trade(item, raw["product_id"], 1)
    event = parse_frame(orjson.dumps(raw), 1)
    assert event is not None and event.row is not None
    for key in ("trade_id", "price", "quantity", "side", "exchange_ts", "symbol", "instrument"):
        assert rest[key] == event.row[key]
    assert rest["vendor"] == {"backfill": "rest"}


def test_products_and_subscribe_message() -> None:
    import asyncio

    assert normalise_products(["btc-usd", "ETH-USD", "BTC-USD"]) == ["BTC-USD", "ETH-USD"]
    with pytest.raises(ValueError, match="expected a Coinbase product id"):
        normalise_products(["BTCUSD"])
    feed = CoinbaseFeed(["btc-usd", "eth-usd"])
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    asyncio.run(feed.on_open(send))
    assert [orjson.loads(s) for s in sent] == [
        {
            "type": "subscribe",
            "product_ids": ["BTC-USD", "ETH-USD"],
            "channels": ["matches", "ticker", "heartbeat", "level2"],  # depth on by default
        }
    ]
    sent.clear()
    asyncio.run(CoinbaseFeed(["btc-usd"], depth=False).on_open(send))
    assert orjson.loads(sent[0])["channels"] == ["matches", "ticker", "heartbeat"]
