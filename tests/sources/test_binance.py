"""Binance message -> wire-form parsing, capture reading, URLs and sharding, on real captured messages."""

from __future__ import annotations

import asyncio
import gzip
from decimal import Decimal

import orjson
import pytest

from k2.config import Settings
from k2.model import QUOTE, TRADE, DataType
from k2.model.values import unscaled_to_decimal
from k2.sources.binance import (
    MARKETS,
    SPOT,
    USDM,
    BinanceFeed,
    feeds_for_symbols,
    iter_capture,
    iter_capture_lines,
    iter_capture_trades,
    market_for_url,
    normalise_symbols,
    parse_frame,
    parse_rest_trade,
)
from k2.sources.live import MalformedMessage
from tests.sources.helpers import BINANCE_CAPTURES, BINANCE_SPOT_2021, FIRST_ID, LAST_ID


def _capture_lines(kind: str, count: int) -> list[tuple[int, bytes]]:
    out = []
    with gzip.open(BINANCE_CAPTURES[0], "rb") as handle:
        for line in handle:
            if f'"stream":"btcusdt@{kind}"'.encode() in line:
                ns, _, raw = line.strip().partition(b" ")
                out.append((int(ns), raw))
                if len(out) == count:
                    break
    return out


def _cryptofeed_messages(stream_kind: str) -> list[tuple[int, bytes]]:
    out = []
    for line in BINANCE_SPOT_2021.read_bytes().splitlines():
        head, sep, raw = line.partition(b": ")
        if sep and b" " not in head and f"@{stream_kind}".encode() in raw[:40]:
            out.append((int(Decimal(head.decode()) * 1_000_000), raw))
    return out


def test_trade_frame_maps_every_field_exactly() -> None:
    ns, raw = _capture_lines("trade", 1)[0]
    event = parse_frame(raw, ns // 1000)
    assert event is not None and event.kind == "trade"
    data = orjson.loads(raw)["data"]
    row = event.row
    assert row is not None and set(row) == set(TRADE.field_names)
    assert (event.symbol, event.ident) == ("BTCUSDT", data["t"]) == (row["symbol"], row["trade_id"])
    assert f"{unscaled_to_decimal(row['price']):.8f}" == data["p"]
    assert f"{unscaled_to_decimal(row['quantity']):.8f}" == data["q"]
    assert row["exchange_ts"] == data["T"] * 1000 and row["receipt_ts"] == ns // 1000
    assert row["side"] == ("SELL" if data["m"] else "BUY")
    assert row["conditions"] == (["BEST_MATCH"] if data["M"] else [])
    assert row["vendor"] == {"E": str(data["E"])}
    assert (row["exchange"], row["instrument"], row["asset_class"], row["source_sequence"]) == (
        "binance",
        "BTC-USDT",
        "crypto",
        data["t"],
    )
    assert row["ingest_ts"] is None and row["quote_quantity"] is None


def test_aggressor_side_follows_the_buyer_maker_flag() -> None:
    sides = {}
    for ns, raw in _capture_lines("trade", 400):
        data = orjson.loads(raw)["data"]
        event = parse_frame(raw, ns // 1000)
        assert event is not None and event.row is not None
        sides[data["m"]] = event.row["side"]
    assert sides == {True: "SELL", False: "BUY"}  # both kinds occur in the first 400 real trades


def test_book_ticker_uses_receipt_time_when_spot_sends_none() -> None:
    ns, raw = _capture_lines("bookTicker", 1)[0]
    event = parse_frame(raw, ns // 1000)
    assert event is not None and event.kind == "quote" and event.row is not None
    data = orjson.loads(raw)["data"]
    row = event.row
    assert set(row) == set(QUOTE.field_names)
    assert event.ident == data["u"] == row["update_id"]
    assert [
        f"{unscaled_to_decimal(row[k]):.8f}" for k in ("bid_price", "bid_size", "ask_price", "ask_size")
    ] == [data[k] for k in "bBaA"]
    assert row["exchange_ts"] == row["receipt_ts"] == ns // 1000
    assert row["vendor"] == {"ts_source": "receipt"}


def test_agg_trade_and_futures_book_ticker() -> None:
    receipt, raw = _cryptofeed_messages("aggTrade")[0]
    event = parse_frame(raw, receipt, USDM)
    data = orjson.loads(raw)["data"]
    assert event is not None and event.row is not None
    assert event.ident == data["a"] == event.row["trade_id"]
    assert event.row["side"] == "BUY" and data["m"] is False
    assert event.row["vendor"] == {"E": str(data["E"]), "f": str(data["f"]), "l": str(data["l"])}
    assert (event.row["exchange"], event.row["asset_class"]) == ("binance-futures", "futures")
    # USD-M bookTicker carries event and transaction times (shape from Binance's futures docs).
    futures = b'{"stream":"btcusdt@bookTicker","data":{"e":"bookTicker","u":400900217,"E":1568014460893,"T":1568014460891,"s":"BTCUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}}'
    quote = parse_frame(futures, 5, USDM)
    assert quote is not None and quote.row is not None
    assert quote.row["exchange_ts"] == 1568014460891000 and quote.row["vendor"] == {"E": "1568014460893"}


@pytest.mark.parametrize(
    ("frame", "reason", "data_type", "symbol"),
    [
        (
            b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":5,"q":"1.0","T":1,"m":true,"M":true}}',
            "missing_field",
            DataType.TRADES,
            "BTCUSDT",
        ),
        (
            b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":5,"p":"1.000000001","q":"1","T":1,"m":true}}',
            "bad_number",
            DataType.TRADES,
            "BTCUSDT",
        ),
        (
            b'{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT","b":"abc","B":"1","a":"2","A":"1"}}',
            "bad_number",
            DataType.QUOTES,
            "BTCUSDT",
        ),
        (b'{"stream":"ethusdt@bookTicker","data":{"u":1,"s":"ETH', "bad_json", DataType.QUOTES, "ETHUSDT"),
        (
            b'{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":"5","p":"1","q":"1","T":1,"m":true}}',
            "bad_field",
            DataType.TRADES,
            "BTCUSDT",
        ),
        (b'{"stream":"btcusdt@trade","data":null}', "missing_field", DataType.TRADES, "BTCUSDT"),
        (b"\x00\xfe\xff garbage", "bad_json", DataType.TRADES, None),
        (b"[1, 2]", "bad_json", DataType.TRADES, None),
    ],
)
def test_malformed_frames_say_why_and_where_they_belong(
    frame: bytes, reason: str, data_type: DataType, symbol: str | None
) -> None:
    with pytest.raises(MalformedMessage) as info:
        parse_frame(frame, 0)
    assert (info.value.reason, info.value.data_type, info.value.symbol) == (reason, data_type, symbol)
    assert "expected" in info.value.detail


def test_control_frames() -> None:
    assert parse_frame(b'{"result":null,"id":3}', 0) is None
    error = parse_frame(b'{"error":{"code":2,"msg":"Invalid request"},"id":4}', 0)
    assert error is not None and error.kind == "error" and "Invalid request" in error.detail
    shutdown = parse_frame(b'{"e":"serverShutdown","E":1700000000000}', 0)
    assert shutdown is not None and shutdown.kind == "reconnect"
    depth = _capture_lines("depth@100ms", 1)[0][1]
    event = parse_frame(depth, 0)  # depth diffs are parsed (issue 14); a feed without depth ignores them
    assert event is not None and event.kind == "depth" and event.ident == 50093239202
    assert BinanceFeed(["BTCUSDT"]).parse(depth, 0) is None
    assert BinanceFeed(["BTCUSDT"], depth=True).parse(depth, 0) is not None


def test_capture_reader_yields_every_trade_and_quote_exactly() -> None:
    trades = quotes = 0
    ids = []
    quote_lines = sum(
        1 for _, raw in iter_capture_lines(BINANCE_CAPTURES) if b'"btcusdt@bookTicker"' in raw[:40]
    )
    for record, row, raw in iter_capture(BINANCE_CAPTURES):
        if record is TRADE:
            trades += 1
            ids.append(row["trade_id"])
            assert (
                f"{unscaled_to_decimal(row['price']):.8f}",
                f"{unscaled_to_decimal(row['quantity']):.8f}",
            ) == (raw["p"], raw["q"])
        else:
            quotes += 1
            assert f"{unscaled_to_decimal(row['bid_price']):.8f}" == raw["b"]
    assert trades == 19_904 and ids == list(range(FIRST_ID, LAST_ID + 1))
    assert quotes == quote_lines > 0
    only_trades = list(iter_capture_trades(BINANCE_CAPTURES[1]))
    assert only_trades[-1]["trade_id"] == LAST_ID and all(r["vendor"].keys() == {"E"} for r in only_trades)


def test_capture_reader_rejects_a_broken_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / "broken.gz"
    with gzip.open(broken, "wb") as handle:
        handle.write(
            b'1723161254087896568 {"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":1,"p":"x","q":"1","T":1,"m":true}}\n'
        )
    with pytest.raises(ValueError, match="1723161254087896568"):
        list(iter_capture(broken))
    plain = tmp_path / "plain.txt"
    plain.write_text("not-a-timestamp {}\n")
    with pytest.raises(ValueError, match="expected '<local_receive_ns> <json>'"):
        list(iter_capture_lines(plain))


def test_rest_trade_rows_match_stream_rows() -> None:
    ns, raw = _capture_lines("trade", 1)[0]
    data = orjson.loads(raw)["data"]
    item = {
        "id": data["t"],
        "price": data["p"],
        "qty": data["q"],
        "quoteQty": "1236.75260000",
        "time": data["T"],
        "isBuyerMaker": data["m"],
        "isBestMatch": data["M"],
    }
    rest = parse_rest_trade(item, "BTCUSDT", 7)
    event = parse_frame(raw, 7)
    assert event is not None and event.row is not None
    same = (
        "trade_id",
        "price",
        "quantity",
        "side",
        "exchange_ts",
        "conditions",
        "instrument",
        "source_sequence",
    )
    assert {k: rest[k] for k in same} == {k: event.row[k] for k in same}
    assert rest["quote_quantity"] == 123675260000 and rest["vendor"] == {"backfill": "rest"}


def test_urls_markets_and_sharding() -> None:
    assert market_for_url("wss://stream.binance.com:9443").name == "spot"
    assert market_for_url("wss://fstream.binance.com").name == "usdm"
    assert market_for_url("wss://stream.binance.us:9443").name == "us"
    assert market_for_url("ws://127.0.0.1:9100").name == "spot"
    settings = Settings(
        binance_ws_url="wss://fstream.binance.com", binance_rest_url="https://fapi.binance.com"
    )
    (futures,) = feeds_for_symbols(settings, ["btcusdt"])
    assert (
        futures.market is USDM
        and futures.url() == "wss://fstream.binance.com/stream?streams=btcusdt@aggTrade/btcusdt@bookTicker"
    )
    (us,) = feeds_for_symbols(settings, ["BTCUSDT"], MARKETS["us"])
    assert (
        us.url().startswith("wss://stream.binance.us:9443/stream?")
        and us.rest_url == "https://api.binance.us"
    )
    (local,) = feeds_for_symbols(settings, ["BTCUSDT"], SPOT, "ws://127.0.0.1:1/stream", "http://127.0.0.1:1")
    assert local.url() == "ws://127.0.0.1:1/stream?streams=btcusdt@trade/btcusdt@bookTicker"

    symbols = [f"S{i:03d}USDT" for i in range(600)]
    feeds = feeds_for_symbols(Settings(), symbols)
    assert [len(f.symbols) for f in feeds] == [512, 88] and all(len(f.streams) <= 1024 for f in feeds)
    first = feeds[0]
    assert first.url().count("@") == 200
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    asyncio.run(first.on_open(send))
    requests = [orjson.loads(s) for s in sent]
    assert [r["method"] for r in requests] == ["SUBSCRIBE"] * 5 and all(
        len(r["params"]) <= 200 for r in requests
    )
    assert [p for r in requests for p in r["params"]] == first.streams[200:]
    assert first.control_rate < 5  # Binance spot allows 5 incoming messages per second


def test_symbol_validation() -> None:
    assert normalise_symbols(["btcusdt", "BTCUSDT", " ethusdt "]) == ["BTCUSDT", "ETHUSDT"]
    with pytest.raises(ValueError, match="expected a Binance symbol"):
        normalise_symbols(["BTC/USDT"])
    with pytest.raises(ValueError, match="at most 1024 streams"):
        BinanceFeed([f"S{i:03d}USDT" for i in range(513)])
