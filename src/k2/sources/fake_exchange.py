"""A local fake exchange: real captures served as a Binance or Coinbase WebSocket feed plus their REST trade APIs.

Made for tests and demos without internet. One server (``websockets``; REST is answered in its
``process_request`` hook, so one port serves both) replays a capture in order:

* **binance** mode: the spot captures (``<local_receive_ns> <json>`` lines) as a combined stream at
  ``/stream?streams=btcusdt@trade/btcusdt@bookTicker`` (only subscribed streams are sent; the REST
  depth snapshot line is never sent), ``SUBSCRIBE``/``UNSUBSCRIBE`` messages (more than
  ``control_limit_per_second`` client messages in a second -> close 1008, as Binance does), and
  ``GET /api/v3/historicalTrades`` / ``/api/v3/trades`` from the capture's trades with Binance's
  request-weight accounting (``X-MBX-USED-WEIGHT-<n><unit>`` header, 429 + ``Retry-After`` over the
  limit, 418 for a client that keeps asking during ``Retry-After``), and ``GET /api/v3/exchangeInfo``
  (``symbol=``/``symbols=[...]``) from an exchange-info document (default: the test fixture).
* **coinbase** mode: the cryptofeed raw capture with the subscribe handshake (``subscriptions``
  reply, ``error`` + close for unknown products, ``last_match`` per product on every subscription)
  and ``GET /products/<id>/trades`` (newest first, ``after`` cursor, ``CB-AFTER`` header, 10 req/s).

The replay position is **one cursor for the server**, not per connection: a client that reconnects
resumes where the previous connection stopped, moved on by ``reconnect_advance`` messages (the
messages that "happened" while it was away, so it must backfill them from REST; negative values
re-send messages to exercise dedup). A newer connection takes the stream over from an older one. The
REST API only serves trades the cursor has passed (no trades from the future).

Faults (:class:`Faults`): drop the connection every N messages or at given positions (clean close
or TCP abort), skip messages (the client sees id jumps), stall for S seconds, inject malformed frames
(truncated JSON, a missing field, a bad number, binary garbage) *in addition to* the real messages,
make some trade ids unavailable from REST, ping the client and count its pongs.

Example::

    with FakeExchange("binance", faults=Faults(drop_every=2000, reconnect_advance=40)) as fake:
        feed = BinanceFeed(["BTCUSDT"], ws_url=fake.ws_url, rest_url=fake.rest_url)
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from k2.sources import binance as binance_capture
from k2.sources import coinbase as coinbase_capture
from k2.sources import samples

# Package data (k2.sources.samples), so an installed K2 serves them without a git checkout.
DEFAULT_BINANCE_CAPTURES = tuple(samples.binance_captures())
# Constructed following Binance's documented exchangeInfo layout (not captured); see tests/fixtures/README.md.
DEFAULT_EXCHANGE_INFO = samples.binance_exchange_info()
Mode = Literal["binance", "coinbase"]
_COINBASE_CHANNELS = {
    "match": "matches",
    "last_match": "matches",
    "ticker": "ticker",
    "l2update": "level2",
    "snapshot": "level2",
    "heartbeat": "heartbeat",
}
# Which field a "missing field" / "bad number" malformed copy of each message kind breaks.
_MISSING_FIELD = {
    "trade": "p",
    "aggTrade": "p",
    "bookTicker": "b",
    "match": "price",
    "last_match": "price",
    "ticker": "sequence",
}
_BAD_NUMBER = {
    "trade": "q",
    "aggTrade": "q",
    "bookTicker": "B",
    "match": "size",
    "last_match": "size",
    "ticker": "best_bid",
}


@dataclass
class Faults:
    """What goes wrong, and when. Positions count the *eligible* messages (subscribed ones) the server reached.

    >>> Faults(drop_every=100, max_drops=20).drop_every
    100
    """

    drop_every: int = 0
    drop_at: frozenset[int] = frozenset()
    max_drops: int | None = None
    drop_mode: Literal["close", "abort", "mixed"] = "mixed"
    skip_every: int = 0
    skip_at: frozenset[int] = frozenset()
    skip_count: int = 1
    stall_every: int = 0
    stall_at: frozenset[int] = frozenset()
    stall_seconds: float = 0.0
    max_stalls: int | None = None
    malformed_every: int = 0
    malformed_at: frozenset[int] = frozenset()
    reconnect_advance: int = 0
    rest_missing: tuple[tuple[int, int], ...] = ()
    rest_weight_limit: int = 6000
    rest_weight_window_seconds: float = 60.0
    rest_requests_per_second: float = 10.0
    control_limit_per_second: float = 5.0
    ping_interval: float | None = None
    ping_timeout: float = 10.0
    max_messages: int | None = None
    at_end: Literal["idle", "close"] = "idle"
    # Depth faults: an eligible message held back and sent right after the next one (a reordered pair);
    # which ``GET /api/v3/depth`` answers (0 = the first, per symbol) are stale: the capture's own REST
    # snapshot instead of the book at the replay cursor.
    reorder_at: frozenset[int] = frozenset()
    stale_depth_snapshots: frozenset[int] = frozenset()

    def _due(self, every: int, at: frozenset[int], index: int) -> bool:
        return (every > 0 and index > 0 and index % every == 0) or index in at


@dataclass
class FakeStats:
    """What the fake exchange did (read by tests)."""

    connections: int = 0
    sent: int = 0
    sent_trade_ids: int = 0
    skipped: int = 0
    skipped_trade_ids: list[int] = field(default_factory=list)
    advanced: int = 0
    drops: int = 0
    stalls: int = 0
    malformed: list[str | bytes] = field(default_factory=list)
    rest_requests: int = 0
    rest_api_keys: list[str] = field(default_factory=list)  # X-MBX-APIKEY header values seen
    rest_429: int = 0
    rest_418: int = 0
    pings: int = 0
    pongs: int = 0
    ping_timeouts: int = 0
    control_messages: int = 0
    reordered: int = 0
    stale_depth_snapshots: int = 0
    control_violations: int = 0


@dataclass(frozen=True, slots=True)
class CaptureMessage:
    """One replayable message: receive time, channel, symbol, kind, the exact captured text, trade id."""

    ns: int
    channel: str
    symbol: str
    kind: str
    text: str
    trade_id: int | None
    payload: dict[str, Any] | None  # trade payload kept for the REST API


def load_binance(paths: Iterable[str | Path]) -> list[CaptureMessage]:
    """Combined-stream messages of Binance captures (the REST snapshot line is dropped).

    Example::

        messages = load_binance(["spot_btcusdt_20240808.gz", "spot_btcusdt_20240809.gz"])  # 99,573
    """
    out: list[CaptureMessage] = []
    for ns, raw in binance_capture.iter_capture_lines(list(paths)):
        obj = orjson.loads(raw)
        stream = obj.get("stream") if isinstance(obj, dict) else None
        if stream is None:
            continue
        data = obj.get("data") or {}
        prefix, _, kind = stream.partition("@")
        is_trade = kind in ("trade", "aggTrade")
        ident = data.get("t" if kind == "trade" else "a") if is_trade else None
        out.append(
            CaptureMessage(ns, stream, prefix.upper(), kind, raw.decode(), ident, data if is_trade else None)
        )
    return out


def load_binance_depth_snapshots(paths: Iterable[str | Path]) -> dict[str, dict[str, Any]]:
    """The REST depth snapshot lines of Binance captures, by the symbol of the depth events around them.

    Example::

        load_binance_depth_snapshots(["spot_btcusdt_20240808.gz"])["BTCUSDT"]["lastUpdateId"]  # 50093239218
    """
    out: dict[str, dict[str, Any]] = {}
    waiting: list[dict[str, Any]] = []
    for _, raw in binance_capture.iter_capture_lines(list(paths)):
        if raw.startswith(b'{"lastUpdateId"'):
            waiting.append(orjson.loads(raw))
        elif waiting and b"@depth" in raw[:48]:
            symbol = orjson.loads(raw)["data"]["s"]
            out.setdefault(symbol, waiting[0])
            waiting = []
    return out


def load_coinbase(path: str | Path) -> list[CaptureMessage]:
    """Received messages of a cryptofeed Coinbase capture (its own ``subscriptions`` replies dropped).

    Example::

        messages = load_coinbase("cryptofeed-coinbase-2021-04-17.raw.txt")
    """
    out: list[CaptureMessage] = []
    for ns, raw in coinbase_capture.iter_capture_lines(path):
        obj = orjson.loads(raw)
        kind = obj.get("type", "") if isinstance(obj, dict) else ""
        if kind == "subscriptions" or kind not in _COINBASE_CHANNELS:
            continue
        is_trade = kind in ("match", "last_match")
        out.append(
            CaptureMessage(
                ns,
                _COINBASE_CHANNELS[kind],
                str(obj.get("product_id", "")),
                kind,
                raw.decode(),
                obj.get("trade_id") if is_trade else None,
                obj if is_trade else None,
            )
        )
    return out


def _json_response(status: int, body: Any, headers: Iterable[tuple[str, str]] = ()) -> Response:
    payload = orjson.dumps(body)
    reason = {
        200: "OK",
        400: "Bad Request",
        404: "Not Found",
        418: "I'm a teapot",
        429: "Too Many Requests",
    }.get(status, "Error")
    hdrs = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("Connection", "close"),
            *headers,
        ]
    )
    return Response(status, reason, hdrs, payload)


def _quote_qty(price: str, qty: str) -> str:
    return str((Decimal(price) * Decimal(qty)).quantize(Decimal("0.00000001"), rounding=ROUND_DOWN))


class FakeExchange:
    """The fake exchange server (see the module docstring). Use as a context manager or start()/stop()."""

    def __init__(
        self,
        mode: Mode = "binance",
        captures: Sequence[str | Path] | None = None,
        faults: Faults | None = None,
        speed: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: Any = None,
        messages: list[CaptureMessage] | None = None,
        exchange_info: dict[str, Any] | str | Path | None = None,
        depth_snapshots: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        if mode not in ("binance", "coinbase"):
            raise ValueError(f"expected mode 'binance' or 'coinbase', found {mode!r}")
        self.mode: Mode = mode
        self.faults = faults or Faults()
        self.speed = speed
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        messages_given = messages is not None
        if messages is None:
            if mode == "binance":
                messages = load_binance(captures or DEFAULT_BINANCE_CAPTURES)
            else:
                if not captures:
                    raise ValueError("expected a Coinbase capture file (cryptofeed raw format), found none")
                messages = load_coinbase(captures[0])
        self.messages = messages
        if depth_snapshots is None and mode == "binance" and not messages_given:
            depth_snapshots = load_binance_depth_snapshots(captures or DEFAULT_BINANCE_CAPTURES)
        # REST depth: symbol -> [the capture's snapshot, book (price -> size per side), next message index]
        self._level2: dict[str, list[Any]] = {}  # product -> [book at the cursor, next message index]
        self._depth: dict[str, list[Any]] = {
            symbol: [snap, None, 0] for symbol, snap in (depth_snapshots or {}).items()
        }
        if exchange_info is None and DEFAULT_EXCHANGE_INFO.exists():
            exchange_info = DEFAULT_EXCHANGE_INFO
        self.exchange_info: dict[str, Any] | None = (
            orjson.loads(Path(exchange_info).read_bytes())
            if isinstance(exchange_info, (str, Path))
            else exchange_info
        )
        self.end = (
            len(messages)
            if self.faults.max_messages is None
            else min(len(messages), self.faults.max_messages)
        )
        self.stats = FakeStats()
        self.position = 0
        self.eligible_seen = 0
        self._generation = 0
        self._sessions = 0
        self._skip_left = 0
        self._depth_answers: dict[str, int] = {}  # symbol -> REST depth answers given
        self._stalled: set[int] = set()
        self._closing = False
        # REST index: symbol -> (trade ids, capture positions, payloads), in capture order.
        self._trades: dict[str, tuple[list[int], list[int], list[dict[str, Any]]]] = {}
        for pos, msg in enumerate(messages[: self.end]):
            if msg.trade_id is not None and msg.payload is not None:
                ids, positions, payloads = self._trades.setdefault(msg.symbol, ([], [], []))
                if ids and msg.trade_id <= ids[-1]:
                    continue  # a replayed last_match
                ids.append(msg.trade_id)
                positions.append(pos)
                payloads.append(msg.payload)
        self.products = sorted({m.symbol for m in messages if m.symbol})
        self._weight_window = -1
        self._used_weight = 0
        self._banned_until = 0.0
        self._rest_times: deque[float] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_event: asyncio.Event | None = None
        self._server: Server | None = None

    # -- addresses -------------------------------------------------------------------------------
    @property
    def ws_url(self) -> str:
        """Base WebSocket URL (Binance feeds add ``/stream?streams=...``)."""
        return f"{'wss' if self.ssl_context else 'ws'}://{self.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        """Base REST URL."""
        return f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}"

    def trade_ids(self, symbol: str) -> list[int]:
        """Every trade id of ``symbol`` in the served part of the capture."""
        return list(self._trades.get(symbol, ([], [], []))[0])

    # -- lifecycle -------------------------------------------------------------------------------
    async def serve_forever(self, ready: Callable[[FakeExchange], None] | None = None) -> None:
        """Serve until :meth:`stop` (or cancellation)."""
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        async with serve(
            self._handler,
            self.host,
            self.port,
            process_request=self._process_request,
            ping_interval=None,
            compression=None,
            ssl=self.ssl_context,
            max_size=1 << 20,
            close_timeout=1,
        ) as server:
            self._server = server
            self.port = next(iter(server.sockets)).getsockname()[1]
            if ready is not None:
                ready(self)
            await self._stop_event.wait()
            self._closing = True

    def start(self, timeout: float = 30.0) -> FakeExchange:
        """Serve from a background thread; returns once listening."""
        started = threading.Event()
        errors: list[BaseException] = []

        def main() -> None:
            try:
                asyncio.run(self.serve_forever(lambda _: started.set()))
            except BaseException as exc:  # surfaced to start()
                errors.append(exc)
                started.set()

        self._thread = threading.Thread(target=main, name="fake-exchange", daemon=True)
        self._thread.start()
        if not started.wait(timeout) or errors:
            raise RuntimeError(
                f"expected the fake exchange to listen within {timeout}s, found {errors or 'no answer'}"
            )
        return self

    def stop(self) -> None:
        """Stop serving (closes every connection)."""
        self._closing = True
        if self._loop is not None and self._stop_event is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop_event.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FakeExchange:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP ------------------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path, _, query = request.path.partition("?")
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if upgrade:
            if self.mode == "binance" and (path in ("/stream", "/ws") or path.startswith("/ws/")):
                return None
            if self.mode == "coinbase" and path in ("", "/"):
                return None
            return _json_response(404, {"code": -1, "msg": f"no WebSocket endpoint at {path}"})
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        self.stats.rest_requests += 1
        if "X-MBX-APIKEY" in request.headers:
            self.stats.rest_api_keys.append(request.headers["X-MBX-APIKEY"])
        if self.mode == "binance":
            return self._binance_rest(path, params)
        return self._coinbase_rest(path, params)

    def _happened(self, symbol: str) -> int:
        """How many of the symbol's trades the replay cursor has passed."""
        _, positions, _ = self._trades[symbol]
        return bisect.bisect_left(positions, self.position)

    def _rest_missing(self, ident: int) -> bool:
        return any(a <= ident <= b for a, b in self.faults.rest_missing)

    # long: the fake Binance REST API, one branch per documented endpoint and its fault.
    def _binance_rest(self, path: str, params: dict[str, str]) -> Response:
        weights = {
            "/api/v3/historicalTrades": 25,
            "/api/v3/trades": 25,
            "/api/v3/ping": 1,
            "/api/v3/exchangeInfo": 20,
            "/api/v3/depth": 50,
        }
        if path not in weights:
            return _json_response(404, {"code": -1, "msg": f"unknown endpoint {path}"})
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
            return _json_response(
                418, {"code": -1003, "msg": "IP banned"}, [("Retry-After", str(math.ceil(2 * window)))]
            )
        weight = weights[path]
        if self._used_weight + weight > self.faults.rest_weight_limit:
            self.stats.rest_429 += 1
            window_end = (window_id + 1) * window
            self._banned_until = window_end
            return _json_response(
                429,
                {"code": -1003, "msg": "Too much request weight used"},
                [
                    ("Retry-After", str(max(1, math.ceil(window_end - now)))),
                    (f"X-MBX-USED-WEIGHT-{unit}", str(self._used_weight)),
                ],
            )
        self._used_weight += weight
        headers = [(f"X-MBX-USED-WEIGHT-{unit}", str(self._used_weight))]
        if path == "/api/v3/ping":
            return _json_response(200, {}, headers)
        if path == "/api/v3/exchangeInfo":
            return self._exchange_info(params, headers)
        if path == "/api/v3/depth":
            return self._depth_snapshot(params, headers)
        symbol = params.get("symbol")
        if not symbol:
            return _json_response(
                400,
                {
                    "code": -1102,
                    "msg": "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
                },
                headers,
            )
        if symbol not in self._trades:
            return _json_response(400, {"code": -1121, "msg": "Invalid symbol."}, headers)
        try:
            limit = max(1, min(1000, int(params.get("limit", "500"))))
            from_id = int(params["fromId"]) if "fromId" in params else None
        except ValueError:
            return _json_response(
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
                    "quoteQty": _quote_qty(data["p"], data["q"]),
                    "time": data["T"],
                    "isBuyerMaker": data["m"],
                    "isBestMatch": data.get("M", True),
                }
            )
        return _json_response(200, body, headers)

    def _depth_snapshot(self, params: dict[str, str], headers: list[tuple[str, str]]) -> Response:
        """``GET /api/v3/depth``: the book at the replay cursor - the capture's REST snapshot plus every depth
        event the cursor has passed (sent, skipped or not: they happened), top ``limit`` levels per side."""
        symbol = params.get("symbol", "")
        state = self._depth.get(symbol)
        if state is None:
            return _json_response(400, {"code": -1121, "msg": "Invalid symbol."}, headers)
        snapshot, book, index = state
        answer = self._depth_answers.get(symbol, 0)
        self._depth_answers[symbol] = answer + 1
        if answer in self.faults.stale_depth_snapshots:
            self.stats.stale_depth_snapshots += 1
            return _json_response(200, snapshot, headers)
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
        return _json_response(200, body, headers)

    def _exchange_info(self, params: dict[str, str], headers: list[tuple[str, str]]) -> Response:
        """``GET /api/v3/exchangeInfo`` with Binance's ``symbol=`` / ``symbols=["A","B"]`` filters."""
        if self.exchange_info is None:
            return _json_response(404, {"code": -1, "msg": "no exchangeInfo document configured"}, headers)
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
                return _json_response(
                    400, {"code": -1100, "msg": "Illegal characters found in parameter 'symbols'."}, headers
                )
            wanted = parsed
        if wanted is not None:
            known = {e.get("symbol") for e in entries}
            if any(w not in known for w in wanted):
                return _json_response(400, {"code": -1121, "msg": "Invalid symbol."}, headers)
            entries = [e for e in entries if e.get("symbol") in wanted]
        return _json_response(200, {**self.exchange_info, "symbols": entries}, headers)

    def _coinbase_rest(self, path: str, params: dict[str, str]) -> Response:
        now = time.monotonic()
        while self._rest_times and now - self._rest_times[0] > 1.0:
            self._rest_times.popleft()
        if len(self._rest_times) >= self.faults.rest_requests_per_second:
            self.stats.rest_429 += 1
            return _json_response(429, {"message": "Public rate limit exceeded"})
        self._rest_times.append(now)
        parts = path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "products" or parts[2] != "trades":
            return _json_response(404, {"message": "NotFound"})
        product = parts[1]
        if product not in self._trades:
            return _json_response(404, {"message": "NotFound"})
        try:
            limit = max(1, min(1000, int(params.get("limit", "100"))))
            after = int(params["after"]) if "after" in params else None
        except ValueError:
            return _json_response(400, {"message": "Invalid cursor"})
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
        return _json_response(200, body, headers)

    # -- WebSocket -------------------------------------------------------------------------------
    async def _handler(self, conn: ServerConnection) -> None:
        self.stats.connections += 1
        tasks: list[asyncio.Task[None]] = []
        try:
            if self.faults.ping_interval:
                tasks.append(asyncio.create_task(self._pinger(conn)))
            if self.mode == "binance":
                query = conn.request.path.partition("?")[2] if conn.request else ""
                streams = parse_qs(query).get("streams", [""])[-1]
                subscribed = {s for s in streams.split("/") if s}
                tasks.append(asyncio.create_task(self._binance_control(conn, subscribed)))
                await self._stream(conn, lambda m: m.channel in subscribed, lambda: [])
            else:
                products, channels = await self._coinbase_handshake(conn)
                if products is None:
                    return
                tasks.append(asyncio.create_task(self._drain_client(conn)))
                await self._stream(
                    conn,
                    lambda m: m.symbol in products and m.channel in channels,
                    lambda: (
                        (self._last_matches(products) if "matches" in channels else [])
                        + (self._level2_snapshots(products) if "level2" in channels else [])
                    ),
                )
        except ConnectionClosed:
            pass
        finally:
            for task in tasks:
                task.cancel()

    async def _pinger(self, conn: ServerConnection) -> None:
        assert self.faults.ping_interval is not None
        while conn.state is State.OPEN:
            await asyncio.sleep(self.faults.ping_interval)
            try:
                waiter = await conn.ping()
                self.stats.pings += 1
                await asyncio.wait_for(waiter, self.faults.ping_timeout)
                self.stats.pongs += 1
            except TimeoutError:
                self.stats.ping_timeouts += 1
                await conn.close(1011, "keepalive ping timeout")
                return
            except ConnectionClosed:
                return

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

    def _malformed(self, msg: CaptureMessage) -> str | bytes:
        variant = len(self.stats.malformed) % 4
        frame: str | bytes
        if variant == 1 or variant == 2:
            obj = orjson.loads(msg.text)
            target = obj["data"] if isinstance(obj.get("data"), dict) else obj
            key = (_MISSING_FIELD if variant == 1 else _BAD_NUMBER).get(msg.kind)
            if key is None or key not in target:
                variant = 0
            elif variant == 1:
                del target[key]
            else:
                target[key] = "12,5 not a number"
            frame = orjson.dumps(obj).decode() if variant else msg.text[: max(1, len(msg.text) // 2)]
        elif variant == 3:
            frame = b"\x00\xfe\xff binary garbage"
        else:
            frame = msg.text[: max(1, len(msg.text) // 2)]
        self.stats.malformed.append(frame)
        return frame

    async def _drop(self, conn: ServerConnection) -> None:
        self.stats.drops += 1
        mode = self.faults.drop_mode
        if mode == "mixed":
            mode = "abort" if self.stats.drops % 2 == 0 else "close"
        if mode == "abort":
            conn.transport.abort()
        else:
            await conn.close(1001, "fake exchange: forced disconnect")

    # long: one WebSocket session of the fake venue: subscription, pacing and every fault, in wire order.
    async def _stream(
        self,
        conn: ServerConnection,
        eligible: Callable[[CaptureMessage], bool],
        prelude: Callable[[], list[str]],
    ) -> None:
        self._generation += 1
        generation = self._generation
        faults = self.faults
        if self._sessions and faults.reconnect_advance:
            moved = max(0, min(self.end, self.position + faults.reconnect_advance))
            self.stats.advanced += moved - self.position
            self.position = moved
        self._sessions += 1
        for text in prelude():
            await conn.send(text)
        sent_here = 0
        held: str | None = None  # a message held back by Faults.reorder_at
        anchor: tuple[float, int] | None = None
        messages = self.messages
        while True:
            if generation != self._generation or self._closing or conn.state is not State.OPEN:
                return  # another connection took over, or we are shutting down
            if self.position >= self.end:
                if faults.at_end == "close":
                    await conn.close(1000, "end of capture")
                    return
                await asyncio.sleep(0.05)
                continue
            msg = messages[self.position]
            if not eligible(msg):
                self.position += 1
                continue
            index = self.eligible_seen
            if (
                faults.stall_seconds > 0
                and index not in self._stalled
                and faults._due(faults.stall_every, faults.stall_at, index)
                and (faults.max_stalls is None or self.stats.stalls < faults.max_stalls)
            ):
                self._stalled.add(index)
                self.stats.stalls += 1
                deadline = time.monotonic() + faults.stall_seconds
                while time.monotonic() < deadline and generation == self._generation and not self._closing:
                    await asyncio.sleep(0.02)
                anchor = None
                continue
            if self.speed > 0:
                # Pace before taking the message, so a connection taken over while waiting holds none.
                now = time.monotonic()
                if anchor is None:
                    anchor = (now, msg.ns)
                due = anchor[0] + (msg.ns - anchor[1]) / 1e9 / self.speed
                if due > now + 0.001:
                    await asyncio.sleep(min(due - now, 0.05))
                    continue
            self.position += 1
            self.eligible_seen += 1
            if faults._due(faults.skip_every, faults.skip_at, index):
                self._skip_left = faults.skip_count
            if self._skip_left > 0:
                self._skip_left -= 1
                self.stats.skipped += 1
                if msg.trade_id is not None:
                    self.stats.skipped_trade_ids.append(msg.trade_id)
                continue
            if faults._due(faults.malformed_every, faults.malformed_at, index):
                await conn.send(self._malformed(msg))
            if index in faults.reorder_at and held is None:
                held = msg.text  # sent right after the next message
                self.stats.reordered += 1
                continue
            if self.speed <= 0 and sent_here % 64 == 0:
                await asyncio.sleep(0)  # let REST requests and pings in
            await conn.send(msg.text)
            if held is not None:
                await conn.send(held)
                held = None
            sent_here += 1
            self.stats.sent += 1
            if msg.trade_id is not None:
                self.stats.sent_trade_ids += 1
            drop = (faults.drop_every > 0 and sent_here % faults.drop_every == 0) or index in faults.drop_at
            if drop and (faults.max_drops is None or self.stats.drops < faults.max_drops):
                await self._drop(conn)
                return


def parse_ranges(text: str) -> tuple[tuple[int, int], ...]:
    """``"5-9,12-12"`` -> ``((5, 9), (12, 12))`` (for the CLI's ``--rest-missing``).

    >>> parse_ranges("5-9, 12")
    ((5, 9), (12, 12))
    """
    out: list[tuple[int, int]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise ValueError(f"expected id ranges like 5-9,12, found {part!r}") from None
        if first > last:
            raise ValueError(f"expected first <= last in {part!r}")
        out.append((first, last))
    return tuple(out)
