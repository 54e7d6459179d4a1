"""The live runner: one adapter's feed, kept connected, deduplicated and gap-free, into Kafka.

:class:`LiveRunner` orchestrates the rooms of :mod:`k2.sources.live`: it takes links from the
:class:`~k2.sources.live.connection.Connector`, routes each frame the adapter parses, drops
duplicates (per symbol the last trade id and the last quote update id of this session; anything at or
below is a reconnect overlap or a venue's ``last_match`` replay), hands trade-id gaps to
:class:`~k2.sources.live.backfill.Backfill` before producing the trade that revealed them, sends
malformed frames to the DLQ of the topic they were meant for (byte for byte, ``k2.reason``/``k2.detail``
headers, counted in ``k2_source_errors_total``; they never stop the feed) and keeps house: idle exit,
REST catch-ups after a reconnect, gap retries, producer health, periodic gap-ledger flushes.

Hazard: the runner's state (dedup marks, pending gaps) lives in this process only; a restart starts
a new session whose first trade per symbol is not checked against the previous session.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from confluent_kafka import KafkaException

from k2.bus.dlq import dlq_headers
from k2.bus.producer import DeliveryError, MarketDataProducer
from k2.bus.topics import dlq_topic, ensure_topics, topic_name
from k2.config import Settings
from k2.model import BOOK_DELTA, QUOTE, TRADE, DataType, RecordType
from k2.pacing import Backoff, TokenBucket
from k2.sources.gaps import GapLedger
from k2.sources.live.adapter import (
    Event,
    FatalSourceError,
    FeedAdapter,
    FeedStats,
    Frame,
    MalformedMessage,
)
from k2.sources.live.backfill import Backfill
from k2.sources.live.connection import Connector, Link, close_link, signal
from k2.sources.live.limits import ConnectionLimits
from k2.sources.live.rest import RestClient, RestRefused, RestUnavailable
from k2.telemetry.metrics import metric

log = structlog.get_logger("k2.sources.live")


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
        self._topics = {
            dt: (topics or {}).get(dt) or topic_name(adapter.asset_class, dt.value, adapter.exchange)
            for dt in (DataType.TRADES, DataType.QUOTES, DataType.DEPTH)
        }
        self._connector = Connector(
            adapter,
            self.stats,
            limits=ConnectionLimits(adapter, connect_limiter),
            backoff=self.backoff,
            ssl_context=ssl_context,
            queue_size=queue_size,
            stall_seconds=self.stall_seconds,
            max_connection_seconds=self.max_connection_seconds,
            handover_grace_seconds=handover_grace_seconds,
        )
        self._backfill = Backfill(
            adapter, rest, self.ledger, self.stats, self._send, gap_retry_attempts=gap_retry_attempts
        )
        self._init_session_state()
        src = adapter.source
        self._m_messages = {
            k: metric("k2_source_messages_total").labels(source=src, kind=k)
            for k in ("trade", "quote", "duplicate", "backfill", "control")
        }
        self._m_lag = metric("k2_source_lag_seconds").labels(source=src)
        self._m_reconnects = metric("k2_source_reconnects_total")
        self._m_errors = metric("k2_source_errors_total")

    def _init_session_state(self) -> None:
        """Dedup marks, reconnect bookkeeping and the stop machinery, all empty."""
        # symbol -> monotonic time before which no snapshot is fetched
        self._depth_retry_at: dict[str, float] = {}
        self._depth_seen: set[str] = set()  # symbols with a depth sync
        self._depth_fresh: set[str] = set()  # ... that have had no depth event since the last reconnect
        self.last_trade: dict[str, int] = {}
        self.last_trade_ts: dict[str, int] = {}
        self.last_quote: dict[str, int] = {}
        # symbol -> monotonic time of the reconnect it has not traded since
        self._fresh: dict[str, float] = {}
        # symbols that get a REST catch-up if they stay quiet after a reconnect
        self._catchup: set[str] = set()
        self._ensured: set[str] = set()
        self._link: Link | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._stopping = False
        self._fatal: BaseException | None = None
        self._last_data = time.monotonic()
        self._last_flush = time.monotonic()

    # -- control ---------------------------------------------------------------------------------
    def topic(self, data_type: DataType) -> str:
        """The Kafka topic this runner produces ``data_type`` records to."""
        return self._topics[data_type]

    @property
    def pending_gaps(self) -> int:
        """Open gaps waiting for a REST retry."""
        return len(self._backfill.pending)

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
            signal(self._link, "stop")

    # -- main loop -------------------------------------------------------------------------------
    async def run(self) -> FeedStats:
        """Connect, stream and reconnect until stopped; returns the counters. Raises on fatal errors."""
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        if self._stopping:
            self._stop_event.set()
        housekeeping = asyncio.create_task(self._housekeeping())
        link: Link | None = None
        first = True
        try:
            while not self._stopping:
                if link is None:
                    link = await self._connector.connect_with_backoff(
                        first, lambda: self._stopping, self._sleep
                    )
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
                await close_link(link)
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
        self._depth_fresh = set(self._depth_seen)  # a depth hole seen next is across the reconnect
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

    async def _session(self, link: Link) -> tuple[str, Link | None]:
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
                        await close_link(link)
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
                        await self._backfill.retry_due()
                    if self.stop_when is not None and self.stop_when(self):
                        self._stopping = True
                        return "stop", link
                    continue
                if sig == "max_age":
                    return "max_age", await self._handover(link)
                log.warning(
                    "feed_connection_lost", source=self.adapter.source, reason=sig, detail=link.close_detail
                )
                await close_link(link)
                return sig, None
        except FatalSourceError as exc:
            self._fatal = exc
            self._stopping = True
            return "fatal", link

    async def _handover(self, old: Link) -> Link | None:
        """Open the next connection before closing ``old`` (the overlap is removed by dedup)."""
        try:
            new = await self._connector.open()
        except Exception as exc:
            log.warning(
                "feed_handover_failed", source=self.adapter.source, error=f"{type(exc).__name__}: {exc}"
            )
            await close_link(old)
            return None
        self._link = new
        await self._connector.retire(old, self._handle_frame)
        return new

    # -- frames ----------------------------------------------------------------------------------
    async def _handle_frame(self, link: Link, frame: Frame, receipt: int) -> str | None:
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
                await self._backfill.fill_gap(
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
        from a fresh REST snapshot (at most one attempt per symbol and second while it keeps failing).
        A hole seen at a symbol's first depth event after a reconnect is a ``reconnect`` gap."""
        step = self.adapter.on_depth(event)
        across = event.symbol in self._depth_fresh
        self._depth_seen.add(event.symbol)
        self._depth_fresh.discard(event.symbol)
        self._depth_step(event.symbol, step, "reconnect" if across else "live")
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

    def _depth_step(self, symbol: str, step: Any, source: str = "live") -> None:
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
                source=source,
                start_ts=before,
                end_ts=after,
                detail="depth chain broken: book resynced from a REST snapshot",
            )
            self._backfill.gap_outcome("lost")

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

    # -- gaps ------------------------------------------------------------------------------------
    async def _catch_up(self, symbol: str) -> None:
        """After a reconnect, fetch what a symbol traded since its last trade (no live trade seen yet)."""
        if symbol not in self._fresh or symbol not in self.last_trade or symbol not in self._catchup:
            return
        caught = await self._backfill.catch_up(
            symbol, self.last_trade[symbol], self.last_trade_ts.get(symbol)
        )
        if caught is not None:
            self.last_trade[symbol], self.last_trade_ts[symbol] = caught

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
                    signal(link, "catchup", symbol)
            if self._backfill.any_due(now):
                signal(link, "retry_gaps")
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
