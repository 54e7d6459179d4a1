"""The truth check of issue 14: a rebuilt book against the capture's own bookTicker, at shared update ids.

The bookTicker stream is Binance's real-time best bid/ask with the update id ``u`` it reflects; the depth
diff stream batches the same ids every 100 ms. Wherever a depth event ends at an id the bookTicker also
published, the rebuilt book's best levels must equal the bookTicker exactly.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

from k2.model.book import OrderBook
from k2.model.values import to_unscaled
from k2.sources.binance import iter_capture_lines

Top = tuple[tuple[int, int], tuple[int, int]]


def book_tickers(paths: Iterable[Path]) -> Mapping[int, Top]:
    """``u -> ((bid, bid size), (ask, ask size))`` (unscaled) of every bookTicker in the captures.

    Parsed once per process for the same files (1.2 s of CPU for the BTCUSDT capture; five tests read it),
    and read-only: every caller shares the one answer."""
    return _book_tickers(tuple(paths))


@functools.cache
def _book_tickers(paths: tuple[Path, ...]) -> Mapping[int, Top]:
    out: dict[int, Top] = {}
    for _, raw in iter_capture_lines(list(paths)):
        if b"@bookTicker" in raw[:48]:
            d = orjson.loads(raw)["data"]
            out[d["u"]] = (
                (to_unscaled(d["b"]), to_unscaled(d["B"])),
                (to_unscaled(d["a"]), to_unscaled(d["A"])),
            )
    return MappingProxyType(out)


@dataclass
class Verdict:
    moments: int = 0
    differences: list[tuple[int, Any, Any]] = field(default_factory=list)
    crossed: list[int] = field(default_factory=list)


def check_rows(rows: Iterable[Mapping[str, Any]], tickers: Mapping[int, Top]) -> Verdict:
    """Replay BOOK_DELTA rows (in update-id order, any order inside an event) and compare after every event
    whose last update id a bookTicker also published."""
    book, verdict = OrderBook(), Verdict()

    def check(update_id: int) -> None:
        if book.crossed():
            verdict.crossed.append(update_id)
        expected = tickers.get(update_id)
        if expected is not None:
            verdict.moments += 1
            found = (book.best_bid(), book.best_ask())
            if found != expected:
                verdict.differences.append((update_id, expected, found))

    current: int | None = None
    snapshot = False
    for row in rows:
        if current is not None and row["last_update_id"] != current and not snapshot:
            check(current)
        book.apply_row(row)
        current, snapshot = row["last_update_id"], bool(row["is_snapshot"])
    if current is not None and not snapshot:
        check(current)
    return verdict
