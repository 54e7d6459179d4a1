"""Coinbase Exchange: WebSocket ``matches`` and ``ticker`` -> wire-form TRADE/QUOTE, the live feed, captures.

Connection: ``wss://ws-feed.exchange.coinbase.com``; after connecting the client sends one
``{"type": "subscribe", "product_ids": [...], "channels": ["matches", "ticker", "heartbeat"]}`` and
the server confirms with a ``subscriptions`` message. ``heartbeat`` (one per product per second) keeps
quiet products from looking like a stalled connection. An ``error`` answer to the subscription (e.g.
an unknown product) is fatal: reconnecting would not change it.

Mapping (exact; times parse to the microsecond, the published text is kept in ``vendor["time"]``
when it has sub-microsecond digits):

* ``match`` / ``last_match`` -> TRADE: ``trade_id`` (contiguous per product: gaps are detected and
  backfilled from ``GET /products/<id>/trades``), ``price``, ``size`` -> quantity, ``time`` ->
  ``exchange_ts``, ``sequence`` -> ``source_sequence``. **Side**: Coinbase's ``side`` is the *maker*
  order's side, so the aggressor is the opposite: ``side="sell"`` (a resting sell was hit) -> ``BUY``,
  ``side="buy"`` -> ``SELL``. ``last_match`` (the last trade before we subscribed, sent on every
  (re)subscription) is a trade too; source dedup drops it when it was already produced.
* ``ticker`` -> QUOTE: ``sequence`` -> ``update_id``, ``best_bid``/``best_ask`` -> prices,
  ``best_bid_size``/``best_ask_size`` -> sizes when present (the 2021 API did not send them), ``time``
  -> ``exchange_ts``; the other fields (last price, 24 h stats) go to ``vendor``.
* ``level2`` (subscribed unless ``CoinbaseFeed(depth=False)`` / ``k2 stream coinbase --no-depth``):
  ``snapshot`` and ``l2update`` -> BOOK_DELTA rows through :mod:`k2.sources.coinbase_depth` (the parser
  the capture tests use); Coinbase sends a fresh ``snapshot`` on every (re)subscription, which restarts
  the product's book, so a reconnect needs no REST call. An ``l2update`` before any snapshot of its
  product is dead-lettered (``no_snapshot``).
* Canonical instrument: Coinbase product ids already are ``BASE-QUOTE`` (``BTC-USD``); the product id
  is also the ``symbol``.

Example:
    >>> row = parse_match({"type": "match", "trade_id": 1568268, "side": "sell", "size": "450", "price": "0.791",
    ...     "product_id": "SKL-USD", "sequence": 201390075, "time": "2021-04-17T16:43:37.121358Z"}, 0)
    >>> row["side"], row["price"], row["exchange_ts"], row["source_sequence"]
    ('BUY', 79100000, 1618677817121358, 201390075)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from k2.model import QUOTE, TRADE, DataType, RecordType
from k2.model.values import canonical_instrument, datetime_to_micros, quote_currency, to_unscaled
from k2.sources.live import (
    ControlSender,
    Event,
    FatalSourceError,
    FeedAdapter,
    Frame,
    MalformedMessage,
    RestClient,
    RestRefused,
    normalise_names,
    now_us,
)

EXCHANGE = "coinbase"
ASSET_CLASS = "crypto"
DEFAULT_CHANNELS = ("matches", "ticker", "heartbeat")
DEPTH_CHANNEL = "level2"  # snapshot + l2update (k2.sources.coinbase_depth); on unless depth=False
_DEPTH_TYPE = re.compile(rb'"type"\s*:\s*"(?:snapshot|l2update)"')
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


class CoinbaseFeed(FeedAdapter):
    """Matches and ticker of some products over one Coinbase Exchange WebSocket connection.

    Example::

        feed = CoinbaseFeed(["BTC-USD", "ETH-USD"], ws_url=settings.coinbase_ws_url, rest_url=settings.coinbase_rest_url)
    """

    source = EXCHANGE
    exchange = EXCHANGE
    asset_class = ASSET_CLASS
    control_rate = 4.0  # Coinbase allows 8 messages/s per IP; keep headroom
    connect_rate = 1.0
    connect_burst = 10.0

    def __init__(
        self,
        products: Iterable[str],
        ws_url: str = "wss://ws-feed.exchange.coinbase.com",
        rest_url: str = "https://api.exchange.coinbase.com",
        channels: Iterable[str] = DEFAULT_CHANNELS,
        rest_max_wait_seconds: float = 60.0,
        depth: bool = True,
    ) -> None:
        from k2.sources.coinbase_depth import CoinbaseBooks  # that module builds on this one

        self.products = normalise_products(products)
        self.ws_url = ws_url
        self.rest_url = rest_url.rstrip("/")
        self.depth = depth
        self.channels = list(channels) + ([DEPTH_CHANNEL] if depth and DEPTH_CHANNEL not in channels else [])
        self.rest_max_wait_seconds = rest_max_wait_seconds
        self._books = CoinbaseBooks()

    def url(self) -> str:
        """The feed URL (Coinbase subscribes by message, not by URL)."""
        return self.ws_url

    async def on_open(self, send: ControlSender) -> None:
        """Send the one ``subscribe`` message."""
        await send(
            orjson.dumps(
                {"type": "subscribe", "product_ids": self.products, "channels": self.channels}
            ).decode()
        )

    def parse(self, frame: Frame, receipt_us: int) -> Event | None:
        """See :func:`parse_frame`; with depth, ``snapshot``/``l2update`` become ``depth`` events.

        The rows are made here (:class:`k2.sources.coinbase_depth.CoinbaseBooks`, which keeps each
        product's update ids) so a bad level2 message is dead-lettered like any malformed frame.
        """
        if self.depth and _DEPTH_TYPE.search(frame if isinstance(frame, bytes) else frame.encode()):
            try:
                msg = orjson.loads(frame)
            except orjson.JSONDecodeError:
                return parse_frame(frame, receipt_us)  # raises the usual bad_json
            if isinstance(msg, dict) and msg.get("type") in ("snapshot", "l2update"):
                rows = self._books.on_message(msg, receipt_us)
                if not rows:
                    return None
                return Event("depth", rows[0]["symbol"], rows[-1]["last_update_id"], {"rows": rows})
            return parse_message(msg, receipt_us, frame)
        return parse_frame(frame, receipt_us)

    def on_depth(self, event: Event) -> Any:
        """The rows :meth:`parse` made for one level2 message (no chain to check, no REST snapshot)."""
        from k2.sources.coinbase_depth import DepthStep

        assert event.row is not None
        return DepthStep(event.row["rows"])

    def rest_client(self) -> RestClient:
        """A REST client paced below Coinbase's public request rate."""
        # Public endpoints: 10 requests/s per IP (burst 15); stay below.
        return RestClient(
            self.rest_url, requests_per_second=8.0, burst=8.0, max_wait_seconds=self.rest_max_wait_seconds
        )

    async def fetch_trades(
        self, rest: RestClient, symbol: str, first: int, last: int | None
    ) -> list[dict[str, Any]]:
        """Trades ``first..last`` from ``/products/<id>/trades`` (newest first; ``after=<id>`` pages to older ids)."""
        rows: dict[int, dict[str, Any]] = {}
        after: int | None = None if last is None else last + 1
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if after is not None:
                params["after"] = after
            data, headers = await rest.get_json(f"/products/{symbol}/trades", params)
            receipt = now_us()
            if not isinstance(data, list):
                raise RestRefused(f"expected a JSON list of trades for {symbol}, found {str(data)[:200]}")
            if not data:
                break
            lowest: int | None = None
            for item in data:
                if not isinstance(item, dict):
                    continue  # its id counts as not supplied
                try:
                    row = parse_rest_trade(item, symbol, receipt)
                except MalformedMessage:
                    continue  # its id counts as not supplied
                ident = row["trade_id"]
                lowest = ident if lowest is None else min(lowest, ident)
                if ident >= first and (last is None or ident <= last):
                    rows.setdefault(ident, row)
            if lowest is None or lowest <= first:
                break
            cursor = headers.get("cb-after")
            next_after = int(cursor) if cursor and cursor.isdigit() else lowest
            if after is not None and next_after >= after:
                break  # no progress
            after = next_after
        return [rows[i] for i in sorted(rows)]


# -- capture files (cryptofeed raw format) ---------------------------------------------------------
def iter_capture_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """``(receive time ns, raw JSON)`` for each *received* line of a cryptofeed raw capture.

    Line 1 is ``<url> <-> <connect ts>``, sent messages are ``<url> <- <ts>: <json>`` (skipped),
    received ones ``<epoch seconds>: <json>``; the seconds are converted exactly (Decimal).

    Example::

        ns, raw = next(iter_capture_lines("cryptofeed-coinbase-2021-04-17.raw.txt"))
    """
    with Path(path).open("rb") as handle:
        for lineno, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            head, sep, raw = line.partition(b": ")
            if not sep or b" " in head:
                continue  # connection header or an outgoing message
            try:
                ns = int(Decimal(head.decode()) * 1_000_000_000)
            except ArithmeticError:
                raise ValueError(
                    f"{path}:{lineno}: expected '<epoch seconds>: <json>', found {line[:80]!r}"
                ) from None
            yield ns, raw


def iter_capture(
    path: str | Path, types: Iterable[str] = ("match", "last_match", "ticker")
) -> Iterator[tuple[RecordType, dict[str, Any], dict[str, Any]]]:
    """``(TRADE|QUOTE, wire-form row, raw message)`` per match/ticker of a capture (receipt time from the file).

    Example::

        trades = [row for record, row, _ in iter_capture("cryptofeed-coinbase-2021-04-17.raw.txt") if record is TRADE]
    """
    wanted = frozenset(types)
    for ns, raw in iter_capture_lines(path):
        msg = orjson.loads(raw)
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind not in wanted:
            continue
        try:
            if kind == "ticker":
                yield QUOTE, parse_ticker(msg, ns // 1000), msg
            else:
                yield TRADE, parse_match(msg, ns // 1000), msg
        except MalformedMessage as exc:
            raise ValueError(f"{path}: message received at {ns} ns: {exc}") from None
