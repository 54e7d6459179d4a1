"""Binance messages -> wire-form rows: WebSocket trades, aggTrades and bookTickers, REST backfill trades.

Malformed input raises :class:`k2.sources.live.MalformedMessage` naming what was expected and found
(the live runner and the capture importer dead-letter it). See :mod:`k2.sources.binance` for the mapping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import orjson

from k2.model import DataType
from k2.model.values import canonical_instrument, to_unscaled
from k2.sources.binance.markets import SPOT, USDM, BinanceMarket
from k2.sources.live import (
    Event,
    Frame,
    MalformedMessage,
)


@lru_cache(maxsize=65_536)
def _instrument(symbol: str) -> str:
    return canonical_instrument(symbol)


def _decimal(value: Any, name: str, data_type: DataType, symbol: str | None) -> int:
    if not isinstance(value, str):
        raise MalformedMessage(
            "bad_number", f"expected {name} as a decimal string, found {value!r}", data_type, symbol
        )
    try:
        return to_unscaled(value)
    except ValueError as exc:
        raise MalformedMessage("bad_number", f"{name}: {exc}", data_type, symbol) from None


def _symbol_of(data: Mapping[str, Any]) -> str | None:
    symbol = data.get("s")
    return symbol if isinstance(symbol, str) else None


def _missing(kind: str, key: str, data: Mapping[str, Any], data_type: DataType) -> MalformedMessage:
    return MalformedMessage(
        "missing_field",
        f"expected field {key!r} in a Binance {kind}, found keys {sorted(data)}",
        data_type,
        _symbol_of(data),
    )


def _int(value: Any, name: str, data_type: DataType, symbol: str | None) -> int:
    if type(value) is not int:
        raise MalformedMessage(
            "bad_field", f"expected {name} as an integer, found {value!r}", data_type, symbol
        )
    return value


_TRADE_KEYS = frozenset({"e", "s", "t", "p", "q", "T", "m", "M"})
_AGG_KEYS = frozenset({"e", "s", "a", "p", "q", "T", "m", "M"})
_BOOK_KEYS = frozenset({"e", "s", "u", "b", "B", "a", "A", "T"})


def _trade_row(
    market: BinanceMarket,
    symbol: str,
    ident: int,
    price: int,
    qty: int,
    quote_qty: int | None,
    is_buyer_maker: Any,
    trade_ms: int,
    receipt_us: int,
    best_match: Any,
    vendor: dict[str, str],
) -> dict[str, Any]:
    if type(is_buyer_maker) is not bool:
        raise MalformedMessage(
            "bad_field",
            f"expected the buyer-is-maker flag as a boolean, found {is_buyer_maker!r}",
            DataType.TRADES,
            symbol,
        )
    return {
        "exchange": market.exchange,
        "symbol": symbol,
        "instrument": _instrument(symbol),
        "asset_class": market.asset_class,
        "trade_id": ident,
        "price": price,
        "quantity": qty,
        "quote_quantity": quote_qty,
        # Buyer is maker => the taker (aggressor) sold.
        "side": "SELL" if is_buyer_maker else "BUY",
        "exchange_ts": trade_ms * 1000,
        "receipt_ts": receipt_us,
        "ingest_ts": None,
        "source_sequence": ident,
        "conditions": ["BEST_MATCH"] if best_match is True else [],
        "vendor": vendor,
        "currency": None,  # the stream does not say which part of BTCUSDT is the quote: landing fills it from reference data
    }


def _parse_trade_payload(
    data: Mapping[str, Any],
    receipt_us: int,
    market: BinanceMarket,
    kind: str,
    id_key: str,
    used: frozenset[str],
) -> dict[str, Any]:
    """A ``trade`` or ``aggTrade`` payload (they differ in the id key and the extra fields) -> wire-form TRADE."""
    try:
        symbol, ident, price, qty, trade_ms, maker = (
            data["s"],
            data[id_key],
            data["p"],
            data["q"],
            data["T"],
            data["m"],
        )
    except KeyError as exc:
        raise _missing(kind, exc.args[0], data, DataType.TRADES) from None
    if not isinstance(symbol, str):
        raise MalformedMessage(
            "bad_field", f"expected s as a string, found {symbol!r}", DataType.TRADES, None
        )
    vendor = {k: str(v) for k, v in data.items() if k not in used}
    return _trade_row(
        market,
        symbol,
        _int(ident, id_key, DataType.TRADES, symbol),
        _decimal(price, "p", DataType.TRADES, symbol),
        _decimal(qty, "q", DataType.TRADES, symbol),
        None,
        maker,
        _int(trade_ms, "T", DataType.TRADES, symbol),
        receipt_us,
        data.get("M"),
        vendor,
    )


def parse_trade(data: Mapping[str, Any], receipt_us: int, market: BinanceMarket = SPOT) -> dict[str, Any]:
    """A ``trade`` stream payload -> wire-form TRADE (raises :class:`MalformedMessage`).

    >>> parse_trade({"s": "BTCUSDT", "t": 1, "p": "2.5", "q": "1", "T": 3, "m": False}, 4)["side"]
    'BUY'
    """
    return _parse_trade_payload(data, receipt_us, market, "trade", "t", _TRADE_KEYS)


def parse_agg_trade(data: Mapping[str, Any], receipt_us: int, market: BinanceMarket = USDM) -> dict[str, Any]:
    """An ``aggTrade`` payload -> wire-form TRADE with the aggregate id as ``trade_id``.

    >>> parse_agg_trade({"e": "aggTrade", "E": 5, "s": "BTCUSDT", "a": 7, "p": "1.5", "q": "2", "f": 10, "l": 12,
    ...     "T": 4, "m": False}, 9)["vendor"]
    {'E': '5', 'f': '10', 'l': '12'}
    """
    return _parse_trade_payload(data, receipt_us, market, "aggTrade", "a", _AGG_KEYS)


def parse_book_ticker(
    data: Mapping[str, Any], receipt_us: int, market: BinanceMarket = SPOT
) -> dict[str, Any]:
    """A ``bookTicker`` payload -> wire-form QUOTE (receipt time as exchange time when the venue sends none).

    >>> q = parse_book_ticker({"u": 1, "s": "BTCUSDT", "b": "1.0", "B": "2", "a": "1.1", "A": "3"}, 1000)
    >>> q["exchange_ts"], q["vendor"], q["ask_price"]
    (1000, {'ts_source': 'receipt'}, 110000000)
    """
    try:
        symbol, update_id, bid, bid_size, ask, ask_size = (
            data["s"],
            data["u"],
            data["b"],
            data["B"],
            data["a"],
            data["A"],
        )
    except KeyError as exc:
        raise _missing("bookTicker", exc.args[0], data, DataType.QUOTES) from None
    if not isinstance(symbol, str):
        raise MalformedMessage(
            "bad_field", f"expected s as a string, found {symbol!r}", DataType.QUOTES, None
        )
    vendor = {k: str(v) for k, v in data.items() if k not in _BOOK_KEYS}
    if "T" in data:
        exchange_ts = _int(data["T"], "T", DataType.QUOTES, symbol) * 1000
    elif "E" in data:
        exchange_ts = _int(data["E"], "E", DataType.QUOTES, symbol) * 1000
    else:
        exchange_ts = receipt_us
        vendor["ts_source"] = "receipt"
    return {
        "exchange": market.exchange,
        "symbol": symbol,
        "instrument": _instrument(symbol),
        "asset_class": market.asset_class,
        "update_id": _int(update_id, "u", DataType.QUOTES, symbol),
        "bid_price": _decimal(bid, "b", DataType.QUOTES, symbol),
        "bid_size": _decimal(bid_size, "B", DataType.QUOTES, symbol),
        "ask_price": _decimal(ask, "a", DataType.QUOTES, symbol),
        "ask_size": _decimal(ask_size, "A", DataType.QUOTES, symbol),
        "exchange_ts": exchange_ts,
        "receipt_ts": receipt_us,
        "ingest_ts": None,
        "vendor": vendor,
        "currency": None,  # filled at landing from reference.instruments (Binance's quoteAsset)
    }


def parse_rest_trade(
    item: Mapping[str, Any], symbol: str, receipt_us: int, market: BinanceMarket = SPOT
) -> dict[str, Any]:
    """One ``/api/v3/historicalTrades`` (or ``/trades``) item -> wire-form TRADE.

    >>> parse_rest_trade({"id": 5, "price": "2.5", "qty": "4", "quoteQty": "10", "time": 7, "isBuyerMaker": False,
    ...     "isBestMatch": True}, "BTCUSDT", 9)["quote_quantity"]
    1000000000
    """
    try:
        ident, price, qty, trade_ms, maker = (
            item["id"],
            item["price"],
            item["qty"],
            item["time"],
            item["isBuyerMaker"],
        )
    except KeyError as exc:
        raise _missing("REST trade", exc.args[0], item, DataType.TRADES) from None
    quote_qty: int | None = None
    vendor = {"backfill": "rest"}
    if isinstance(item.get("quoteQty"), str):
        try:
            quote_qty = to_unscaled(item["quoteQty"])
        except ValueError:  # more precision than decimal(18, 8): keep the published text
            vendor["quoteQty"] = item["quoteQty"]
    return _trade_row(
        market,
        symbol,
        _int(ident, "id", DataType.TRADES, symbol),
        _decimal(price, "price", DataType.TRADES, symbol),
        _decimal(qty, "qty", DataType.TRADES, symbol),
        quote_qty,
        maker,
        _int(trade_ms, "time", DataType.TRADES, symbol),
        receipt_us,
        item.get("isBestMatch"),
        vendor,
    )


def parse_rest_agg_trade(
    item: Mapping[str, Any], symbol: str, receipt_us: int, market: BinanceMarket = USDM
) -> dict[str, Any]:
    """One ``aggTrades`` REST item (same keys as the stream, without ``e``/``E``/``s``) -> wire-form TRADE.

    >>> parse_rest_agg_trade({"a": 9, "p": "1", "q": "2", "f": 1, "l": 2, "T": 5, "m": True}, "BTCUSDT", 6)["vendor"]
    {'f': '1', 'l': '2', 'backfill': 'rest'}
    """
    row = parse_agg_trade({**item, "s": symbol}, receipt_us, market)
    row["vendor"] = {**row["vendor"], "backfill": "rest"}
    return row


_STREAM_GUESS = re.compile(rb'"stream"\s*:\s*"([a-z0-9]+)@([A-Za-z]+)')
_SYMBOL_GUESS = re.compile(rb'"s"\s*:\s*"([A-Z0-9]+)"')


def _guess_route(frame: Frame) -> tuple[DataType, str | None]:
    raw = frame.encode(errors="replace") if isinstance(frame, str) else frame
    match = _STREAM_GUESS.search(raw)
    if match:
        data_type = DataType.QUOTES if match.group(2) == b"bookTicker" else DataType.TRADES
        return data_type, match.group(1).decode().upper()
    symbol = _SYMBOL_GUESS.search(raw)
    return DataType.TRADES, symbol.group(1).decode() if symbol else None


def _preview(frame: Frame, size: int = 120) -> str:
    return repr(frame[:size])


def parse_payload(
    obj: Any, receipt_us: int, market: BinanceMarket = SPOT, frame: Frame = b""
) -> Event | None:
    """A decoded Binance frame (combined envelope or raw payload) -> :class:`Event` (None: nothing to store).

    >>> parse_payload({"e": "serverShutdown", "E": 1}, 0).kind
    'reconnect'
    """
    if not isinstance(obj, dict):
        data_type, symbol = _guess_route(frame)
        raise MalformedMessage(
            "bad_json",
            f"expected a JSON object, found {type(obj).__name__}: {_preview(frame)}",
            data_type,
            symbol,
        )
    stream = obj.get("stream")
    if stream is None:
        if "result" in obj and "id" in obj:
            return None  # SUBSCRIBE acknowledgement
        if "error" in obj or ("code" in obj and "msg" in obj):
            return Event("error", detail=orjson.dumps(obj).decode()[:500])
        data: Any = obj
        kind = obj.get("e") or ("bookTicker" if "u" in obj and "b" in obj else "")
    else:
        data = obj.get("data")
        kind = str(stream).partition("@")[2]
        if not isinstance(data, dict):
            data_type = DataType.QUOTES if kind == "bookTicker" else DataType.TRADES
            raise MalformedMessage(
                "missing_field",
                f"expected a 'data' object in stream {stream!r}, found {data!r}"[:300],
                data_type,
                str(stream).partition("@")[0].upper() or None,
            )
    if kind == "trade":
        row = parse_trade(data, receipt_us, market)
        return Event("trade", row["symbol"], row["trade_id"], row)
    if kind == "aggTrade":
        row = parse_agg_trade(data, receipt_us, market)
        return Event("trade", row["symbol"], row["trade_id"], row)
    if kind == "bookTicker":
        row = parse_book_ticker(data, receipt_us, market)
        return Event("quote", row["symbol"], row["update_id"], row)
    if kind.startswith("depth"):
        from k2.sources.binance_depth import parse_depth_update  # that module builds on this one

        depth = parse_depth_update(data, receipt_us, frame if isinstance(frame, bytes) else frame.encode())
        return Event("depth", depth.symbol, depth.last_update_id, {"event": depth})
    if data.get("e") == "serverShutdown":
        return Event("reconnect", detail="serverShutdown")
    return None  # other streams (depth, kline...) are not stored by this feed


def parse_frame(frame: Frame, receipt_us: int, market: BinanceMarket = SPOT) -> Event | None:
    """A raw WebSocket frame -> :class:`Event`; malformed frames raise :class:`MalformedMessage`.

    >>> parse_frame('{"result":null,"id":1}', 0) is None
    True
    >>> parse_frame('{"stream":"btcusdt@trade","data":{"s":"BTCUSDT"', 0)
    Traceback (most recent call last):
    ...
    k2.sources.live.adapter.MalformedMessage: bad_json: expected JSON, found '{"stream":"btcusdt@trade","data":{"s":"BTCUSDT"' (unexpected end of data: line 1 column 48 (char 47))
    """
    try:
        obj = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        data_type, symbol = _guess_route(frame)
        raise MalformedMessage(
            "bad_json", f"expected JSON, found {_preview(frame)} ({exc})", data_type, symbol
        ) from None
    return parse_payload(obj, receipt_us, market, frame)
