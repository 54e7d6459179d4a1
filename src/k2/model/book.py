"""An L2 order book in memory, built from :data:`~k2.model.BOOK_DELTA` rows (wire form, unscaled prices).

One definition of "apply a book change", shared by the sources (which keep a book to check their sync),
the query layer (which rebuilds the book at a moment) and the tests: the three can never disagree.

Rules: a row's ``size`` is the level's new absolute size; 0 removes the level (removing an absent level is
a no-op, as Binance documents). A snapshot row (``is_snapshot``) first clears the book when it starts a new
snapshot (a different ``last_update_id`` than the snapshot being loaded).

Hazards: prices and sizes are unscaled integers (x 10**8) so comparisons are exact; best prices are found
by scanning the keys (books here hold at most a few thousand levels); a book is "crossed" when the best
bid is at or above the best ask, which a correctly synced book never is.

Example:
    >>> book = OrderBook()
    >>> book.apply("BID", 100, 5); book.apply("ASK", 101, 7); book.apply("BID", 99, 1)
    >>> book.best_bid(), book.best_ask(), book.top("BID", 2)
    ((100, 5), (101, 7), [(100, 5), (99, 1)])
    >>> book.apply("BID", 100, 0); book.best_bid()
    (99, 1)
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Level = tuple[int, int]  # (unscaled price, unscaled size)


@dataclass
class OrderBook:
    """Bids and asks as ``price -> size`` (unscaled), plus the last update id and exchange time applied."""

    bids: dict[int, int] = field(default_factory=dict)
    asks: dict[int, int] = field(default_factory=dict)
    last_update_id: int | None = None
    exchange_ts: int | None = None
    _snapshot_id: int | None = None

    def clear(self) -> None:
        """Drop every level (a snapshot follows)."""
        self.bids.clear()
        self.asks.clear()

    def apply(self, side: str, price: int, size: int) -> None:
        """Set one level's absolute size (0 removes it); ``side`` is BID or ASK."""
        levels = self.bids if side == "BID" else self.asks if side == "ASK" else None
        if levels is None:
            raise ValueError(f"expected side BID or ASK, found {side!r}")
        if size == 0:
            levels.pop(price, None)
        else:
            levels[price] = size

    def apply_row(self, row: Mapping[str, Any]) -> None:
        """Apply one wire-form BOOK_DELTA row (snapshot rows of a new snapshot clear the book first)."""
        if row["is_snapshot"]:
            if self._snapshot_id != row["last_update_id"]:
                self.clear()
                self._snapshot_id = row["last_update_id"]
        else:
            self._snapshot_id = None
        self.apply(row["side"], row["price"], row["size"])
        self.last_update_id = row["last_update_id"]
        self.exchange_ts = row["exchange_ts"]

    def apply_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            self.apply_row(row)

    def best_bid(self) -> Level | None:
        if not self.bids:
            return None
        price = max(self.bids)
        return price, self.bids[price]

    def best_ask(self) -> Level | None:
        if not self.asks:
            return None
        price = min(self.asks)
        return price, self.asks[price]

    def top(self, side: str, depth: int) -> list[Level]:
        """The best ``depth`` levels of one side, best first."""
        if side == "BID":
            return [(p, self.bids[p]) for p in heapq.nlargest(depth, self.bids)]
        return [(p, self.asks[p]) for p in heapq.nsmallest(depth, self.asks)]

    def crossed(self) -> bool:
        """True when the best bid is at or above the best ask (never true for a correctly synced book)."""
        bid, ask = self.best_bid(), self.best_ask()
        return bid is not None and ask is not None and bid[0] >= ask[0]
