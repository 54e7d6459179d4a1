"""The step loop of ``book_series`` (:mod:`k2.query.book_series`): the book at every step, then its metrics.

Two passes, so the loop over the steps does only what needs the book's state at that step:

1. :func:`replay`: per step, assign the step's changed levels (one numpy assignment per side, a step's
   rows in update-id order so the last row of a level wins), find the best levels (scanning a few slots
   from the previous best: :meth:`Side.walk`) and sum the depth within ``bps`` of mid over the whole side
   (exact integers). It records unscaled integers only: the walked levels' slots and sizes per step.
2. :func:`metrics_columns`: the metrics of every step from those records - the values
   :func:`k2.query.book.book_metrics` gives: its own ``Decimal`` expressions where they round (microprice,
   imbalance, fills, slippage), integers where they are exact (spread, mid rounded half-even, depths) -
   each column built once (types inferred from the values, as before).

The last update id and exchange time each step reflects, and the ``ts`` column, are computed for all steps
at once. Hazards: the metrics and the depth-within bounds (mid -+ mid * bps / 10,000) repeat
``book_metrics``' formulas instead of calling it (it cost ~40% of the loop): a change there must be made
here too - the equality tests against the plain replay, which use ``book_metrics``
(tests/book/test_book_series.py, test_book_series_edges.py), fail otherwise. A step's rows for one level
are assigned in one fancy assignment, relying on numpy keeping the last of repeated indices (tested).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import numpy as np
import pyarrow as pa

from k2.model.arrow import decimal_array
from k2.model.values import unscaled_to_decimal
from k2.query.book import fills

_WINDOW = 256
_MAX_WINDOW = 1 << 16


@dataclass
class Side:
    """One side's levels: ``prices`` (sorted, unscaled), the current ``sizes`` (0 = no level) and a ``hint``:
    no level is better than it (asks: none below it; bids: none above it), so the best are found by
    scanning a few slots from there instead of the whole side."""

    ask: bool
    prices: np.ndarray
    sizes: np.ndarray
    hint: int = 0
    width: int = _WINDOW  # the first window a walk scans: doubled when too few levels, halved when many

    def __post_init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.sizes[:] = 0
        self.hint = len(self.prices) if self.ask else -1

    def assign(self, slots: np.ndarray, sizes: np.ndarray) -> None:
        self.sizes[slots] = sizes
        added = slots[sizes > 0]
        if len(added):
            self.better(int(added.min()) if self.ask else int(added.max()))

    def better(self, slot: int) -> None:
        """A level was added at ``slot``: the hint moves to it when it is better."""
        self.hint = min(self.hint, slot) if self.ask else max(self.hint, slot)

    def walk(self, floor: int, quantity: int | None) -> np.ndarray:
        """Indices best first: the best ``floor`` levels, and as many as a market order of ``quantity`` walks."""
        n, width = len(self.sizes), self.width
        low, high = (
            (self.hint, min(n, self.hint + width))
            if self.ask
            else (max(0, self.hint + 1 - width), self.hint + 1)
        )
        if 0 <= low < high:  # the common case: one window from the previous best holds all that is needed
            chunk = self.sizes[low:high].nonzero()[0]
            if len(chunk) >= floor:
                if len(chunk) > 4 * floor and width > _WINDOW:  # far more than needed: narrower next time
                    self.width = width // 2
                chunk = (chunk if self.ask else chunk[::-1]) + low
                if quantity is None:
                    self.hint = int(chunk[0])
                    return chunk[:floor]
                total = np.cumsum(self.sizes[chunk])
                if total[-1] >= quantity:
                    self.hint = int(chunk[0])
                    return chunk[: max(floor, int(np.searchsorted(total, quantity, "left")) + 1)]
            elif high - low == width:  # too few levels in the window: start wider next time
                self.width = min(width * 2, _MAX_WINDOW)
        return self._walk_widening(floor, quantity)

    def _walk_widening(self, floor: int, quantity: int | None) -> np.ndarray:
        found: list[np.ndarray] = []
        count, total, width, n = 0, 0, self.width, len(self.sizes)
        pos = self.hint if self.ask else self.hint + 1  # asks scan [pos, pos+width), bids [pos-width, pos)
        while (count < floor or (quantity is not None and total < quantity)) and (
            pos < n if self.ask else pos > 0
        ):
            low, high = (pos, min(n, pos + width)) if self.ask else (max(0, pos - width), pos)
            chunk = np.flatnonzero(self.sizes[low:high]) + low
            if not self.ask:
                chunk = chunk[::-1]
            if len(chunk):
                found.append(chunk)
                count += len(chunk)
                if quantity is not None:
                    total += int(self.sizes[chunk].sum())
            pos, width = (high if self.ask else low), width * 2
        order = (found[0] if len(found) == 1 else np.concatenate(found)) if found else np.zeros(0, np.int64)
        if len(order):
            self.hint = int(order[0])
        if quantity is None or len(order) <= floor:
            return order[:floor] if quantity is None else order
        reach = int(np.searchsorted(np.cumsum(self.sizes[order]), quantity, "left")) + 1
        return order[: max(floor, reach)]

    def within(self, edge: int, prices: list[int]) -> int:
        """Total unscaled size of the levels priced at or better than ``edge`` (unscaled; ``prices`` is
        ``self.prices`` as a list, for :mod:`bisect`)."""
        if self.ask:
            return int(np.add.reduce(self.sizes[max(self.hint, 0) : bisect_right(prices, edge)]))
        return int(np.add.reduce(self.sizes[bisect_left(prices, edge) : self.hint + 1]))


@dataclass
class Walked:
    """What the loop records per step and side: the first ``floor`` walked levels' slots and sizes (slot -1 =
    none), how many were walked, and the whole walk when it went further (a market order's fill)."""

    steps: int
    floor: int
    slots: np.ndarray = field(init=False)
    sizes: np.ndarray = field(init=False)
    counts: np.ndarray = field(init=False)
    longer: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.slots = np.full((self.steps, self.floor), -1, dtype=np.int64)
        self.sizes = np.zeros((self.steps, self.floor), dtype=np.int64)
        self.counts = np.zeros(self.steps, dtype=np.int64)

    def put(self, step: int, order: np.ndarray, sizes: np.ndarray) -> None:
        n = len(order)
        if n > self.floor:
            self.longer[step] = (order, sizes)
            order, sizes, n = order[: self.floor], sizes[: self.floor], self.floor
        self.slots[step, :n] = order
        self.sizes[step, :n] = sizes
        self.counts[step] = n

    def top_columns(self, prices: np.ndarray, depth: int) -> tuple[pa.Array, pa.Array]:
        """The top ``depth`` (price, size) of every step as ``list<decimal128(18, 8)>`` columns."""
        counts = np.minimum(self.counts, depth)
        keep = np.arange(self.floor)[None, :] < counts[:, None]
        offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
        slots = self.slots[keep]
        return (
            pa.ListArray.from_arrays(offsets, decimal_array(pa.array(prices[slots]))),
            pa.ListArray.from_arrays(offsets, decimal_array(pa.array(self.sizes[keep]))),
        )


@dataclass
class Bounds:
    """Depth within ``bps`` of mid: the unscaled price edges, computed as :func:`k2.query.book.book_metrics`
    computes them (``mid -+ mid * bps / 10,000`` in ``Decimal``) - bids at or above the first, asks at or
    below the second."""

    bps: Decimal | int

    def edges(self, bid: int, ask: int) -> tuple[int, int]:
        mid = (unscaled_to_decimal(bid) + unscaled_to_decimal(ask)) / 2
        band = mid * Decimal(self.bps) / Decimal(10_000)
        low = int((mid - band).scaleb(8).to_integral_value(ROUND_CEILING))
        high = int((mid + band).scaleb(8).to_integral_value(ROUND_FLOOR))
        return low, high


def metrics_columns(
    walked: tuple[Walked, Walked],
    within: list[tuple[int, int]],
    prices: np.ndarray,
    levels: int,
    bps: Decimal | int,
    quantity: Decimal | None,
) -> dict[str, pa.Array]:
    """The metric columns of every step, from what :func:`replay` recorded (``within``: per step the bid
    and ask size within ``bps`` of mid, unscaled): the values :func:`k2.query.book.book_metrics` gives,
    by the same ``Decimal`` expressions where they round (microprice, imbalance, fills, slippage) and in
    integers where they are exact (spread, mid rounded half-even, depths). Column types are inferred from
    the values, as ``book_metrics``' rows were."""
    bid, ask = walked
    both = ((bid.counts > 0) & (ask.counts > 0)).tolist()
    best = [prices[np.maximum(side.slots[:, 0], 0)].tolist() for side in walked]
    sizes = [side.sizes.tolist() for side in walked]
    depths = within
    dec = unscaled_to_decimal
    q8, q6 = Decimal("0.00000001"), Decimal("0.000001")
    columns: dict[str, list[Any]] = {name: [] for name in _METRICS}
    nothing = dict.fromkeys(_METRICS)
    for step, ready in enumerate(both):
        if not ready:
            for name in _METRICS:
                columns[name].append(None)
            continue
        bid_price, ask_price = best[0][step], best[1][step]
        bid_sizes, ask_sizes = sizes[0][step], sizes[1][step]
        b, a, b_size, a_size = dec(bid_price), dec(ask_price), dec(bid_sizes[0]), dec(ask_sizes[0])
        total = bid_price + ask_price  # mid = total / 2, rounded half-even to 8 places as ``quantize`` does
        half = total // 2 + (total % 2 and (total // 2) % 2)
        columns["spread"].append(dec(ask_price - bid_price))
        columns["mid"].append(dec(half))
        columns["microprice"].append(((b * a_size + a * b_size) / (b_size + a_size)).quantize(q8))
        bid_volume, ask_volume = dec(sum(bid_sizes[:levels])), dec(sum(ask_sizes[:levels]))
        columns["imbalance"].append(((bid_volume - ask_volume) / (bid_volume + ask_volume)).quantize(q6))
        columns["bid_depth_bps"].append(dec(depths[step][0]))
        columns["ask_depth_bps"].append(dec(depths[step][1]))
        fills = nothing if quantity is None else _fills(walked, step, prices, (b + a) / 2, quantity)
        for name in _FILLS:
            columns[name].append(fills[name])
    return {name: pa.array(values) for name, values in columns.items()}


_FILLS = ("buy_fill_price", "buy_slippage_bps", "sell_fill_price", "sell_slippage_bps")
_METRICS = ("spread", "mid", "microprice", "imbalance", "bid_depth_bps", "ask_depth_bps", *_FILLS)


def _fills(
    walked: tuple[Walked, Walked], step: int, prices: np.ndarray, mid: Decimal, quantity: Decimal
) -> dict[str, Decimal | None]:
    """Average fill price and slippage of a market order of ``quantity`` per side, as ``book_metrics``."""
    asks, bids = _levels(walked[1], step, prices), _levels(walked[0], step, prices)
    return fills(asks, bids, mid, Decimal(quantity))


def _levels(walked: Walked, step: int, prices: np.ndarray) -> list[tuple[int, int]]:
    """Step ``step``'s walked levels of one side as (unscaled price, unscaled size), best first."""
    if step in walked.longer:
        order, sizes = walked.longer[step]
    else:
        n = int(walked.counts[step])
        order, sizes = walked.slots[step, :n], walked.sizes[step, :n]
    return list(zip(prices[order].tolist(), sizes.tolist(), strict=True))


Changes = tuple[np.ndarray, np.ndarray, np.ndarray]  # one side's changes: steps, slots, sizes (step order)


def replay(
    sides: list[tuple[Side, Changes]],
    restarts: np.ndarray,
    steps: int,
    floor: int,
    wanted: int | None,
    bps: Decimal | int,
    known: tuple[list[int], list[int]] | None = None,
) -> tuple[tuple[Walked, Walked], list[tuple[int, int]]] | None:
    """Step through the changes: per step, the walked levels of each side and the (bid, ask) size within
    ``bps`` of mid (unscaled; 0 when a side is empty). ``sides`` are (bids, asks), seeded; ``restarts``
    the steps that clear the book before their rows; ``wanted`` the unscaled quantity a fill walks.
    ``known`` (a start from stored rows, :mod:`k2.query.book_checkpoint`): per step, the lowest bid and
    the highest ask price known (``KNOWN_ALL`` bounds: the whole side); None as soon as a step's walks or
    depth band reach past them."""
    (bid, (_, bid_slots, bid_sizes)), (ask, (_, ask_slots, ask_sizes)) = sides
    (bid_starts, bid_added), (ask_starts, ask_added) = (
        _plan(bid, sides[0][1], steps),
        _plan(ask, sides[1][1], steps),
    )
    edges = band_edges(bps)
    grid = bid.prices.tolist()
    walked = (Walked(steps, floor), Walked(steps, floor))
    within: list[tuple[int, int]] = []
    restarted = restarts.tolist()
    for i in range(steps):  # hot: plain names, one numpy call where one will do
        if restarted[i]:
            bid.clear()
            ask.clear()
        low, high = bid_starts[i], bid_starts[i + 1]
        if high > low:
            bid.sizes[bid_slots[low:high]] = bid_sizes[low:high]
            bid.hint = max(bid.hint, bid_added[i])
        low, high = ask_starts[i], ask_starts[i + 1]
        if high > low:
            ask.sizes[ask_slots[low:high]] = ask_sizes[low:high]
            ask.hint = min(ask.hint, ask_added[i])
        bids, asks = bid.walk(floor, wanted), ask.walk(floor, wanted)
        walked[0].put(i, bids, bid.sizes[bids])
        walked[1].put(i, asks, ask.sizes[asks])
        if len(bids) and len(asks):
            low_edge, high_edge = edges(grid[int(bids[0])], grid[int(asks[0])])
            within.append((bid.within(low_edge, grid), ask.within(high_edge, grid)))
        else:
            low_edge, high_edge = KNOWN_ALL
            within.append((0, 0))
        if known is not None and not (
            _inside(bid, bids, grid, known[0][i], low_edge, floor, wanted)
            and _inside(ask, asks, grid, known[1][i], high_edge, floor, wanted)
        ):
            return None
    return walked, within


KNOWN_ALL = (-(2**62), 2**62)  # (lowest bid, highest ask) bounds meaning "the whole side is known"


def _inside(
    side: Side, walk: np.ndarray, grid: list[int], bound: int, band: int, floor: int, wanted: int | None
) -> bool:
    """Whether one side's walk and depth band at a step stay inside the known prices (``bound``)."""
    if bound == KNOWN_ALL[1 if side.ask else 0]:
        return True
    if len(walk) < floor or (wanted is not None and int(side.sizes[walk].sum()) < wanted):
        return False  # it ran out of known levels: unknown ones may lie beyond
    deepest = grid[int(walk[-1])]
    if side.ask:
        return deepest <= bound and band <= bound
    return deepest >= bound and band >= bound


def _plan(side: Side, changes: Changes, steps: int) -> tuple[list[int], list[int]]:
    """Per step: where its rows start in ``changes`` (and the next step's start), and the best slot its
    rows add a level at (a harmless sentinel when none: past the end for asks, -1 for bids)."""
    k, slots, sizes = changes
    starts = np.searchsorted(k, np.arange(steps + 1), "left")
    sentinel = len(side.prices) if side.ask else -1
    added = np.full(steps, sentinel, dtype=np.int64)
    busy = np.flatnonzero(starts[1:] > starts[:-1])
    if len(busy):
        values = np.where(sizes > 0, slots, sentinel)
        reduce = np.minimum if side.ask else np.maximum
        added[busy] = reduce.reduceat(values, starts[busy])
    return starts.tolist(), added.tolist()


def band_edges(bps: Decimal | int) -> Any:
    """The unscaled (bid, ask) price edges of the depth within ``bps`` of mid, as a function of the best
    bid and ask. A whole ``bps`` of at most 10**6 in integers: ``Decimal``'s 28 digits hold
    ``mid * bps`` exactly there (prices have at most 18), so the integer floor/ceil is the same number."""
    if isinstance(bps, int) and not isinstance(bps, bool) and 0 <= bps <= 10**6:
        below, above = 10_000 - bps, 10_000 + bps

        def exact(bid: int, ask: int) -> tuple[int, int]:
            total = bid + ask
            return -(-total * below // 20_000), total * above // 20_000

        return exact
    return Bounds(bps).edges
