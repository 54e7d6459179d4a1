"""The Binance live feed adapter: combined-stream URL and subscriptions, REST backfill and depth snapshots."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

from k2.config import Settings
from k2.sources.binance.markets import (
    SPOT,
    URL_STREAM_LIMIT,
    BinanceMarket,
    market_for_url,
    normalise_symbols,
)
from k2.sources.binance.parse import parse_frame, parse_rest_agg_trade, parse_rest_trade
from k2.sources.live import (
    ControlSender,
    Event,
    FeedAdapter,
    Frame,
    MalformedMessage,
    RestClient,
    RestRefused,
    now_us,
)


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
