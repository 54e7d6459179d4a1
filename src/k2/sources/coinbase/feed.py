"""The Coinbase live feed adapter: the subscribe message, level2 books, REST backfill by ``after`` cursor."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import orjson

from k2.sources.coinbase.parse import (
    ASSET_CLASS,
    EXCHANGE,
    normalise_products,
    parse_frame,
    parse_message,
    parse_rest_trade,
)
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

DEFAULT_CHANNELS = ("matches", "ticker", "heartbeat")
DEPTH_CHANNEL = "level2"  # snapshot + l2update (k2.sources.coinbase_depth); on unless depth=False
_DEPTH_TYPE = re.compile(rb'"type"\s*:\s*"(?:snapshot|l2update)"')


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
