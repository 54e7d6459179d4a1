"""Gaps in a live trade stream, filled from the venue's REST API and written to the gap ledger.

A trade id above ``last + 1`` is a gap. :meth:`Backfill.fill_gap` fetches the missing ids *before*
the runner produces the trade that revealed it (per-symbol order is kept in Kafka) and records the gap
in the ledger (:mod:`k2.sources.gaps`) as ``backfilled``, or ``lost`` with the exact ranges the API
could not supply. If the API is unavailable (rate limit longer than we wait, server errors) the gap is
recorded ``open`` and retried later (:meth:`Backfill.retry_due`, backing off up to 5 minutes, at most
``gap_retry_attempts`` times). After a reconnect, :meth:`Backfill.catch_up` fetches what a quiet
symbol traded since its last trade.

Hazard: a retried gap is produced late, after newer trades of its symbol; the landing consumer lands
late ids and closes the gap, so this is correct but not in id order on the topic.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from k2.model import TRADE, DataType, RecordType
from k2.sources.gaps import GapLedger, format_ranges, missing_ranges
from k2.sources.live.adapter import FeedAdapter, FeedStats, now_us
from k2.sources.live.rest import RestClient, RestRefused, RestUnavailable
from k2.telemetry.metrics import metric

log = structlog.get_logger("k2.sources.live")

RowSender = Callable[[RecordType, dict[str, Any]], None]


@dataclass
class PendingGap:
    """An ``open`` gap waiting for its next REST attempt (``retry_at`` is monotonic time)."""

    symbol: str
    first: int
    last: int
    source: str
    start_ts: int | None
    end_ts: int | None
    retry_at: float
    attempts: int = 1


class Backfill:
    """The gap work of one runner: fill, defer and retry, catch up; counts outcomes in ``stats`` and metrics."""

    def __init__(
        self,
        adapter: FeedAdapter,
        rest: RestClient | None,
        ledger: GapLedger,
        stats: FeedStats,
        send: RowSender,
        *,
        gap_retry_attempts: int,
    ) -> None:
        self.adapter = adapter
        self.rest = rest
        self.ledger = ledger
        self.stats = stats
        self.send = send
        self.gap_retry_attempts = gap_retry_attempts
        self.pending: list[PendingGap] = []
        self._m_gaps = metric("k2_source_gaps_total")
        self._m_backfill = metric("k2_source_messages_total").labels(source=adapter.source, kind="backfill")

    def gap_outcome(self, outcome: str) -> None:
        """Count one gap's outcome (``backfilled``, ``lost``, ``open``)."""
        self.stats.gaps[outcome] = self.stats.gaps.get(outcome, 0) + 1
        self._m_gaps.labels(source=self.adapter.source, outcome=outcome).inc()

    def any_due(self, now: float) -> bool:
        """True when an open gap's retry time (monotonic) has come."""
        return any(g.retry_at <= now for g in self.pending)

    async def fetch(self, symbol: str, first: int, last: int | None) -> list[dict[str, Any]]:
        """Wire-form trades ``first..last`` from REST, deduplicated and in id order."""
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

    def produce(self, rows: list[dict[str, Any]]) -> None:
        """Send backfilled trades to the trade topic."""
        for row in rows:
            self.send(TRADE, row)
        self.stats.backfilled_trades += len(rows)
        self._m_backfill.inc(len(rows))

    async def fill_gap(
        self,
        symbol: str,
        first: int,
        last: int,
        source: str,
        start_ts: int | None,
        end_ts: int | None,
        pending: PendingGap | None = None,
    ) -> None:
        """Backfill ``first..last`` from REST, produce what was found and record the gap's outcome."""
        detected = now_us()
        try:
            rows = await self.fetch(symbol, first, last)
        except RestUnavailable as exc:
            self._defer(symbol, first, last, source, start_ts, end_ts, exc, pending)
            return
        except RestRefused as exc:
            rows, refused = [], str(exc)
        else:
            refused = ""
        self.produce(rows)
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
        self.gap_outcome(status)
        log.info(
            "feed_gap",
            source=self.adapter.source,
            symbol=symbol,
            first=first,
            last=last,
            status=status,
            gap_source=source,
        )

    def _defer(
        self,
        symbol: str,
        first: int,
        last: int,
        source: str,
        start_ts: int | None,
        end_ts: int | None,
        exc: RestUnavailable,
        pending: PendingGap | None,
    ) -> None:
        """Record the gap ``open`` (first time) and schedule its next attempt, or give up past the limit."""
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
            self.gap_outcome("open")
            pending = PendingGap(symbol, first, last, source, start_ts, end_ts, time.monotonic() + delay)
        else:
            pending.attempts += 1
            pending.retry_at = time.monotonic() + delay
        if pending.attempts <= self.gap_retry_attempts:
            self.pending.append(pending)
        else:
            log.error(
                "feed_gap_left_open",
                source=self.adapter.source,
                symbol=symbol,
                first=first,
                last=last,
                error=str(exc),
            )

    async def retry_due(self) -> None:
        """Try again every open gap whose retry time has come."""
        now = time.monotonic()
        due = [g for g in self.pending if g.retry_at <= now]
        self.pending = [g for g in self.pending if g.retry_at > now]
        for gap in due:
            # Late but in the right place for the landing consumer, which lands late ids and closes gaps.
            await self.fill_gap(
                gap.symbol, gap.first, gap.last, gap.source, gap.start_ts, gap.end_ts, pending=gap
            )

    async def catch_up(self, symbol: str, last: int, last_ts: int | None) -> tuple[int, int] | None:
        """Fetch what ``symbol`` traded after trade ``last`` (a reconnect, no live trade seen yet).

        Returns the (id, exchange_ts) of the newest trade produced, or None when nothing was (no REST
        budget to spare, the API failing, or nothing new).
        """
        if self.rest is not None and not self.rest.has_headroom(25):
            log.info("feed_catch_up_skipped", source=self.adapter.source, symbol=symbol, reason="REST budget")
            return None
        detected = now_us()
        try:
            rows = await self.fetch(symbol, last + 1, None)
        except (RestUnavailable, RestRefused) as exc:
            log.warning("feed_catch_up_failed", source=self.adapter.source, symbol=symbol, error=str(exc))
            return None
        if not rows:
            return None
        top = rows[-1]["trade_id"]
        self.produce(rows)
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
            start_ts=last_ts,
            end_ts=rows[-1]["exchange_ts"],
            detail=detail,
        )
        self.gap_outcome(status)
        return top, rows[-1]["exchange_ts"]
