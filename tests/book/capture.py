"""The real Binance capture's book deltas, as the import's own reader parses them (shared by the book tests)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from k2.model import BOOK_DELTA, RecordType
from k2.model.book import OrderBook
from k2.model.values import unscaled_to_decimal
from k2.query.book import book_metrics
from k2.sources.binance import iter_capture_lines
from k2.sources.binance_capture import CaptureReader
from tests.sources.helpers import BINANCE_CAPTURES

FIRST_NS = 1_723_161_253_937_085_768  # receipt time of the capture's first line


def capture_deltas(seconds: int) -> list[dict[str, Any]]:
    """The ``book_deltas`` rows of the capture's first ``seconds`` (receipt time), ``ingest_ts`` = receipt time.

    A line the reader rejects fails the calling test: the capture is known to be clean.
    """
    rows: list[dict[str, Any]] = []

    def emit(record: RecordType, row: dict[str, Any]) -> None:
        if record is BOOK_DELTA:
            rows.append({**row, "ingest_ts": row["receipt_ts"]})

    reader = CaptureReader(emit, lambda *bad: pytest.fail(f"unexpected reject {bad}"))
    for ns, raw in iter_capture_lines(BINANCE_CAPTURES[0]):
        if ns > FIRST_NS + seconds * 10**9:
            break
        reader.feed(ns, raw, "capture")
    return rows


def exchange_deltas(exchange: str, seconds: int) -> list[dict[str, Any]]:
    """:func:`capture_deltas` under another ``exchange`` name (a test's own rows, apart from others' in a shared lake)."""
    return [{**row, "exchange": exchange} for row in capture_deltas(seconds)]


def top_levels(rows: list[dict[str, Any]], depth: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The best ``depth`` (price, size) levels per side, unscaled, of the book built from ``rows``."""
    book = OrderBook()
    book.apply_rows(rows)
    return book.top("BID", depth), book.top("ASK", depth)


def restart_snapshot(before: list[dict[str, Any]], restart_u: int) -> tuple[list[dict[str, Any]], int]:
    """The rows of a resync at update id ``restart_u`` after the rows ``before``: a snapshot restarting the book
    with every level of the book ``before`` built, except its best bid (so the restarted book differs from the
    one it replaces, as a real resync's may). Shaped as the import writes snapshots: the last row ends the event.
    Returns the rows and the removed best bid (unscaled price).
    """
    book = OrderBook()
    book.apply_rows(before)
    best_bid = book.top("BID", 1)[0][0]
    snapshot = [
        {
            **before[-1],
            "side": side,
            "price": price,
            "size": size,
            "first_update_id": restart_u,
            "last_update_id": restart_u,
            "prev_update_id": None,
            "is_snapshot": True,
            "is_event_end": False,
        }
        for side, levels in (("BID", book.top("BID", 10_000)), ("ASK", book.top("ASK", 10_000)))
        for price, size in levels
        if not (side == "BID" and price == best_bid)
    ]
    snapshot[-1]["is_event_end"] = True
    return snapshot, best_bid


def reference_row(
    rows: list[dict[str, Any]], moment_us: int, depth: int, quantity: Decimal
) -> dict[str, Any]:
    """The ``book_series`` row at ``moment_us`` replayed the slow way: every row at or before it applied to an
    :class:`OrderBook` in update-id order, then the levels and :func:`k2.query.book.book_metrics` read off it."""
    book = OrderBook()
    book.apply_rows(
        sorted((r for r in rows if r["exchange_ts"] <= moment_us), key=lambda r: r["last_update_id"])
    )
    bids, asks = book.top("BID", len(book.bids)), book.top("ASK", len(book.asks))
    out: dict[str, Any] = {"last_update_id": book.last_update_id}
    for name, levels in (("bid", bids), ("ask", asks)):
        out[f"{name}_prices"] = [unscaled_to_decimal(p) for p, _ in levels[:depth]]
        out[f"{name}_sizes"] = [unscaled_to_decimal(s) for _, s in levels[:depth]]
    out.update(book_metrics(bids, asks, 10, 10, quantity))
    return out


def with_resync(rows: list[dict[str, Any]], at: int, depth: int) -> list[dict[str, Any]]:
    """``rows`` with a restarting snapshot (the best ``depth`` levels per side) after the event ending at row ``at``."""
    book = OrderBook()
    book.apply_rows(rows[: at + 1])
    end = rows[at]
    levels = [("BID", p, s) for p, s in book.top("BID", depth)] + [
        ("ASK", p, s) for p, s in book.top("ASK", depth)
    ]
    snapshot = [
        {
            **end,
            "side": side,
            "price": price,
            "size": size,
            "is_snapshot": True,
            "is_event_end": i == len(levels) - 1,
        }
        for i, (side, price, size) in enumerate(levels)
    ]
    # The same update id as the event it follows: rows of that event (not snapshot rows) are superseded.
    return rows[: at + 1] + snapshot + rows[at + 1 :]
