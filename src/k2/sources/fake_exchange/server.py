"""The fake exchange server: one port for the WebSocket feed and the REST API, in a thread or on a loop.

:class:`FakeExchange` puts the parts together: :mod:`~k2.sources.fake_exchange.state` (messages, the
one replay cursor, the REST trade index), :mod:`~k2.sources.fake_exchange.replay` (a WebSocket
session), :mod:`~k2.sources.fake_exchange.binance_venue` and
:mod:`~k2.sources.fake_exchange.coinbase_venue` (each venue's protocol and REST API). REST is answered
in the ``websockets`` server's ``process_request`` hook, so one port serves both.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from k2.sources.fake_exchange.binance_venue import BinanceVenue
from k2.sources.fake_exchange.captures import (
    DEFAULT_BINANCE_CAPTURES,
    DEFAULT_EXCHANGE_INFO,
    CaptureMessage,
    load_binance,
    load_binance_depth_snapshots,
    load_coinbase,
)
from k2.sources.fake_exchange.coinbase_venue import CoinbaseVenue
from k2.sources.fake_exchange.faults import Faults
from k2.sources.fake_exchange.replay import Replay
from k2.sources.fake_exchange.responses import json_response

Mode = Literal["binance", "coinbase"]


class FakeExchange(BinanceVenue, CoinbaseVenue, Replay):
    """The fake exchange server (see :mod:`k2.sources.fake_exchange`). Use as a context manager or start()/stop()."""

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
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        messages_given = messages is not None
        if messages is None:
            messages = _load_messages(mode, captures)
        if depth_snapshots is None and mode == "binance" and not messages_given:
            depth_snapshots = load_binance_depth_snapshots(captures or DEFAULT_BINANCE_CAPTURES)
        if exchange_info is None and DEFAULT_EXCHANGE_INFO.exists():
            exchange_info = DEFAULT_EXCHANGE_INFO
        super().__init__(
            messages,
            faults or Faults(),
            speed=speed,
            depth_snapshots=depth_snapshots,
            exchange_info=(
                orjson.loads(Path(exchange_info).read_bytes())
                if isinstance(exchange_info, (str, Path))
                else exchange_info
            ),
        )
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
            return json_response(404, {"code": -1, "msg": f"no WebSocket endpoint at {path}"})
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        self.stats.rest_requests += 1
        if "X-MBX-APIKEY" in request.headers:
            self.stats.rest_api_keys.append(request.headers["X-MBX-APIKEY"])
        if self.mode == "binance":
            return self._binance_rest(path, params)
        return self._coinbase_rest(path, params)

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


def _load_messages(mode: Mode, captures: Sequence[str | Path] | None) -> list[CaptureMessage]:
    """The messages to replay: the given captures, or for Binance the packaged default captures."""
    if mode == "binance":
        return load_binance(captures or DEFAULT_BINANCE_CAPTURES)
    if not captures:
        raise ValueError("expected a Coinbase capture file (cryptofeed raw format), found none")
    return load_coinbase(captures[0])
