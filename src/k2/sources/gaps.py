"""The gap ledger as written by sources: ``quality.gaps`` rows for holes a live feed saw in an id sequence.

A row says which ids were missing (``first_missing_id``..``last_missing_id``), where the hole was seen
(``source``: ``live`` = an id jump on an open connection, ``reconnect`` = across a reconnect, ``file``,
``landing``) and what became of it (``status``): ``backfilled`` (every id was fetched from the venue's
REST API and produced), ``lost`` (the API could not supply at least one id; ``detail`` names the exact
ranges that are gone) or ``open`` (not resolved yet, e.g. the API was rate limiting us). The ledger is
append-only data: the latest row per ``gap_key`` is the gap's state (see :mod:`k2.landing.ledger`).

Rows are buffered in memory and appended to Iceberg in one commit per :meth:`GapLedger.flush`, so a
burst of reconnects costs one commit, not one per gap. The landing consumer appends to the same table;
K2 tables have pyiceberg's own commit retry disabled, so a conflicting commit is retried here after a
refresh (an append is safe to retry: the failed commit wrote nothing).

Example:
    >>> gap_key("binance", "BTCUSDT", "trades", 101, 104)
    'binance/BTCUSDT/trades/101-104'
    >>> missing_ranges(101, 110, [101, 102, 105, 106, 110])
    [(103, 104), (107, 109)]
    >>> ledger = GapLedger()  # memory only (no table)
    >>> row = ledger.record(exchange="binance", symbol="BTCUSDT", data_type="trades", first=101, last=104,
    ...     status="backfilled", source="reconnect", detected_ts=0)
    >>> ledger.pending, row["missing_count"]
    (1, 4)
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from typing import Any

import structlog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from k2.config import Settings
from k2.model import GAP
from k2.model.arrow import records_to_arrow
from k2.model.values import now_micros
from k2.pacing import Backoff, retrying

log = structlog.get_logger("k2.sources.gaps")

GAP_STATUSES = ("open", "backfilled", "lost")
GAP_SOURCES = ("live", "reconnect", "file", "landing")
WRITER_PROPERTY = "k2.gaps.writer"


def gap_key(exchange: str, symbol: str, data_type: str, first: int, last: int) -> str:
    """The stable identity of a gap: ``exchange/symbol/data_type/first-last``.

    >>> gap_key("coinbase", "BTC-USD", "trades", 5, 5)
    'coinbase/BTC-USD/trades/5-5'
    """
    return f"{exchange}/{symbol}/{data_type}/{first}-{last}"


def missing_ranges(first: int, last: int, present: Iterable[int]) -> list[tuple[int, int]]:
    """Inclusive id ranges within ``first..last`` that are not in ``present``.

    >>> missing_ranges(1, 5, [])
    [(1, 5)]
    >>> missing_ranges(1, 5, [1, 2, 3, 4, 5, 9])
    []
    """
    ranges: list[tuple[int, int]] = []
    expected = first
    for ident in sorted({i for i in present if first <= i <= last}):
        if ident > expected:
            ranges.append((expected, ident - 1))
        expected = ident + 1
    if expected <= last:
        ranges.append((expected, last))
    return ranges


def format_ranges(ranges: Iterable[tuple[int, int]], limit: int = 20) -> str:
    """Ranges as text for ``detail`` (``a-b (n)``, at most ``limit`` shown).

    >>> format_ranges([(3, 4), (9, 9)])
    '3-4 (2), 9-9 (1)'
    """
    items = list(ranges)
    text = ", ".join(f"{a}-{b} ({b - a + 1})" for a, b in items[:limit])
    if len(items) > limit:
        text += f", ... {len(items) - limit} more"
    return text


def gap_row(
    *,
    exchange: str,
    symbol: str,
    data_type: str,
    first: int,
    last: int,
    status: str,
    source: str,
    detected_ts: int | None = None,
    start_ts: int | None = None,
    end_ts: int | None = None,
    detail: str | None = None,
) -> dict[str, Any]:
    """A wire-form GAP row (validated: status, source and ``first <= last``).

    >>> gap_row(exchange="binance", symbol="BTCUSDT", data_type="trades", first=7, last=9,
    ...     status="lost", source="live", detected_ts=1)["gap_key"]
    'binance/BTCUSDT/trades/7-9'
    """
    if status not in GAP_STATUSES:
        raise ValueError(f"expected a gap status in {GAP_STATUSES}, found {status!r}")
    if source not in GAP_SOURCES:
        raise ValueError(f"expected a gap source in {GAP_SOURCES}, found {source!r}")
    if first > last:
        raise ValueError(f"expected first_missing_id <= last_missing_id, found {first} > {last}")
    return {
        "exchange": exchange,
        "symbol": symbol,
        "data_type": data_type,
        "first_missing_id": first,
        "last_missing_id": last,
        "missing_count": last - first + 1,
        "start_ts": start_ts,
        "end_ts": end_ts,
        "detected_ts": now_micros() if detected_ts is None else detected_ts,
        "source": source,
        "status": status,
        "gap_key": gap_key(exchange, symbol, data_type, first, last),
        "detail": detail,
    }


class GapLedger:
    """Buffers GAP rows and appends them to ``quality.gaps`` (or keeps them in memory without a table).

    Thread-safe: :meth:`record` is called from the feed's event loop, :meth:`flush` usually from a
    worker thread. ``history`` keeps the last ``history_size`` rows recorded in this process (stats, tests).

    Example (needs a catalog)::

        ledger = GapLedger.for_settings(settings)
        ledger.record(exchange="binance", symbol="BTCUSDT", data_type="trades", first=1, last=2,
                      status="backfilled", source="reconnect")
        ledger.flush()
    """

    def __init__(
        self, table: Table | None = None, writer: str = "source", history_size: int = 100_000
    ) -> None:
        self.table = table
        self.writer = writer
        self.history: deque[dict[str, Any]] = deque(maxlen=history_size)
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()

    @classmethod
    def for_settings(cls, settings: Settings, writer: str = "source") -> GapLedger:
        """A ledger writing to the ``gaps`` table of the configured catalog (tables created if missing)."""
        from k2.lake.catalog import ensure_tables, load_catalog

        return cls(ensure_tables(load_catalog(settings), settings)["gaps"], writer)

    def record(self, **fields: Any) -> dict[str, Any]:
        """Build a row with :func:`gap_row` (same keyword arguments), buffer it and return it."""
        row = gap_row(**fields)
        with self._lock:
            self._pending.append(row)
            self.history.append(row)
        return row

    @property
    def pending(self) -> int:
        """Rows recorded but not yet written."""
        return len(self._pending)

    def flush(self, attempts: int = 20) -> int:
        """Append the buffered rows in one commit; returns how many were written (0 without a table).

        On failure the rows stay buffered (nothing is lost) and the exception propagates.
        """
        from k2.lake.writer import append

        with self._flush_lock:
            with self._lock:
                rows, self._pending = self._pending, []
            if not rows or self.table is None:
                return 0
            try:
                data = records_to_arrow(GAP, rows)
                for attempt in retrying(CommitFailedException, attempts=attempts, backoff=Backoff(0.05, 1.0)):
                    with attempt:
                        self.table.refresh()
                        append(self.table, data, "gaps", {WRITER_PROPERTY: self.writer})
                        return len(rows)
            except BaseException:
                with self._lock:
                    self._pending[:0] = rows
                raise
            return 0  # pragma: no cover - the loop either returns or raises
