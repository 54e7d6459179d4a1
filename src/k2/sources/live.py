"""The shared live-feed runner: one WebSocket connection at a time, kept alive, deduplicated, gap-free.

A venue adapter (:class:`FeedAdapter`: :class:`k2.sources.binance.BinanceFeed`,
:class:`k2.sources.coinbase.CoinbaseFeed`) says where to connect, what to send after connecting and
how to turn one frame into an :class:`Event` (wire-form TRADE/QUOTE row). :class:`LiveRunner` does the
rest, the same way for every venue:

* **Connect** with TLS verified (``ssl.create_default_context`` with certifi's CAs; never
  ``CERT_NONE``), permessage-deflate off, a bounded frame size. Server pings are answered by the
  WebSocket layer as frames arrive; a reader task keeps reading even while the main loop waits on REST,
  so pongs never starve.
* **Reconnect** with exponential backoff and *equal jitter* (``cap/2 + U(0, cap/2)``, ``cap`` doubling
  from ``source_backoff_initial_seconds`` to ``source_backoff_max_seconds``; reset once a connection
  delivers data) and a connection-attempt token bucket (Binance: 300 connections per 5 minutes per IP).
* **Stall detection**: no frame for ``source_stall_seconds`` -> drop the connection and reconnect.
* **Proactive reconnect** after ``source_max_connection_seconds`` (Binance cuts connections at 24 h):
  a new connection is opened *first*, the old one is read for a short grace period and then closed, so
  the two overlap instead of leaving a hole; the overlap is removed by dedup.
* **Dedup**: per symbol the last trade id and the last quote update id of this session; anything at
  or below is dropped (a reconnect overlap, a venue's ``last_match`` replay).
* **Gaps**: a trade id above ``last + 1`` is a gap (``source="live"``, or ``"reconnect"`` for the first
  trade after a reconnect). The missing ids are fetched from the venue's REST API *before* the trade
  that revealed the gap is produced (per-symbol order is kept in Kafka) and the gap goes to the ledger
  (:mod:`k2.sources.gaps`) as ``backfilled``, or ``lost`` with the exact ranges the API could not
  supply. If the API is unavailable (rate limit longer than we wait, server errors) the gap is
  recorded ``open`` and retried later. After a reconnect, a symbol that has not traded yet within
  ``min(5 s, stall/2)`` is caught up from REST (so a quiet symbol's or the stream's last trades are not
  left behind until the next trade).
* **Malformed frames** (bad JSON, missing fields, bad numbers) go to the DLQ of the topic they were
  meant for, byte for byte, with ``k2.reason``/``k2.detail`` headers, and are counted in
  ``k2_source_errors_total``; they never stop the feed.
* **Every message keeps its receipt time** (``receipt_ts``: when the frame came off the socket).

REST calls go through :class:`RestClient`, which honours the venue's limits: Binance's used-weight
headers (``X-MBX-USED-WEIGHT-1M``; it waits for the next window before going over 90 % of the
limit), a request-rate token bucket (Coinbase), and ``Retry-After`` on 429/418 (it stops *every*
request until then; waits longer than ``max_wait_seconds`` make the gap ``open`` instead of blocking).

Example (needs a broker, registry and the venue or the fake exchange)::

    feed = BinanceFeed(["BTCUSDT"], ws_url="ws://127.0.0.1:9000", rest_url="http://127.0.0.1:9000")
    stats = asyncio.run(run_feeds(settings, [feed]))
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import re
import signal
import ssl
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import certifi
import httpx
import structlog
from confluent_kafka import KafkaException
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from k2.bus.dlq import dlq_headers
from k2.bus.producer import DeliveryError, MarketDataProducer
from k2.bus.topics import dlq_topic, ensure_topics, topic_name
from k2.config import Settings
from k2.model import BOOK_DELTA, QUOTE, TRADE, DataType, RecordType
from k2.pacing import Backoff, TokenBucket
from k2.sources.gaps import GapLedger, format_ranges, missing_ranges
from k2.telemetry.metrics import metric

log = structlog.get_logger("k2.sources.live")

Frame = str | bytes
EventKind = Literal["trade", "quote", "depth", "control", "reconnect", "error"]


class MalformedMessage(ValueError):
    """A frame that cannot become a canonical record; ``reason`` is a short code for metrics and the DLQ.

    ``data_type``/``symbol`` say which topic's DLQ it belongs to, when the frame reveals it.

    >>> MalformedMessage("bad_number", "expected a decimal, found 'abc'").reason
    'bad_number'
    """

    def __init__(
        self, reason: str, detail: str, data_type: DataType | None = None, symbol: str | None = None
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.data_type = data_type
        self.symbol = symbol


class FatalSourceError(RuntimeError):
    """The venue refused what we asked for (e.g. an unknown product): reconnecting cannot help."""


class RestUnavailable(RuntimeError):
    """The REST API could not be used now (rate limited beyond our patience, errors); retry later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RestRefused(RuntimeError):
    """The REST API answered with a client error (4xx other than 429/418): retrying will not help."""


@dataclass(slots=True)
class Event:
    """One parsed frame: a trade or quote (``row`` in wire form, ``ident`` its trade/update id), or control."""

    kind: EventKind
    symbol: str = ""
    ident: int = 0
    row: dict[str, Any] | None = None
    detail: str = ""


def now_us() -> int:
    """Wall-clock time in epoch microseconds (what ``receipt_ts`` holds).

    >>> now_us() > 1_700_000_000_000_000
    True
    """
    return time.time_ns() // 1000


def normalise_names(names: Iterable[str], pattern: re.Pattern[str], expected: str, noun: str) -> list[str]:
    """Upper-cased, de-duplicated venue names in order; ValueError naming ``expected`` for a bad one.

    The shared rule behind each venue's symbol list (Binance symbols, Coinbase product ids).

    >>> normalise_names(["btc-usd", "BTC-USD"], re.compile(r"^[A-Z]+-[A-Z]+$"), "BTC-USD", "product")
    ['BTC-USD']
    """
    out: list[str] = []
    for raw in names:
        name = raw.strip().upper()
        if not name:
            continue
        if not pattern.match(name):
            raise ValueError(f"expected {expected}, found {raw!r}")
        if name not in out:
            out.append(name)
    if not out:
        raise ValueError(f"expected at least one {noun}, found none")
    return out


def tls_context(cafile: str | None = None) -> ssl.SSLContext:
    """A client TLS context that verifies the server (certifi's CA bundle, or ``cafile``) and its host name.

    >>> tls_context().verify_mode == ssl.CERT_REQUIRED
    True
    """
    context = ssl.create_default_context(cafile=cafile or certifi.where())
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


_WEIGHT_HEADER = re.compile(r"^x-mbx-used-weight-(\d+)([smhd])$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date).

    >>> retry_after_seconds("3"), retry_after_seconds(None)
    (3.0, None)
    """
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class RestClient:
    """Rate-limit-aware JSON GETs for backfill (one per venue, shared by that venue's feeds).

    * ``weight_limit``: the venue's request-weight budget per window (Binance). The window and the
      weight used so far come from ``X-MBX-USED-WEIGHT-<n><unit>`` response headers; a request that
      would take the window over 90 % of the limit waits for the next window.
    * ``requests_per_second``/``burst``: a request-rate token bucket (Coinbase public endpoints).
    * 429/418: ``Retry-After`` is honoured for *all* requests; if it exceeds ``max_wait_seconds``
      :class:`RestUnavailable` is raised (the gap stays open and is retried later).
    * 5xx and transport errors are retried with backoff, ``attempts`` times in total.

    Example::

        rest = RestClient("https://api.binance.com", weight_limit=6000)
        trades, headers = await rest.get_json("/api/v3/historicalTrades", {"symbol": "BTCUSDT"}, weight=25)
    """

    def __init__(
        self,
        base_url: str,
        *,
        weight_limit: int | None = None,
        requests_per_second: float | None = None,
        burst: float = 1.0,
        max_wait_seconds: float = 60.0,
        attempts: int = 5,
        timeout: float = 10.0,
        verify: ssl.SSLContext | bool = True,
        backoff: Backoff | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.weight_limit = weight_limit
        self.max_wait_seconds = max_wait_seconds
        self.attempts = attempts
        self._bucket = TokenBucket(requests_per_second, max(1.0, burst)) if requests_per_second else None
        self._backoff = backoff or Backoff(0.25, 5.0)
        context: ssl.SSLContext | bool = tls_context() if verify is True else verify
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            verify=context,
            headers={"User-Agent": "k2-lakehouse", **(headers or {})},
        )
        self.used_weight = 0
        self.window_seconds = 60.0
        self._window_end = 0.0
        self._blocked_until = 0.0
        self.requests = 0
        self.throttled = 0  # 429/418 answers seen
        self.waited_seconds = 0.0

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()

    def has_headroom(self, weight: int, fraction: float = 0.5) -> bool:
        """True when a request of ``weight`` keeps the window under ``fraction`` of the limit and no ban is on.

        >>> RestClient("http://127.0.0.1:1", weight_limit=100).has_headroom(25)
        True
        """
        now = time.time()
        if self._blocked_until > now:
            return False
        if self.weight_limit and now < self._window_end:
            return self.used_weight + weight <= self.weight_limit * fraction
        return True

    async def _wait(self, seconds: float) -> None:
        self.waited_seconds += seconds
        await asyncio.sleep(seconds)

    async def _respect_limits(self, weight: int) -> None:
        now = time.time()
        if self._blocked_until > now:
            wait = self._blocked_until - now
            if wait > self.max_wait_seconds:
                raise RestUnavailable(
                    f"expected the REST ban to end within {self.max_wait_seconds}s, found {wait:.0f}s left",
                    wait,
                )
            await self._wait(wait)
            now = time.time()
        if (
            self.weight_limit
            and now < self._window_end
            and self.used_weight + weight > self.weight_limit * 0.9
        ):
            await self._wait(self._window_end - now + 0.01)
            self.used_weight = 0
        if self._bucket is not None:
            await self._bucket.acquire()

    def _observe(self, headers: httpx.Headers) -> None:
        for name, value in headers.items():
            match = _WEIGHT_HEADER.match(name)
            if match and value.isdigit():
                self.window_seconds = float(int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()])
                now = time.time()
                # Binance windows are fixed intervals (calendar minutes), not sliding.
                self._window_end = (math.floor(now / self.window_seconds) + 1) * self.window_seconds
                self.used_weight = int(value)

    async def get_json(
        self, path: str, params: Mapping[str, Any] | None = None, weight: int = 1
    ) -> tuple[Any, httpx.Headers]:
        """GET ``path`` and return (decoded JSON, response headers); see the class docstring for limits."""
        self._backoff.reset()
        last_error = "no attempt made"
        for _ in range(self.attempts):
            await self._respect_limits(weight)
            self.requests += 1
            try:
                response = await self._client.get(path, params=dict(params or {}))
            except httpx.HTTPError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                await self._wait(self._backoff.next_delay())
                continue
            self._observe(response.headers)
            status = response.status_code
            if status in (429, 418):
                self.throttled += 1
                wait = retry_after_seconds(response.headers.get("Retry-After"))
                wait = self._backoff.next_delay() if wait is None else wait
                self._blocked_until = max(self._blocked_until, time.time() + wait)
                last_error = f"HTTP {status} (Retry-After {wait:.1f}s)"
                log.warning("rest_throttled", url=str(response.url), status=status, retry_after=wait)
                if wait > self.max_wait_seconds:
                    raise RestUnavailable(f"expected a usable REST API, found {last_error}", wait)
                continue
            if status >= 500:
                last_error = f"HTTP {status}: {response.text[:200]}"
                await self._wait(self._backoff.next_delay())
                continue
            if status >= 400:
                raise RestRefused(
                    f"expected 200 from GET {path} {dict(params or {})}, found HTTP {status}: {response.text[:300]}"
                )
            try:
                return response.json(), response.headers
            except ValueError:
                raise RestRefused(f"expected JSON from GET {path}, found {response.text[:200]!r}") from None
        raise RestUnavailable(f"expected a REST answer within {self.attempts} attempts, found {last_error}")


ControlSender = Callable[[str], Awaitable[None]]


class FeedAdapter(ABC):
    """What a venue contributes to :class:`LiveRunner`: URL, subscription, parsing, REST backfill.

    Subclasses set ``source`` (metrics label), ``exchange`` and ``asset_class`` (topic and rows).
    """

    source: str
    exchange: str
    asset_class: str
    #: outgoing control messages per second the venue allows (subscribe requests)
    control_rate: float = 5.0
    #: connection attempts per second (sustained) and burst, per IP
    connect_rate: float = 0.9
    connect_burst: float = 30.0

    @abstractmethod
    def url(self) -> str:
        """The WebSocket URL to connect to."""

    async def on_open(self, send: ControlSender) -> None:  # noqa: B027 - optional hook
        """Send subscriptions after connecting (``send`` is rate limited to ``control_rate``)."""

    @abstractmethod
    def parse(self, frame: Frame, receipt_us: int) -> Event | None:
        """One frame -> an :class:`Event` (or None to ignore); raise :class:`MalformedMessage` if broken."""

    @abstractmethod
    def rest_client(self) -> RestClient | None:
        """A REST client for backfill with the venue's limits (None: no backfill)."""

    async def fetch_trades(
        self, rest: RestClient, symbol: str, first: int, last: int | None
    ) -> list[dict[str, Any]]:
        """Wire-form trades with ids in ``first..last`` (``last=None``: up to the newest) from REST.

        Ids the API does not have are simply absent. Raise :class:`RestUnavailable` for transient
        failures and :class:`RestRefused` when the API refuses the request.
        """
        raise RestRefused(f"{type(self).__name__} has no REST backfill")

    def on_depth(self, event: Event) -> Any:
        """Apply a ``depth`` event to the adapter's book sync; returns an object with ``rows`` (BOOK_DELTA
        wire-form rows to produce), ``gaps`` ((first, last, ts before, ts after) lost id ranges) and
        ``needs_snapshot`` (fetch one with :meth:`fetch_depth_snapshot`). Venues without depth never emit it."""
        raise NotImplementedError(f"{type(self).__name__} has no depth stream")

    async def fetch_depth_snapshot(self, rest: RestClient, symbol: str) -> Any:
        """Fetch a REST depth snapshot and apply it to the sync; returns the same kind of object as :meth:`on_depth`."""
        raise RestRefused(f"{type(self).__name__} has no REST depth snapshot")


@dataclass
class FeedStats:
    """Counters of one runner (also exported as Prometheus metrics)."""

    connections: int = 0
    reconnects: dict[str, int] = field(default_factory=dict)
    trades: int = 0
    quotes: int = 0
    duplicates: int = 0
    backfilled_trades: int = 0
    malformed: int = 0
    venue_errors: int = 0
    gaps: dict[str, int] = field(default_factory=dict)  # outcome -> count (backfilled, lost, open)

    @property
    def total_reconnects(self) -> int:
        """Reconnects and failed connection attempts, all reasons.

        >>> FeedStats(reconnects={"stall": 1, "closed": 2}).total_reconnects
        3
        """
        return sum(self.reconnects.values())


@dataclass
class _Link:
    conn: ClientConnection
    queue: asyncio.Queue[tuple[Frame | None, int, str | None, str | None]]
    reader: asyncio.Task[None] | None = None
    opened: float = field(default_factory=time.monotonic)
    got_data: bool = False
    close_detail: str = ""


@dataclass
class _PendingGap:
    symbol: str
    first: int
    last: int
    source: str
    start_ts: int | None
    end_ts: int | None
    retry_at: float
    attempts: int = 1


class LiveRunner:
    """Run one adapter's connection until stopped (see the module docstring for the behaviour).

    ``topics`` overrides the Kafka topic per data type (default ``market.<asset_class>.<type>.<exchange>``);
    ``stop_when(runner)`` is checked after every frame; ``idle_exit_seconds`` stops after that long
    without any data frame (across reconnects). ``stop()`` may be called from any thread.
    """

    def __init__(
        self,
        adapter: FeedAdapter,
        settings: Settings,
        producer: MarketDataProducer,
        *,
        ledger: GapLedger | None = None,
        rest: RestClient | None = None,
        topics: Mapping[DataType, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connect_limiter: TokenBucket | None = None,
        stop_when: Callable[[LiveRunner], bool] | None = None,
        idle_exit_seconds: float | None = None,
        handover_grace_seconds: float = 1.0,
        queue_size: int = 100_000,
        gap_retry_attempts: int = 8,
        ledger_flush_seconds: float = 1.0,
        max_catchups_per_reconnect: int = 20,
        rng: random.Random | None = None,
    ) -> None:
        self.adapter = adapter
        self.settings = settings
        self.producer = producer
        self.ledger = ledger if ledger is not None else GapLedger()
        self.rest = rest
        self.stats = FeedStats()
        self.stop_when = stop_when
        self.idle_exit_seconds = idle_exit_seconds
        self.handover_grace_seconds = handover_grace_seconds
        self.queue_size = queue_size
        self.gap_retry_attempts = gap_retry_attempts
        self.ledger_flush_seconds = ledger_flush_seconds
        self.max_catchups_per_reconnect = max_catchups_per_reconnect
        self.stall_seconds = settings.source_stall_seconds
        self.max_connection_seconds = settings.source_max_connection_seconds
        self.catchup_after_seconds = min(5.0, settings.source_stall_seconds / 2)
        self.backoff = Backoff(
            settings.source_backoff_initial_seconds, settings.source_backoff_max_seconds, rng=rng
        )
        self._ssl = ssl_context
        self._connect_limiter = connect_limiter or TokenBucket(adapter.connect_rate, adapter.connect_burst)
        self._control_limiter = TokenBucket(adapter.control_rate, 1)
        self._topics = {
            dt: (topics or {}).get(dt) or topic_name(adapter.asset_class, dt.value, adapter.exchange)
            for dt in (DataType.TRADES, DataType.QUOTES, DataType.DEPTH)
        }
        # symbol -> monotonic time before which no snapshot is fetched
        self._depth_retry_at: dict[str, float] = {}
        self.last_trade: dict[str, int] = {}
        self.last_trade_ts: dict[str, int] = {}
        self.last_quote: dict[str, int] = {}
        # symbol -> monotonic time of the reconnect it has not traded since
        self._fresh: dict[str, float] = {}
        # symbols that get a REST catch-up if they stay quiet after a reconnect
        self._catchup: set[str] = set()
        self._pending_gaps: list[_PendingGap] = []
        self._ensured: set[str] = set()
        self._link: _Link | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._stopping = False
        self._fatal: BaseException | None = None
        self._last_data = time.monotonic()
        self._last_flush = time.monotonic()
        src = adapter.source
        self._m_messages = {
            k: metric("k2_source_messages_total").labels(source=src, kind=k)
            for k in ("trade", "quote", "duplicate", "backfill", "control")
        }
        self._m_lag = metric("k2_source_lag_seconds").labels(source=src)
        self._m_reconnects = metric("k2_source_reconnects_total")
        self._m_gaps = metric("k2_source_gaps_total")
        self._m_errors = metric("k2_source_errors_total")

    # -- control ---------------------------------------------------------------------------------
    def topic(self, data_type: DataType) -> str:
        """The Kafka topic this runner produces ``data_type`` records to."""
        return self._topics[data_type]

    @property
    def pending_gaps(self) -> int:
        """Open gaps waiting for a REST retry."""
        return len(self._pending_gaps)

    def stop(self) -> None:
        """Ask the runner to finish (thread-safe); :meth:`run` returns after the current frame."""
        self._stopping = True
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if _running_loop() is loop:
            self._wake()
        else:
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        if self._stop_event is not None:
            self._stop_event.set()
        if self._link is not None:
            self._signal(self._link, "stop")

    @staticmethod
    def _signal(link: _Link, name: str, arg: str | None = None) -> None:
        item: tuple[Frame | None, int, str | None, str | None] = (None, 0, name, arg)
        try:
            link.queue.put_nowait(item)
        except asyncio.QueueFull:
            asyncio.get_running_loop().create_task(link.queue.put(item))

    # -- main loop -------------------------------------------------------------------------------
    async def run(self) -> FeedStats:
        """Connect, stream and reconnect until stopped; returns the counters. Raises on fatal errors."""
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        if self._stopping:
            self._stop_event.set()
        housekeeping = asyncio.create_task(self._housekeeping())
        link: _Link | None = None
        first = True
        try:
            while not self._stopping:
                if link is None:
                    link = await self._connect_with_backoff(first)
                    first = False
                    if link is None:
                        break
                reason, link = await self._session(link)
                if reason == "stop" or self._stopping:
                    break
                self._count_reconnect(reason)
                if reason == "fatal" and self._fatal is not None:
                    raise self._fatal
        finally:
            housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await housekeeping
            if link is not None:
                await self._close(link)
            await self._flush_ledger(final=True)
        if self._fatal is not None:
            raise self._fatal
        return self.stats

    def _count_reconnect(self, reason: str) -> None:
        self.stats.reconnects[reason] = self.stats.reconnects.get(reason, 0) + 1
        self._m_reconnects.labels(source=self.adapter.source, reason=reason).inc()
        now = time.monotonic()
        for symbol in self.last_trade:
            self._fresh[symbol] = now  # re-armed: each reconnect may need its own catch-up
        # Catch-ups are opportunistic (a quiet symbol's gap is found at its next trade anyway): only the
        # most recently active symbols get one, so a reconnect of hundreds of symbols cannot spend the
        # REST budget or block the stream for minutes.
        recent = sorted(self.last_trade_ts, key=self.last_trade_ts.__getitem__, reverse=True)
        self._catchup = set(recent[: self.max_catchups_per_reconnect])
        log.info(
            "feed_reconnect",
            source=self.adapter.source,
            reason=reason,
            reconnects=self.stats.total_reconnects,
        )

    async def _sleep(self, seconds: float) -> None:
        assert self._stop_event is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)

    async def _open(self) -> _Link:
        await self._connect_limiter.acquire()
        url = self.adapter.url()
        context = (
            self._ssl if self._ssl is not None else (tls_context() if url.startswith("wss://") else None)
        )
        conn = await connect(
            url,
            ssl=context,
            open_timeout=10,
            ping_interval=None,  # the venue pings us; stall detection covers dead connections
            close_timeout=2,
            compression=None,
            max_size=8 * 1024 * 1024,
            max_queue=1024,
            user_agent_header="k2-lakehouse",
        )
        link = _Link(conn, asyncio.Queue(maxsize=self.queue_size))
        link.reader = asyncio.create_task(self._read(link))
        self.stats.connections += 1

        async def send(text: str) -> None:
            """Send one control message, paced to the venue's incoming-message limit."""
            await self._control_limiter.acquire()
            await conn.send(text)

        try:
            await self.adapter.on_open(send)
        except BaseException:
            await self._close(link)
            raise
        return link

    async def _connect_with_backoff(self, first: bool) -> _Link | None:
        delay_first = not first
        while not self._stopping:
            if delay_first:
                await self._sleep(self.backoff.next_delay())
                if self._stopping:
                    return None
            delay_first = True
            try:
                return await self._open()
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError, ConnectionClosed) as exc:
                reason = "tls" if isinstance(exc, ssl.SSLError) else "connect_error"
                self._m_errors.labels(source=self.adapter.source, reason=reason).inc()
                self.stats.reconnects[reason] = self.stats.reconnects.get(reason, 0) + 1
                log.warning(
                    "feed_connect_failed",
                    source=self.adapter.source,
                    url=self.adapter.url(),
                    error=f"{type(exc).__name__}: {exc}",
                )
        return None

    async def _read(self, link: _Link) -> None:
        """Reader task: frames -> queue with their receipt time; signals stall/closed/max_age."""
        conn = link.conn
        aged = False  # max_age is signalled once; reading goes on until the handover closes us
        try:
            while True:
                timeout = self.stall_seconds
                if not aged:
                    remaining_age = self.max_connection_seconds - (time.monotonic() - link.opened)
                    if remaining_age <= 0:
                        aged = True
                        await link.queue.put((None, 0, "max_age", None))
                        continue
                    timeout = min(timeout, remaining_age)
                try:
                    async with asyncio.timeout(timeout):
                        frame = await conn.recv()
                except TimeoutError:
                    if not aged and time.monotonic() - link.opened >= self.max_connection_seconds:
                        continue  # signalled at the top of the loop
                    await link.queue.put((None, 0, "stall", None))
                    return
                await link.queue.put((frame, now_us(), None, None))
        except ConnectionClosed as exc:
            link.close_detail = (
                f"code={exc.rcvd.code if exc.rcvd else None} reason={exc.rcvd.reason if exc.rcvd else ''}"
            )
            await link.queue.put((None, 0, "closed", None))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # anything else on the socket: reconnect, but say what it was
            link.close_detail = f"{type(exc).__name__}: {exc}"
            await link.queue.put((None, 0, "error", None))

    async def _close(self, link: _Link) -> None:
        # The reader keeps reading (into the queue) while the closing handshake runs, so a venue that
        # is still streaming cannot stall the handshake behind unread frames.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(link.conn.close(), 3)
        if link.reader is not None and not link.reader.done():
            link.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await link.reader

    async def _session(self, link: _Link) -> tuple[str, _Link | None]:
        """Process one connection's frames; returns (why it ended, the next link if already open)."""
        self._link = link
        if self._stopping:
            return "stop", link
        try:
            while True:
                frame, receipt, sig, arg = await link.queue.get()
                if sig is None:
                    assert frame is not None
                    outcome = await self._handle_frame(link, frame, receipt)
                    if outcome is not None:
                        await self._close(link)
                        return outcome, None
                    if self.stop_when is not None and self.stop_when(self):
                        self._stopping = True
                        return "stop", link
                    continue
                if sig == "stop":
                    return "stop", link
                if sig in ("catchup", "retry_gaps"):
                    if sig == "catchup" and arg is not None:
                        await self._catch_up(arg)
                    else:
                        await self._retry_gaps()
                    if self.stop_when is not None and self.stop_when(self):
                        self._stopping = True
                        return "stop", link
                    continue
                if sig == "max_age":
                    return "max_age", await self._handover(link)
                log.warning(
                    "feed_connection_lost", source=self.adapter.source, reason=sig, detail=link.close_detail
                )
                await self._close(link)
                return sig, None
        except FatalSourceError as exc:
            self._fatal = exc
            self._stopping = True
            return "fatal", link

    async def _handover(self, old: _Link) -> _Link | None:
        """Open the next connection before closing ``old`` (the overlap is removed by dedup)."""
        try:
            new = await self._open()
        except Exception as exc:
            log.warning(
                "feed_handover_failed", source=self.adapter.source, error=f"{type(exc).__name__}: {exc}"
            )
            await self._close(old)
            return None
        self._link = new
        deadline = time.monotonic() + self.handover_grace_seconds
        ended = False
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                frame, receipt, sig, _ = await asyncio.wait_for(old.queue.get(), remaining)
            except TimeoutError:
                break
            if sig is not None or frame is None:
                ended = True
                break
            await self._handle_frame(old, frame, receipt)
        if not ended:
            # Close the old connection while still processing what it delivers until the close completes.
            closing = asyncio.create_task(old.conn.close())
            with contextlib.suppress(TimeoutError):
                while True:
                    frame, receipt, sig, _ = await asyncio.wait_for(old.queue.get(), 5)
                    if sig is not None or frame is None:
                        break
                    await self._handle_frame(old, frame, receipt)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(closing, 3)
        await self._close(old)
        return new

    # -- frames ----------------------------------------------------------------------------------
    async def _handle_frame(self, link: _Link, frame: Frame, receipt: int) -> str | None:
        """Parse and route one frame; returns a reconnect reason if the venue asked for one."""
        self._last_data = time.monotonic()
        try:
            event = self.adapter.parse(frame, receipt)
        except MalformedMessage as exc:
            self._dead_letter(frame, exc)
            return None
        if event is None:
            self._m_messages["control"].inc()
            return None
        if not link.got_data:
            link.got_data = True
            self.backoff.reset()
        kind = event.kind
        if kind == "trade":
            await self._on_trade(event)
        elif kind == "quote":
            self._on_quote(event)
        elif kind == "depth":
            await self._on_depth(event)
        elif kind == "reconnect":
            return "server_shutdown"
        elif kind == "error":
            self.stats.venue_errors += 1
            self._m_errors.labels(source=self.adapter.source, reason="venue_error").inc()
            log.error("feed_venue_error", source=self.adapter.source, detail=event.detail)
        else:
            self._m_messages["control"].inc()
        return None

    def _send(self, record: RecordType, row: dict[str, Any]) -> None:
        self.producer.send(record, row, self._topics[record.data_type])

    async def _on_trade(self, event: Event) -> None:
        symbol, ident = event.symbol, event.ident
        row = event.row
        assert row is not None
        last = self.last_trade.get(symbol)
        if last is not None:
            if ident <= last:
                self.stats.duplicates += 1
                self._m_messages["duplicate"].inc()
                return
            if ident > last + 1:
                source = "reconnect" if symbol in self._fresh else "live"
                await self._fill_gap(
                    symbol, last + 1, ident - 1, source, self.last_trade_ts.get(symbol), row["exchange_ts"]
                )
        self._fresh.pop(symbol, None)
        self._send(TRADE, row)
        self.stats.trades += 1
        self._m_messages["trade"].inc()
        self._m_lag.set((row["receipt_ts"] - row["exchange_ts"]) / 1e6)
        self.last_trade[symbol] = ident
        self.last_trade_ts[symbol] = row["exchange_ts"]

    def _on_quote(self, event: Event) -> None:
        last = self.last_quote.get(event.symbol)
        if last is not None and event.ident <= last:
            self.stats.duplicates += 1
            self._m_messages["duplicate"].inc()
            return
        assert event.row is not None
        self._send(QUOTE, event.row)
        self.stats.quotes += 1
        self._m_messages["quote"].inc()
        self.last_quote[event.symbol] = event.ident

    async def _on_depth(self, event: Event) -> None:
        """One depth event through the adapter's book sync; a break is a ``depth`` gap row and a resync
        from a fresh REST snapshot (at most one attempt per symbol and second while it keeps failing)."""
        step = self.adapter.on_depth(event)
        self._depth_step(event.symbol, step)
        if (
            not step.needs_snapshot
            or self.rest is None
            or time.monotonic() < self._depth_retry_at.get(event.symbol, 0.0)
        ):
            return
        self._depth_retry_at[event.symbol] = time.monotonic() + 1.0
        try:
            self._depth_step(event.symbol, await self.adapter.fetch_depth_snapshot(self.rest, event.symbol))
        except (RestUnavailable, RestRefused) as exc:
            log.warning(
                "depth_snapshot_failed", source=self.adapter.source, symbol=event.symbol, error=str(exc)[:200]
            )

    def _depth_step(self, symbol: str, step: Any) -> None:
        for row in step.rows:
            self._send(BOOK_DELTA, row)
        for first, last, before, after in step.gaps:
            self.ledger.record(
                exchange=self.adapter.exchange,
                symbol=symbol,
                data_type="depth",
                first=first,
                last=last,
                status="lost",
                source="live",
                start_ts=before,
                end_ts=after,
                detail="depth chain broken: book resynced from a REST snapshot",
            )
            self._gap_outcome("lost")

    def _dead_letter(self, frame: Frame, exc: MalformedMessage) -> None:
        topic = self._topics[exc.data_type or DataType.TRADES]
        target = dlq_topic(topic)
        if target not in self._ensured:
            try:
                ensure_topics(self.settings, [target], timeout=5.0)
                self._ensured.add(target)
            # Broker down: the producer re-sends; ensure again next time.
            except (KafkaException, TimeoutError) as error:
                log.warning("feed_dlq_topic_unchecked", topic=target, error=str(error)[:200])
        raw = frame if isinstance(frame, bytes) else frame.encode()
        key = exc.symbol.encode() if exc.symbol else None
        self.producer.produce_raw(target, key, raw, dlq_headers(exc.reason, exc.detail, topic))
        self.stats.malformed += 1
        self._m_errors.labels(source=self.adapter.source, reason=exc.reason).inc()
        log.warning(
            "feed_malformed_frame", source=self.adapter.source, reason=exc.reason, detail=exc.detail[:200]
        )

    # -- gaps and backfill -----------------------------------------------------------------------
    def _gap_outcome(self, outcome: str) -> None:
        self.stats.gaps[outcome] = self.stats.gaps.get(outcome, 0) + 1
        self._m_gaps.labels(source=self.adapter.source, outcome=outcome).inc()

    async def _fetch(self, symbol: str, first: int, last: int | None) -> list[dict[str, Any]]:
        if self.rest is None:
            raise RestRefused(
                f"expected a REST client for {self.adapter.source} backfill, found none configured"
            )
        rows = await self.adapter.fetch_trades(self.rest, symbol, first, last)
        unique: dict[int, dict[str, Any]] = {}
        for row in rows:
            ident = row["trade_id"]
            if ident >= first and (last is None or ident <= last):
                unique.setdefault(ident, row)
        return [unique[i] for i in sorted(unique)]

    def _produce_backfill(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self._send(TRADE, row)
        self.stats.backfilled_trades += len(rows)
        self._m_messages["backfill"].inc(len(rows))

    async def _fill_gap(
        self,
        symbol: str,
        first: int,
        last: int,
        source: str,
        start_ts: int | None,
        end_ts: int | None,
        pending: _PendingGap | None = None,
    ) -> None:
        """Backfill ``first..last`` from REST, produce what was found and record the gap's outcome."""
        detected = now_us()
        try:
            rows = await self._fetch(symbol, first, last)
        except RestUnavailable as exc:
            self._defer_gap(symbol, first, last, source, start_ts, end_ts, exc, pending)
            return
        except RestRefused as exc:
            rows, refused = [], str(exc)
        else:
            refused = ""
        self._produce_backfill(rows)
        missing = missing_ranges(first, last, (r["trade_id"] for r in rows))
        total = last - first + 1
        if missing:
            status = "lost"
            detail = f"REST supplied {len(rows)} of {total} trades; not available: {format_ranges(missing)}"
            if refused:
                detail += f"; {refused}"
        else:
            status = "backfilled"
            detail = f"REST supplied all {total} trades"
        self.ledger.record(
            exchange=self.adapter.exchange,
            symbol=symbol,
            data_type=DataType.TRADES.value,
            first=first,
            last=last,
            status=status,
            source=source,
            detected_ts=detected,
            start_ts=start_ts,
            end_ts=end_ts,
            detail=detail,
        )
        self._gap_outcome(status)
        log.info(
            "feed_gap",
            source=self.adapter.source,
            symbol=symbol,
            first=first,
            last=last,
            status=status,
            gap_source=source,
        )

    def _defer_gap(
        self,
        symbol: str,
        first: int,
        last: int,
        source: str,
        start_ts: int | None,
        end_ts: int | None,
        exc: RestUnavailable,
        pending: _PendingGap | None,
    ) -> None:
        delay = max(exc.retry_after or 0.0, min(300.0, 2.0 ** (pending.attempts if pending else 1)))
        if pending is None:
            self.ledger.record(
                exchange=self.adapter.exchange,
                symbol=symbol,
                data_type=DataType.TRADES.value,
                first=first,
                last=last,
                status="open",
                source=source,
                start_ts=start_ts,
                end_ts=end_ts,
                detail=f"backfill deferred: {exc}",
            )
            self._gap_outcome("open")
            pending = _PendingGap(symbol, first, last, source, start_ts, end_ts, time.monotonic() + delay)
        else:
            pending.attempts += 1
            pending.retry_at = time.monotonic() + delay
        if pending.attempts <= self.gap_retry_attempts:
            self._pending_gaps.append(pending)
        else:
            log.error(
                "feed_gap_left_open",
                source=self.adapter.source,
                symbol=symbol,
                first=first,
                last=last,
                error=str(exc),
            )

    async def _retry_gaps(self) -> None:
        now = time.monotonic()
        due = [g for g in self._pending_gaps if g.retry_at <= now]
        self._pending_gaps = [g for g in self._pending_gaps if g.retry_at > now]
        for gap in due:
            # Late but in the right place for the landing consumer, which lands late ids and closes gaps.
            await self._fill_gap(
                gap.symbol, gap.first, gap.last, gap.source, gap.start_ts, gap.end_ts, pending=gap
            )

    async def _catch_up(self, symbol: str) -> None:
        """After a reconnect, fetch what a symbol traded since its last trade (no live trade seen yet)."""
        if symbol not in self._fresh or symbol not in self.last_trade or symbol not in self._catchup:
            return
        if self.rest is not None and not self.rest.has_headroom(25):
            log.info("feed_catch_up_skipped", source=self.adapter.source, symbol=symbol, reason="REST budget")
            return
        last = self.last_trade[symbol]
        detected = now_us()
        try:
            rows = await self._fetch(symbol, last + 1, None)
        except (RestUnavailable, RestRefused) as exc:
            log.warning("feed_catch_up_failed", source=self.adapter.source, symbol=symbol, error=str(exc))
            return
        if not rows:
            return
        top = rows[-1]["trade_id"]
        self._produce_backfill(rows)
        missing = missing_ranges(last + 1, top, (r["trade_id"] for r in rows))
        status = "lost" if missing else "backfilled"
        detail = f"caught up {len(rows)} trades from REST after a reconnect (no live trade yet)"
        if missing:
            detail += f"; not available: {format_ranges(missing)}"
        self.ledger.record(
            exchange=self.adapter.exchange,
            symbol=symbol,
            data_type=DataType.TRADES.value,
            first=last + 1,
            last=top,
            status=status,
            source="reconnect",
            detected_ts=detected,
            start_ts=self.last_trade_ts.get(symbol),
            end_ts=rows[-1]["exchange_ts"],
            detail=detail,
        )
        self._gap_outcome(status)
        self.last_trade[symbol] = top
        self.last_trade_ts[symbol] = rows[-1]["exchange_ts"]

    # -- housekeeping ----------------------------------------------------------------------------
    async def _flush_ledger(self, final: bool = False) -> None:
        if not self.ledger.pending:
            return
        try:
            written = await asyncio.to_thread(self.ledger.flush)
            self._last_flush = time.monotonic()
            log.debug("gap_ledger_flushed", rows=written)
        except Exception as exc:  # keep streaming; the rows stay buffered for the next flush
            log.error("gap_ledger_flush_failed", error=f"{type(exc).__name__}: {exc}", final=final)
            if final:
                raise

    async def _housekeeping(self) -> None:
        tick = min(0.25, self.catchup_after_seconds / 2)
        while True:
            await asyncio.sleep(tick)
            try:
                await self._housekeeping_tick()
            except Exception as exc:  # never let a bookkeeping error silently end catch-ups and flushes
                log.error(
                    "feed_housekeeping_failed",
                    source=self.adapter.source,
                    error=f"{type(exc).__name__}: {exc}",
                )

    async def _housekeeping_tick(self) -> None:
        """Idle exit, catch-up and gap-retry requests, delivery-error check, periodic ledger flush."""
        now = time.monotonic()
        link = self._link
        if self.idle_exit_seconds is not None and now - self._last_data > self.idle_exit_seconds:
            log.info("feed_idle_exit", source=self.adapter.source, idle_seconds=self.idle_exit_seconds)
            self.stop()
        if link is not None:
            for symbol, since in list(self._fresh.items()):
                if since >= 0 and now - since >= self.catchup_after_seconds and symbol in self._catchup:
                    self._fresh[symbol] = -1.0  # asked once per reconnect
                    self._signal(link, "catchup", symbol)
            if any(g.retry_at <= now for g in self._pending_gaps):
                self._signal(link, "retry_gaps")
        try:
            self.producer.check()  # recovers a producer stuck on a restarted broker; raises past the bound
        except DeliveryError as exc:
            self._fatal = exc
        if self.producer.errors and self._fatal is None:
            self._fatal = DeliveryError(list(self.producer.errors))
        if self._fatal is not None:
            self.stop()
        if now - self._last_flush >= self.ledger_flush_seconds:
            self._last_flush = now
            await self._flush_ledger()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def run_feeds(
    settings: Settings,
    adapters: Sequence[FeedAdapter],
    *,
    ledger: GapLedger | None = None,
    topics: Mapping[DataType, str] | None = None,
    idle_exit_seconds: float | None = None,
    install_signal_handlers: bool = True,
    on_start: Callable[[list[LiveRunner]], None] | None = None,
) -> list[FeedStats]:
    """Run every adapter's feed concurrently with one producer and gap ledger until stopped.

    SIGINT/SIGTERM stop the feeds cleanly (producer flushed, ledger written). The first feed that
    fails fatally stops the others and its error is raised.

    Example::

        stats = asyncio.run(run_feeds(load_settings(), BinanceFeed.for_symbols(["BTCUSDT"], settings)))
    """
    ledger = ledger if ledger is not None else GapLedger.for_settings(settings)
    rest_clients: dict[int, RestClient | None] = {}
    limiters: dict[str, TokenBucket] = {}
    runners: list[LiveRunner] = []
    with MarketDataProducer(settings) as producer:
        for adapter in adapters:
            limiter = limiters.setdefault(
                adapter.source, TokenBucket(adapter.connect_rate, adapter.connect_burst)
            )
            rest = adapter.rest_client()
            rest_clients[id(adapter)] = rest
            runners.append(
                LiveRunner(
                    adapter,
                    settings,
                    producer,
                    ledger=ledger,
                    rest=rest,
                    topics=topics,
                    connect_limiter=limiter,
                    idle_exit_seconds=idle_exit_seconds,
                )
            )
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []

        def stop_all() -> None:
            """SIGINT/SIGTERM: finish every feed cleanly."""
            for runner in runners:
                runner.stop()

        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(signum, stop_all)
                    installed.append(signum)
        if on_start is not None:
            on_start(runners)
        try:
            tasks = [asyncio.create_task(r.run()) for r in runners]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            if any(t.exception() is not None for t in done):
                for runner in runners:
                    runner.stop()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
            for rest in rest_clients.values():
                if rest is not None:
                    await rest.aclose()
        await asyncio.to_thread(ledger.flush)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return [r for r in results if isinstance(r, FeedStats)]
