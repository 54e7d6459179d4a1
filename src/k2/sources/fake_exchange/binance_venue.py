"""The fake exchange as Binance: its REST API with request-weight accounting, and WebSocket control messages.

REST: ``GET /api/v3/historicalTrades`` / ``/api/v3/trades`` from the capture's trades,
``/api/v3/depth`` (the book at the replay cursor), ``/api/v3/exchangeInfo`` (``symbol=`` /
``symbols=[...]``) and ``/api/v3/ping``, each charged its documented weight: an
``X-MBX-USED-WEIGHT-<n><unit>`` header, 429 + ``Retry-After`` over the limit, 418 for a client that
keeps asking during ``Retry-After``. WebSocket: ``SUBSCRIBE``/``UNSUBSCRIBE``/``LIST_SUBSCRIPTIONS``;
more than ``control_limit_per_second`` client messages in a second -> close 1008, as Binance does.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from decimal import Decimal
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Response

from k2.sources.fake_exchange.responses import json_response, quote_qty
from k2.sources.fake_exchange.state import ReplayState

# Request weights of the endpoints served (Binance's documented defaults).
_WEIGHTS = {
    "/api/v3/historicalTrades": 25,
    "/api/v3/trades": 25,
    "/api/v3/ping": 1,
    "/api/v3/exchangeInfo": 20,
    "/api/v3/depth": 50,
}


class BinanceVenue(ReplayState):
    """Binance's REST endpoints and WebSocket control messages over the shared replay state."""

    def _binance_rest(self, path: str, params: dict[str, str]) -> Response:
        """One REST request: charge its weight (or refuse: 404, 418, 429), then answer its endpoint."""
        if path not in _WEIGHTS:
            return json_response(404, {"code": -1, "msg": f"unknown endpoint {path}"})
        charged = self._charge_weight(_WEIGHTS[path])
        if isinstance(charged, Response):
            return charged
        headers = charged
        if path == "/api/v3/ping":
            return json_response(200, {}, headers)
        if path == "/api/v3/exchangeInfo":
            return self._exchange_info(params, headers)
        if path == "/api/v3/depth":
            return self._depth_snapshot(params, headers)
        return self._binance_trades(path, params, headers)

    def _charge_weight(self, weight: int) -> Response | list[tuple[str, str]]:
        """The used-weight header after charging ``weight``, or the 418/429 answer when over the limit."""
        now = time.time()
        window = self.faults.rest_weight_window_seconds
        window_id = math.floor(now / window)
        if window_id != self._weight_window:
            self._weight_window, self._used_weight = window_id, 0
        unit = f"{int(window // 60)}M" if window >= 60 and window % 60 == 0 else f"{max(1, int(window))}S"
        if now < self._banned_until:
            # Binance bans (418) clients that keep calling during Retry-After.
            self.stats.rest_418 += 1
            self._banned_until = now + 2 * window
            return json_response(
                418, {"code": -1003, "msg": "IP banned"}, [("Retry-After", str(math.ceil(2 * window)))]
            )
        if self._used_weight + weight > self.faults.rest_weight_limit:
            self.stats.rest_429 += 1
            window_end = (window_id + 1) * window
            self._banned_until = window_end
            return json_response(
                429,
                {"code": -1003, "msg": "Too much request weight used"},
                [
                    ("Retry-After", str(max(1, math.ceil(window_end - now)))),
                    (f"X-MBX-USED-WEIGHT-{unit}", str(self._used_weight)),
                ],
            )
        self._used_weight += weight
        return [(f"X-MBX-USED-WEIGHT-{unit}", str(self._used_weight))]

    def _binance_trades(self, path: str, params: dict[str, str], headers: list[tuple[str, str]]) -> Response:
        """``historicalTrades`` (from ``fromId``) or ``trades`` (the newest ``limit``) the cursor has passed."""
        symbol = params.get("symbol")
        if not symbol:
            return json_response(
                400,
                {
                    "code": -1102,
                    "msg": "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
                },
                headers,
            )
        if symbol not in self._trades:
            return json_response(400, {"code": -1121, "msg": "Invalid symbol."}, headers)
        try:
            limit = max(1, min(1000, int(params.get("limit", "500"))))
            from_id = int(params["fromId"]) if "fromId" in params else None
        except ValueError:
            return json_response(
                400, {"code": -1100, "msg": "Illegal characters found in a parameter."}, headers
            )
        ids, _, payloads = self._trades[symbol]
        happened = self._happened(symbol)
        start = (
            bisect.bisect_left(ids, from_id)
            if from_id is not None and path.endswith("historicalTrades")
            else max(0, happened - limit)
        )
        body: list[dict[str, Any]] = []
        for index in range(start, happened):
            if len(body) >= limit:
                break
            if self._rest_missing(ids[index]):
                continue
            data = payloads[index]
            body.append(
                {
                    "id": data["t"],
                    "price": data["p"],
                    "qty": data["q"],
                    "quoteQty": quote_qty(data["p"], data["q"]),
                    "time": data["T"],
                    "isBuyerMaker": data["m"],
                    "isBestMatch": data.get("M", True),
                }
            )
        return json_response(200, body, headers)

    def _depth_snapshot(self, params: dict[str, str], headers: list[tuple[str, str]]) -> Response:
        """``GET /api/v3/depth``: the book at the replay cursor - the capture's REST snapshot plus every depth
        event the cursor has passed (sent, skipped or not: they happened), top ``limit`` levels per side."""
        symbol = params.get("symbol", "")
        state = self._depth.get(symbol)
        if state is None:
            return json_response(400, {"code": -1121, "msg": "Invalid symbol."}, headers)
        snapshot, book, index = state
        answer = self._depth_answers.get(symbol, 0)
        self._depth_answers[symbol] = answer + 1
        if answer in self.faults.stale_depth_snapshots:
            self.stats.stale_depth_snapshots += 1
            return json_response(200, snapshot, headers)
        if book is None:
            book = state[1] = {
                "bids": {b[0]: b[1] for b in snapshot["bids"]},
                "asks": {a[0]: a[1] for a in snapshot["asks"]},
                "u": snapshot["lastUpdateId"],
            }
        while index < min(self.position, self.end):
            msg = self.messages[index]
            index += 1
            if msg.symbol != symbol or not msg.kind.startswith("depth"):
                continue
            data = orjson.loads(msg.text)["data"]
            if data["u"] <= book["u"]:
                continue
            for key, side in (("b", "bids"), ("a", "asks")):
                for price, size in data[key]:
                    if Decimal(size) == 0:
                        book[side].pop(price, None)
                    else:
                        book[side][price] = size
            book["u"] = data["u"]
        state[2] = index
        limit = max(
            1, min(5000, int(params.get("limit", "100")) if params.get("limit", "100").isdigit() else 100)
        )
        bids = sorted(book["bids"].items(), key=lambda level: Decimal(level[0]), reverse=True)[:limit]
        asks = sorted(book["asks"].items(), key=lambda level: Decimal(level[0]))[:limit]
        body = {"lastUpdateId": book["u"], "bids": [list(b) for b in bids], "asks": [list(a) for a in asks]}
        return json_response(200, body, headers)

    def _exchange_info(self, params: dict[str, str], headers: list[tuple[str, str]]) -> Response:
        """``GET /api/v3/exchangeInfo`` with Binance's ``symbol=`` / ``symbols=["A","B"]`` filters."""
        if self.exchange_info is None:
            return json_response(404, {"code": -1, "msg": "no exchangeInfo document configured"}, headers)
        entries = self.exchange_info.get("symbols", [])
        wanted: list[str] | None = None
        if "symbol" in params:
            wanted = [params["symbol"]]
        elif "symbols" in params:
            try:
                parsed = orjson.loads(params["symbols"])
            except orjson.JSONDecodeError:
                parsed = None
            if not isinstance(parsed, list) or not all(isinstance(x, str) for x in parsed):
                return json_response(
                    400, {"code": -1100, "msg": "Illegal characters found in parameter 'symbols'."}, headers
                )
            wanted = parsed
        if wanted is not None:
            known = {e.get("symbol") for e in entries}
            if any(w not in known for w in wanted):
                return json_response(400, {"code": -1121, "msg": "Invalid symbol."}, headers)
            entries = [e for e in entries if e.get("symbol") in wanted]
        return json_response(200, {**self.exchange_info, "symbols": entries}, headers)

    async def _binance_control(self, conn: ServerConnection, subscribed: set[str]) -> None:
        recent: deque[float] = deque()
        limit = self.faults.control_limit_per_second
        async for raw in conn:
            self.stats.control_messages += 1
            now = time.monotonic()
            recent.append(now)
            while recent and now - recent[0] > 1.0:
                recent.popleft()
            if limit and len(recent) > limit:
                self.stats.control_violations += 1
                await conn.close(1008, "Too many requests")
                return
            try:
                request = orjson.loads(raw)
                method, ident = request.get("method"), request.get("id")
                params = request.get("params") or []
            except (orjson.JSONDecodeError, AttributeError):
                await conn.send(
                    orjson.dumps({"error": {"code": 3, "msg": "Invalid JSON"}, "id": None}).decode()
                )
                continue
            if method == "SUBSCRIBE":
                subscribed.update(params)
                await conn.send(orjson.dumps({"result": None, "id": ident}).decode())
            elif method == "UNSUBSCRIBE":
                subscribed.difference_update(params)
                await conn.send(orjson.dumps({"result": None, "id": ident}).decode())
            elif method == "LIST_SUBSCRIPTIONS":
                await conn.send(orjson.dumps({"result": sorted(subscribed), "id": ident}).decode())
            else:
                await conn.send(
                    orjson.dumps(
                        {
                            "error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"},
                            "id": ident,
                        }
                    ).decode()
                )
