"""The fake exchange as Coinbase: the subscribe handshake, subscription snapshots and the REST trades API.

The handshake answers ``subscriptions`` (or ``error`` + close for an unknown product or a bad
request); every subscription gets a ``last_match`` per product (``matches``) and a level2
``snapshot`` at the replay cursor (``level2``). ``GET /products/<id>/trades`` serves the trades the
cursor has passed, newest first, with the ``after`` cursor, ``CB-BEFORE``/``CB-AFTER`` headers and
Coinbase's public limit (``rest_requests_per_second``, 429 beyond).
"""

from __future__ import annotations

import asyncio
import bisect
import time
from decimal import Decimal
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Response

from k2.sources.fake_exchange.responses import json_response
from k2.sources.fake_exchange.state import ReplayState


class CoinbaseVenue(ReplayState):
    """Coinbase's WebSocket handshake and REST trades over the shared replay state."""

    def _coinbase_rest(self, path: str, params: dict[str, str]) -> Response:
        now = time.monotonic()
        while self._rest_times and now - self._rest_times[0] > 1.0:
            self._rest_times.popleft()
        if len(self._rest_times) >= self.faults.rest_requests_per_second:
            self.stats.rest_429 += 1
            return json_response(429, {"message": "Public rate limit exceeded"})
        self._rest_times.append(now)
        parts = path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "products" or parts[2] != "trades":
            return json_response(404, {"message": "NotFound"})
        product = parts[1]
        if product not in self._trades:
            return json_response(404, {"message": "NotFound"})
        try:
            limit = max(1, min(1000, int(params.get("limit", "100"))))
            after = int(params["after"]) if "after" in params else None
        except ValueError:
            return json_response(400, {"message": "Invalid cursor"})
        ids, _, payloads = self._trades[product]
        top = self._happened(product)
        if after is not None:
            top = min(top, bisect.bisect_left(ids, after))
        body: list[dict[str, Any]] = []
        for index in range(top - 1, -1, -1):
            if len(body) >= limit:
                break
            if self._rest_missing(ids[index]):
                continue
            data = payloads[index]
            body.append(
                {
                    "time": data["time"],
                    "trade_id": data["trade_id"],
                    "price": data["price"],
                    "size": data["size"],
                    "side": data["side"],
                }
            )
        headers = (
            [("CB-BEFORE", str(body[0]["trade_id"])), ("CB-AFTER", str(body[-1]["trade_id"]))] if body else []
        )
        return json_response(200, body, headers)

    async def _coinbase_handshake(self, conn: ServerConnection) -> tuple[set[str] | None, set[str]]:
        try:
            raw = await asyncio.wait_for(conn.recv(), 10)
            request = orjson.loads(raw)
        except (TimeoutError, orjson.JSONDecodeError):
            await conn.send(
                orjson.dumps(
                    {
                        "type": "error",
                        "message": "Failed to subscribe",
                        "reason": "expected a subscribe message",
                    }
                ).decode()
            )
            await conn.close(1008, "no subscription")
            return None, set()
        products = set(request.get("product_ids") or [])
        channels: set[str] = set()
        for channel in request.get("channels") or []:
            if isinstance(channel, dict):
                channels.add(str(channel.get("name")))
                products.update(channel.get("product_ids") or [])
            else:
                channels.add(str(channel))
        unknown = sorted(products - set(self.products))
        if request.get("type") != "subscribe" or unknown or not products:
            reason = (
                f"{unknown[0]} is not a valid product"
                if unknown
                else "expected type subscribe with product_ids"
            )
            await conn.send(
                orjson.dumps({"type": "error", "message": "Failed to subscribe", "reason": reason}).decode()
            )
            await conn.close(1008, "bad subscription")
            return None, set()
        reply = {
            "type": "subscriptions",
            "channels": [{"name": c, "product_ids": sorted(products)} for c in sorted(channels)],
        }
        await conn.send(orjson.dumps(reply).decode())
        return products, channels

    async def _drain_client(self, conn: ServerConnection) -> None:
        async for _ in conn:
            self.stats.control_messages += 1

    def _last_matches(self, products: set[str]) -> list[str]:
        """``last_match`` per product: the newest trade the cursor has passed (sent on each subscription)."""
        out = []
        for product in sorted(products):
            if product not in self._trades:
                continue
            happened = self._happened(product)
            if happened:
                payload = dict(self._trades[product][2][happened - 1])
                payload["type"] = "last_match"
                out.append(orjson.dumps(payload).decode())
        return out

    def _level2_snapshots(self, products: set[str]) -> list[str]:
        """A level2 ``snapshot`` per product, as Coinbase sends on each subscription: the book at the replay
        cursor (the capture's own snapshot plus every ``l2update`` the cursor has passed, sent or not).

        Products whose capture snapshot lies ahead of the cursor get none here: the replay sends it.
        """
        out = []
        for product in sorted(products):
            state = self._level2.setdefault(product, [None, 0])
            book, index = state
            while index < min(self.position, self.end):
                msg = self.messages[index]
                index += 1
                if msg.symbol != product or msg.kind not in ("snapshot", "l2update"):
                    continue
                data = orjson.loads(msg.text)
                if msg.kind == "snapshot":
                    book = {"bids": dict(map(tuple, data["bids"])), "asks": dict(map(tuple, data["asks"]))}
                elif book is not None:
                    for side, price, size in data["changes"]:
                        levels = book["bids" if side == "buy" else "asks"]
                        if Decimal(size) == 0:
                            levels.pop(price, None)
                        else:
                            levels[price] = size
            state[0], state[1] = book, index
            if book is not None:
                bids = sorted(book["bids"].items(), key=lambda level: Decimal(level[0]), reverse=True)
                asks = sorted(book["asks"].items(), key=lambda level: Decimal(level[0]))
                snapshot = {"type": "snapshot", "product_id": product, "bids": bids, "asks": asks}
                out.append(orjson.dumps(snapshot).decode())
        return out
