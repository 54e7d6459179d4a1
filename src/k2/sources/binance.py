"""Binance: market presets, WebSocket/REST message -> wire-form parsing, the live feed adapter, capture files.

Streams used: ``<symbol>@trade`` (spot, Binance US) or ``<symbol>@aggTrade`` (USD-M futures, whose
public trade stream is the aggregate one) and ``<symbol>@bookTicker``, over *combined streams*
(``/stream?streams=a/b``; payloads arrive as ``{"stream": ..., "data": ...}``). Up to 200 streams go
in the URL; more are added with ``SUBSCRIBE`` messages sent at most ``control_rate`` per second
(Binance allows 5/s on spot, 10/s on futures, and disconnects clients that send more); one
connection carries at most 1024 streams, so :func:`feeds_for_symbols` shards larger symbol lists.

Mapping (all exact: decimals via :func:`k2.model.values.to_unscaled`, times in epoch microseconds):

* trade: ``t`` -> ``trade_id`` and ``source_sequence``; ``p``/``q`` -> price/quantity; ``T`` (ms) ->
  ``exchange_ts``; ``m`` true means the *buyer is the maker*, so the aggressor SOLD (``side=SELL``),
  else BUY; ``M`` true -> ``conditions=["BEST_MATCH"]``; other fields (``E``...) -> ``vendor`` as strings.
* aggTrade: ``a`` is the (contiguous) aggregate id used as ``trade_id``; ``f``/``l`` go to ``vendor``.
* bookTicker: ``u`` -> ``update_id``; ``b``/``B``/``a``/``A`` -> bid/ask price/size. Spot sends no event
  time, so ``exchange_ts`` is the receipt time and ``vendor={"ts_source": "receipt"}``; futures send
  ``T`` (transaction time), which is used.
* REST ``/api/v3/historicalTrades`` rows (backfill) map the same way (``isBuyerMaker`` -> side) and
  carry the published ``quoteQty`` and ``vendor={"backfill": "rest"}``.

Example:
    >>> row = parse_trade({"e": "trade", "E": 1723161255343, "s": "BTCUSDT", "t": 3735683259,
    ...     "p": "61837.63000000", "q": "0.02000000", "T": 1723161255342, "m": True, "M": True}, 1723161254087896)
    >>> row["price"], row["side"], row["exchange_ts"], row["conditions"], row["vendor"]
    (6183763000000, 'SELL', 1723161255342000, ['BEST_MATCH'], {'E': '1723161255343'})
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from k2.config import Settings
from k2.model import QUOTE, TRADE, DataType, RecordType
from k2.model.values import canonical_instrument, to_unscaled
from k2.sources.live import (
    ControlSender,
    Event,
    FeedAdapter,
    Frame,
    MalformedMessage,
    RestClient,
    RestRefused,
    normalise_names,
    now_us,
)


@dataclass(frozen=True)
class BinanceMarket:
    """One Binance market: where it is, what it is called in K2, and its published limits."""

    name: str
    exchange: str
    asset_class: str
    ws_url: str
    rest_url: str
    trade_stream: str  # "trade" or "aggTrade"
    trades_path: str  # REST endpoint for backfill by id
    trades_weight: int  # request weight of one backfill call
    weight_limit: int  # request weight per minute per IP
    control_rate: float  # incoming messages per second the server accepts from a client
    max_streams: int = 1024


SPOT = BinanceMarket(
    "spot",
    "binance",
    "crypto",
    "wss://stream.binance.com:9443",
    "https://api.binance.com",
    "trade",
    "/api/v3/historicalTrades",
    25,
    6000,
    5.0,
)
US = BinanceMarket(
    "us",
    "binance-us",
    "crypto",
    "wss://stream.binance.us:9443",
    "https://api.binance.us",
    "trade",
    "/api/v3/historicalTrades",
    25,
    1200,
    5.0,
)
USDM = BinanceMarket(
    "usdm",
    "binance-futures",
    "futures",
    "wss://fstream.binance.com",
    "https://fapi.binance.com",
    "aggTrade",
    "/fapi/v1/aggTrades",
    20,
    2400,
    10.0,
)
MARKETS: dict[str, BinanceMarket] = {m.name: m for m in (SPOT, US, USDM)}
URL_STREAM_LIMIT = 200
_SYMBOL = re.compile(r"^[A-Z0-9]{2,30}$")


def market_for_url(url: str) -> BinanceMarket:
    """The market a WebSocket or REST URL belongs to (spot for anything unrecognised, e.g. a local fake).

    >>> market_for_url("wss://fstream.binance.com").name, market_for_url("wss://stream.binance.us:9443").name
    ('usdm', 'us')
    """
    host = re.sub(r"^[a-z]+://", "", url.lower()).split("/", 1)[0]
    if host.startswith(("fstream.", "fapi.")):
        return USDM
    if host.endswith("binance.us") or ".binance.us:" in host:
        return US
    return SPOT


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


def normalise_symbols(symbols: Iterable[str]) -> list[str]:
    """Upper-cased, de-duplicated symbols in order; raises ValueError on anything that is not a Binance symbol.

    >>> normalise_symbols(["btcusdt", " ETHUSDT", "BTCUSDT"])
    ['BTCUSDT', 'ETHUSDT']
    """
    return normalise_names(symbols, _SYMBOL, "a Binance symbol like BTCUSDT", "symbol")


class BinanceFeed(FeedAdapter):
    """Trades and best bid/offer of some symbols over one combined-stream connection.

    Example::

        feed = BinanceFeed(["BTCUSDT", "ETHUSDT"], market=SPOT)
        feed.url()  # 'wss://stream.binance.com:9443/stream?streams=btcusdt@trade/btcusdt@bookTicker/...'
    """

    def __init__(
        self,
        symbols: Iterable[str],
        market: BinanceMarket = SPOT,
        ws_url: str | None = None,
        rest_url: str | None = None,
        quotes: bool = True,
        rest_max_wait_seconds: float = 60.0,
        api_key: str | None = None,
        depth: bool = False,
    ) -> None:
        self.symbols = normalise_symbols(symbols)
        self.api_key = api_key
        self.market = market
        self.source = market.exchange
        self.exchange = market.exchange
        self.asset_class = market.asset_class
        self.control_rate = market.control_rate * 0.8  # stay under the venue's limit with headroom
        self.ws_url = (ws_url or market.ws_url).rstrip("/")
        self.rest_url = (rest_url or market.rest_url).rstrip("/")
        self.rest_max_wait_seconds = rest_max_wait_seconds
        suffixes = (
            [market.trade_stream] + (["bookTicker"] if quotes else []) + (["depth@100ms"] if depth else [])
        )
        self.depth = depth
        self._depth: dict[str, Any] = {}  # symbol -> k2.sources.binance_depth.DepthSync
        self.streams = [f"{s.lower()}@{suffix}" for s in self.symbols for suffix in suffixes]
        if len(self.streams) > market.max_streams:
            raise ValueError(
                f"expected at most {market.max_streams} streams on one connection, found {len(self.streams)}; use feeds_for_symbols"
            )
        self._request_id = 0

    def url(self) -> str:
        """The combined-stream URL with the first 200 streams (the rest are subscribed in :meth:`on_open`)."""
        base = re.sub(r"/(stream|ws)/?$", "", self.ws_url)
        return f"{base}/stream?streams={'/'.join(self.streams[:URL_STREAM_LIMIT])}"

    async def on_open(self, send: ControlSender) -> None:
        """``SUBSCRIBE`` the streams beyond the URL's 200, 200 per message (``send`` paces them)."""
        extra = self.streams[URL_STREAM_LIMIT:]
        for start in range(0, len(extra), URL_STREAM_LIMIT):
            self._request_id += 1
            await send(
                orjson.dumps(
                    {
                        "method": "SUBSCRIBE",
                        "params": extra[start : start + URL_STREAM_LIMIT],
                        "id": self._request_id,
                    }
                ).decode()
            )

    def parse(self, frame: Frame, receipt_us: int) -> Event | None:
        """See :func:`parse_frame` (depth events only when this feed was asked for depth)."""
        event = parse_frame(frame, receipt_us, self.market)
        if event is not None and event.kind == "depth" and not self.depth:
            return None
        return event

    def rest_client(self) -> RestClient:
        """A REST client with the market's request-weight budget (and the API key header when one is configured)."""
        headers = {"X-MBX-APIKEY": self.api_key} if self.api_key else None
        return RestClient(
            self.rest_url,
            weight_limit=self.market.weight_limit,
            max_wait_seconds=self.rest_max_wait_seconds,
            headers=headers,
        )

    def _sync(self, symbol: str) -> Any:
        from k2.sources.binance_depth import DepthSync

        sync = self._depth.get(symbol)
        if sync is None:
            sync = self._depth[symbol] = DepthSync(symbol, self.market)
        return sync

    def on_depth(self, event: Event) -> Any:
        """Apply a ``depthUpdate`` to the symbol's documented sync (see :mod:`k2.sources.binance_depth`)."""
        assert event.row is not None
        sync = self._sync(event.symbol)
        step = sync.on_event(event.row["event"])
        step.needs_snapshot = sync.needs_snapshot
        return step

    async def fetch_depth_snapshot(self, rest: RestClient, symbol: str) -> Any:
        """``GET /api/v3/depth`` (``/fapi/v1/depth`` on USD-M), 1000 levels, applied to the symbol's sync."""
        from k2.sources.binance_depth import parse_depth_snapshot

        futures = self.market.asset_class == "futures"
        path, weight = ("/fapi/v1/depth", 20) if futures else ("/api/v3/depth", 50)
        data, _ = await rest.get_json(path, {"symbol": symbol, "limit": 1000}, weight)
        if not isinstance(data, dict):
            raise RestRefused(f"expected a JSON object from {path}, found {str(data)[:200]}")
        try:
            snapshot = parse_depth_snapshot(data, symbol, now_us())
        except MalformedMessage as exc:
            raise RestRefused(f"expected a depth snapshot from {path}, found {exc}") from None
        sync = self._sync(symbol)
        step = sync.on_snapshot(snapshot)
        step.needs_snapshot = sync.needs_snapshot
        return step

    async def fetch_trades(
        self, rest: RestClient, symbol: str, first: int, last: int | None
    ) -> list[dict[str, Any]]:
        """Trades ``first..last`` by id from ``historicalTrades`` (``aggTrades`` on futures), 1000 per call."""
        agg = self.market.trade_stream == "aggTrade"
        rows: list[dict[str, Any]] = []
        from_id = first
        while last is None or from_id <= last:
            limit = 1000 if last is None else min(1000, last - from_id + 1)
            data, _ = await rest.get_json(
                self.market.trades_path,
                {"symbol": symbol, "fromId": from_id, "limit": limit},
                self.market.trades_weight,
            )
            receipt = now_us()
            if not isinstance(data, list):
                raise RestRefused(
                    f"expected a JSON list of trades from {self.market.trades_path}, found {str(data)[:200]}"
                )
            if not data:
                break
            top = from_id - 1
            for item in data:
                if not isinstance(item, dict):
                    continue  # its id counts as not supplied
                try:
                    row = (
                        parse_rest_agg_trade(item, symbol, receipt, self.market)
                        if agg
                        else parse_rest_trade(item, symbol, receipt, self.market)
                    )
                except MalformedMessage:
                    continue  # its id counts as not supplied
                top = max(top, row["trade_id"])
                if row["trade_id"] >= from_id and (last is None or row["trade_id"] <= last):
                    rows.append(row)
            if top < from_id:
                break  # no progress: the API has nothing at or after from_id
            from_id = top + 1
            if last is None and len(data) < limit:
                break
        return rows


def feeds_for_symbols(
    settings: Settings,
    symbols: Iterable[str],
    market: BinanceMarket | None = None,
    ws_url: str | None = None,
    rest_url: str | None = None,
    quotes: bool = True,
    depth: bool = False,
) -> list[BinanceFeed]:
    """Feeds for ``symbols``, sharded so no connection exceeds the market's stream limit.

    URLs: explicit arguments win; with ``market`` given its preset URLs are used; otherwise the
    settings ``binance_ws_url``/``binance_rest_url`` are used and the market is inferred from them.

    >>> [f.url() for f in feeds_for_symbols(Settings(), ["BTCUSDT"])]
    ['wss://stream.binance.com:9443/stream?streams=btcusdt@trade/btcusdt@bookTicker']
    """
    names = normalise_symbols(symbols)
    if market is None:
        market = market_for_url(ws_url or settings.binance_ws_url)
        ws_url = ws_url or settings.binance_ws_url
        rest_url = rest_url or settings.binance_rest_url
    per_feed = market.max_streams // (1 + int(quotes) + int(depth))
    return [
        BinanceFeed(
            names[i : i + per_feed],
            market,
            ws_url,
            rest_url,
            quotes,
            api_key=settings.binance_api_key,
            depth=depth,
        )
        for i in range(0, len(names), per_feed)
    ]


# -- capture files --------------------------------------------------------------------------------
def _paths(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(paths, (str, Path)):
        return [Path(paths)]
    return [Path(p) for p in paths]


def iter_capture_lines(paths: str | Path | Iterable[str | Path]) -> Iterator[tuple[int, bytes]]:
    """``(local_receive_ns, raw JSON bytes)`` per line of capture files (gzip or plain), in file order.

    Example::

        ns, raw = next(iter_capture_lines("spot_btcusdt_20240808.gz"))
    """
    for path in _paths(paths):
        opener: Any = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            for lineno, line in enumerate(handle, 1):
                line = line.strip()
                if not line:
                    continue
                ns, sep, raw = line.partition(b" ")
                if not sep or not ns.isdigit():
                    raise ValueError(
                        f"{path}:{lineno}: expected '<local_receive_ns> <json>', found {line[:80]!r}"
                    )
                yield int(ns), raw


def iter_capture(
    paths: str | Path | Iterable[str | Path],
    kinds: Iterable[str] = ("trade", "bookTicker"),
    market: BinanceMarket = SPOT,
) -> Iterator[tuple[RecordType, dict[str, Any], dict[str, Any]]]:
    """``(TRADE|QUOTE, wire-form row, raw payload)`` for each trade/bookTicker message of capture files.

    ``receipt_ts`` is the capture's local receive time (ns -> µs). The REST depth snapshot line and
    streams not in ``kinds`` are skipped; a broken line raises ValueError naming file and message.

    Example::

        for record, row, raw in iter_capture(["spot_btcusdt_20240808.gz", "spot_btcusdt_20240809.gz"]):
            producer.send(record, row)
    """
    wanted = frozenset(kinds)
    loads = orjson.loads
    for ns, raw in iter_capture_lines(paths):
        obj = loads(raw)
        stream = obj.get("stream") if isinstance(obj, dict) else None
        if stream is None:
            continue  # the REST depth snapshot (lastUpdateId...)
        kind = stream.partition("@")[2]
        if kind not in wanted:
            continue
        data = obj["data"]
        receipt = ns // 1000
        try:
            if kind == "trade":
                yield TRADE, parse_trade(data, receipt, market), data
            elif kind == "aggTrade":
                yield TRADE, parse_agg_trade(data, receipt, market), data
            elif kind == "bookTicker":
                yield QUOTE, parse_book_ticker(data, receipt, market), data
        except MalformedMessage as exc:
            raise ValueError(f"capture message at receive time {ns} ({stream}): {exc}") from None


def iter_capture_trades(
    paths: str | Path | Iterable[str | Path], market: BinanceMarket = SPOT
) -> Iterator[dict[str, Any]]:
    """Wire-form TRADE rows of capture files, in capture order.

    Example::

        ids = [row["trade_id"] for row in iter_capture_trades("spot_btcusdt_20240808.gz")]
    """
    for _, row, _ in iter_capture(paths, ("trade", "aggTrade"), market):
        yield row
