"""Coinbase messages -> wire-form rows: ``match``/``last_match`` trades, ``ticker`` quotes, REST trades.

See :mod:`k2.sources.coinbase` for the mapping (the maker-side rule included). Malformed input raises
:class:`k2.sources.live.MalformedMessage` naming what was expected and found.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from k2.model import DataType
from k2.model.values import canonical_instrument, datetime_to_micros, quote_currency, to_unscaled
from k2.sources.live import (
    Event,
    FatalSourceError,
    Frame,
    MalformedMessage,
    normalise_names,
)

EXCHANGE = "coinbase"
ASSET_CLASS = "crypto"
_PRODUCT = re.compile(r"^[A-Z0-9]{1,20}-[A-Z0-9]{1,20}$")
_ISO = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})?$")


def parse_time(text: str) -> tuple[int, bool]:
    """``(epoch microseconds, exact)`` of a Coinbase ISO-8601 time; ``exact`` is False when digits below 1 µs were dropped.

    >>> parse_time("2021-04-17T16:43:37.089723Z")
    (1618677817089723, True)
    >>> parse_time("2021-04-17T16:43:37.1Z")
    (1618677817100000, True)
    >>> parse_time("2021-04-17T16:43:37.123456789Z")
    (1618677817123456, False)
    """
    match = _ISO.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"expected an ISO-8601 time like 2021-04-17T16:43:37.089723Z, found {text!r}")
    date, clock, fraction, zone = match.groups()
    base = datetime_to_micros(datetime.fromisoformat(f"{date}T{clock}").replace(tzinfo=UTC))
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        hours, minutes = int(zone[1:3]), int(zone[-2:])
        base -= sign * int(timedelta(hours=hours, minutes=minutes).total_seconds()) * 1_000_000
    fraction = fraction or ""
    micros = int(fraction[:6].ljust(6, "0")) if fraction else 0
    return base + micros, not fraction[6:].strip("0")


def _product(msg: Mapping[str, Any], data_type: DataType) -> str:
    product = msg.get("product_id")
    if not isinstance(product, str) or not product:
        raise MalformedMessage(
            "missing_field", f"expected a product_id string, found {product!r}", data_type, None
        )
    return product


def _decimal(
    msg: Mapping[str, Any], key: str, data_type: DataType, product: str, required: bool = True
) -> int | None:
    value = msg.get(key)
    if value is None or value == "":
        if required:
            raise MalformedMessage(
                "missing_field",
                f"expected field {key!r} in a Coinbase {msg.get('type')}, found keys {sorted(msg)}",
                data_type,
                product,
            )
        return None
    if not isinstance(value, str):
        raise MalformedMessage(
            "bad_number", f"expected {key} as a decimal string, found {value!r}", data_type, product
        )
    try:
        return to_unscaled(value)
    except ValueError as exc:
        raise MalformedMessage("bad_number", f"{key}: {exc}", data_type, product) from None


def _time(msg: Mapping[str, Any], data_type: DataType, product: str, vendor: dict[str, str]) -> int | None:
    text = msg.get("time")
    if text is None:
        return None
    try:
        micros, exact = parse_time(text)
    except ValueError as exc:
        raise MalformedMessage("bad_field", str(exc), data_type, product) from None
    if not exact:
        vendor["time"] = text
    return micros


def _vendor(msg: Mapping[str, Any], used: frozenset[str]) -> dict[str, str]:
    return {k: str(v) for k, v in msg.items() if k not in used and isinstance(v, (str, int, float, bool))}


_MATCH_KEYS = frozenset({"type", "trade_id", "product_id", "price", "size", "side", "time", "sequence"})
_TICKER_KEYS = frozenset(
    {"type", "product_id", "sequence", "best_bid", "best_ask", "best_bid_size", "best_ask_size", "time"}
)


def parse_match(msg: Mapping[str, Any], receipt_us: int) -> dict[str, Any]:
    """A ``match``/``last_match`` message (or REST trade with ``product_id``) -> wire-form TRADE.

    >>> parse_match({"type": "last_match", "trade_id": 5, "side": "buy", "size": "1", "price": "2",
    ...     "product_id": "BTC-USD", "time": "2021-04-17T16:43:37Z"}, 0)["vendor"]
    {'type': 'last_match'}
    """
    product = _product(msg, DataType.TRADES)
    trade_id = msg.get("trade_id")
    if type(trade_id) is not int:
        reason = "missing_field" if trade_id is None else "bad_field"
        raise MalformedMessage(
            reason, f"expected an integer trade_id, found {trade_id!r}", DataType.TRADES, product
        )
    maker_side = msg.get("side")
    if maker_side not in ("buy", "sell"):
        raise MalformedMessage(
            "bad_field", f"expected side 'buy' or 'sell', found {maker_side!r}", DataType.TRADES, product
        )
    price = _decimal(msg, "price", DataType.TRADES, product)
    size = _decimal(msg, "size", DataType.TRADES, product)
    vendor = _vendor(msg, _MATCH_KEYS)
    if msg.get("type") == "last_match":
        vendor["type"] = "last_match"
    exchange_ts = _time(msg, DataType.TRADES, product, vendor)
    if exchange_ts is None:
        raise MalformedMessage(
            "missing_field",
            f"expected a time in a Coinbase match, found keys {sorted(msg)}",
            DataType.TRADES,
            product,
        )
    sequence = msg.get("sequence")
    return {
        "exchange": EXCHANGE,
        "symbol": product,
        "instrument": canonical_instrument(product),
        "asset_class": ASSET_CLASS,
        "trade_id": trade_id,
        "price": price,
        "quantity": size,
        "quote_quantity": None,
        # Coinbase reports the maker's side; the aggressor took the other side.
        "side": "BUY" if maker_side == "sell" else "SELL",
        "exchange_ts": exchange_ts,
        "receipt_ts": receipt_us,
        "ingest_ts": None,
        "source_sequence": sequence if type(sequence) is int else None,
        "conditions": [],
        "vendor": vendor,
        "currency": quote_currency(EXCHANGE, product),  # the product id says it: BTC-USD -> USD
    }


def parse_ticker(msg: Mapping[str, Any], receipt_us: int) -> dict[str, Any]:
    """A ``ticker`` message -> wire-form QUOTE (best bid/ask; sizes when the venue sends them).

    >>> q = parse_ticker({"type": "ticker", "sequence": 7, "product_id": "BAND-GBP", "best_bid": "14.7550",
    ...     "best_ask": "14.8060", "price": "14.7775", "time": "2021-04-17T16:43:30.244075Z"}, 0)
    >>> q["update_id"], q["bid_price"], q["bid_size"], q["vendor"]
    (7, 1475500000, None, {'price': '14.7775'})
    """
    product = _product(msg, DataType.QUOTES)
    sequence = msg.get("sequence")
    if type(sequence) is not int:
        reason = "missing_field" if sequence is None else "bad_field"
        raise MalformedMessage(
            reason, f"expected an integer sequence in a ticker, found {sequence!r}", DataType.QUOTES, product
        )
    vendor = _vendor(msg, _TICKER_KEYS)
    exchange_ts = _time(msg, DataType.QUOTES, product, vendor)
    if exchange_ts is None:
        exchange_ts = receipt_us
        vendor["ts_source"] = "receipt"
    return {
        "exchange": EXCHANGE,
        "symbol": product,
        "instrument": canonical_instrument(product),
        "asset_class": ASSET_CLASS,
        "update_id": sequence,
        "bid_price": _decimal(msg, "best_bid", DataType.QUOTES, product, required=False),
        "bid_size": _decimal(msg, "best_bid_size", DataType.QUOTES, product, required=False),
        "ask_price": _decimal(msg, "best_ask", DataType.QUOTES, product, required=False),
        "ask_size": _decimal(msg, "best_ask_size", DataType.QUOTES, product, required=False),
        "exchange_ts": exchange_ts,
        "receipt_ts": receipt_us,
        "ingest_ts": None,
        "vendor": vendor,
        "currency": quote_currency(EXCHANGE, product),
    }


def parse_rest_trade(item: Mapping[str, Any], product: str, receipt_us: int) -> dict[str, Any]:
    """One ``GET /products/<id>/trades`` item (its ``side`` is the maker side, as on the feed) -> TRADE.

    >>> parse_rest_trade({"time": "2021-04-17T16:43:37.121358Z", "trade_id": 9, "price": "0.791", "size": "450",
    ...     "side": "buy"}, "SKL-USD", 0)["side"]
    'SELL'
    """
    row = parse_match({**item, "product_id": product}, receipt_us)
    row["vendor"] = {**row["vendor"], "backfill": "rest"}
    return row


_TYPE_GUESS = re.compile(rb'"type"\s*:\s*"([a-z_]+)"')
_PRODUCT_GUESS = re.compile(rb'"product_id"\s*:\s*"([A-Za-z0-9-]+)"')


def _guess_route(frame: Frame) -> tuple[DataType, str | None]:
    raw = frame.encode(errors="replace") if isinstance(frame, str) else frame
    kind = _TYPE_GUESS.search(raw)
    product = _PRODUCT_GUESS.search(raw)
    data_type = DataType.QUOTES if kind and kind.group(1) == b"ticker" else DataType.TRADES
    return data_type, product.group(1).decode() if product else None


def parse_message(msg: Any, receipt_us: int, frame: Frame = b"") -> Event | None:
    """A decoded Coinbase message -> :class:`Event` (None for channels not stored: l2update, heartbeat...).

    >>> parse_message({"type": "heartbeat", "product_id": "BTC-USD"}, 0) is None
    True
    """
    if not isinstance(msg, dict):
        data_type, product = _guess_route(frame)
        raise MalformedMessage(
            "bad_json",
            f"expected a JSON object, found {type(msg).__name__}: {frame[:120]!r}",
            data_type,
            product,
        )
    kind = msg.get("type")
    if kind in ("match", "last_match"):
        row = parse_match(msg, receipt_us)
        return Event("trade", row["symbol"], row["trade_id"], row)
    if kind == "ticker":
        row = parse_ticker(msg, receipt_us)
        return Event("quote", row["symbol"], row["update_id"], row)
    if kind == "error":
        detail = f"{msg.get('message')}: {msg.get('reason')}"
        if "subscribe" in str(msg.get("message", "")).lower():
            raise FatalSourceError(f"expected Coinbase to accept the subscription, found error {detail}")
        return Event("error", detail=detail)
    if kind is None:
        data_type, product = _guess_route(frame)
        raise MalformedMessage(
            "missing_field",
            f"expected a 'type' in a Coinbase message, found keys {sorted(msg)}",
            data_type,
            product,
        )
    return None


def parse_frame(frame: Frame, receipt_us: int) -> Event | None:
    """A raw frame -> :class:`Event`; malformed frames raise :class:`MalformedMessage`.

    >>> parse_frame('{"type":"subscriptions","channels":[]}', 0) is None
    True
    """
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        data_type, product = _guess_route(frame)
        raise MalformedMessage(
            "bad_json", f"expected JSON, found {frame[:120]!r} ({exc})", data_type, product
        ) from None
    return parse_message(msg, receipt_us, frame)


def normalise_products(products: Iterable[str]) -> list[str]:
    """Upper-cased, de-duplicated Coinbase product ids; raises ValueError for anything not ``BASE-QUOTE``.

    >>> normalise_products(["btc-usd", "ETH-USD", "BTC-USD"])
    ['BTC-USD', 'ETH-USD']
    """
    return normalise_names(products, _PRODUCT, "a Coinbase product id like BTC-USD", "product")
