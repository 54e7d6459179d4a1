"""``book_series``: the book and its metrics at every step of a range, in one pass over the deltas.

Same answer as calling :func:`k2.query.book.book` at each step (rows with ``exchange_ts <=`` the step,
from the latest restarting snapshot on; a level's size is the one of its largest update id), computed as:

1. the restart at or before ``start`` (``R``) and the **whole** book at ``start``: one DuckDB aggregation
   (latest size per level) over the deltas from ``R`` through ``start``;
2. the changes inside the range read once, in file order (no ORDER BY: DuckDB sorting the hour's rows
   nearly doubled the read's CPU), stably sorted by update id in numpy only when they are not
   already in that order (K2 writes them nearly so: a cheap sort), then reduced with numpy: each row tagged
   with its step (the first step at or after its exchange time), the rows a restart in the same step
   supersedes dropped (the book is cleared at that step), and only the last row of each (step, side,
   price) kept (sizes are absolute);
3. a replay over numpy arrays (one price grid, built by hashing: :func:`_price_grid`; a size array per
   side): each step assigns its changed levels, then reads the top ``depth`` levels (scanning a few slots
   from the previous best) and the metrics (:func:`k2.query.book.book_metrics`, fed only the levels it
   walks; depth within ``bps`` of mid summed exactly over the whole side in integers).

Both queries read only the planned data files that can hold the rows (:mod:`k2.query.book_files`).

Hazards: step 1 costs what the deltas since the book's restart cost (a live feed restarts at every
reconnect; a long-lived book makes it grow) - the stored ``book_snapshots`` hold only the top N, too
little for the metrics' depth and fill walks, so they are not used here. Memory: the range's rows as a few
numpy columns (~50 bytes a row before the reduction) and two int64 per distinct price.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from k2.model.arrow import decimal_array, unscaled_from_decimal
from k2.model.values import datetime_to_micros, micros_to_datetime, unscaled_to_decimal
from k2.query.book import _no_snapshot, _source, _start, book_metrics

if TYPE_CHECKING:
    from k2.query.client import AsOf, Client

_SEED_SQL = (
    "SELECT side = 'ASK' AS ask, price, arg_max(size, last_update_id) AS size, max(last_update_id) AS u, "
    "arg_max(epoch_us(exchange_ts), last_update_id) AS ts FROM {source} WHERE symbol = ? AND exchange = ? "
    "AND last_update_id >= ? AND (last_update_id > ? OR is_snapshot) AND exchange_ts <= ? GROUP BY side, price"
)
_CHANGES_SQL = (
    "SELECT side = 'ASK' AS ask, price, size, last_update_id AS u, epoch_us(exchange_ts) AS ts, is_snapshot "
    "FROM {source} WHERE symbol = ? AND exchange = ? AND exchange_ts > ? AND exchange_ts <= ? AND last_update_id > ?"
)  # no ORDER BY: :func:`_by_step` sorts the rows (stably) only when they are out of update-id order


_WINDOW = 256
_MAX_RUNS = 256  # sorted runs concatenated instead of sorted (:func:`_in_update_order`)


@dataclass
class _Side:
    """One side's levels: ``prices`` (sorted, unscaled), the current ``sizes`` (0 = no level) and a ``hint``:
    no level is better than it (asks: none below it; bids: none above it), so the best are found by
    scanning a few slots from there instead of the whole side."""

    ask: bool
    prices: np.ndarray
    sizes: np.ndarray
    hint: int = 0

    def __post_init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.sizes[:] = 0
        self.hint = len(self.prices) if self.ask else -1

    def assign(self, slots: np.ndarray, sizes: np.ndarray) -> None:
        self.sizes[slots] = sizes
        added = slots[sizes > 0]
        if len(added):
            self.hint = min(self.hint, int(added.min())) if self.ask else max(self.hint, int(added.max()))

    def walk(self, floor: int, quantity: int | None) -> np.ndarray:
        """Indices best first: the best ``floor`` levels, and as many as a market order of ``quantity`` walks."""
        found: list[np.ndarray] = []
        count, total, width, n = 0, 0, _WINDOW, len(self.sizes)
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

    def within(self, bound: Decimal) -> Decimal:
        """Total size of the levels priced at or better than ``bound`` (a scale-8 decimal)."""
        if self.ask:
            edge = int(bound.scaleb(8).to_integral_value(ROUND_FLOOR))
            total = self.sizes[max(self.hint, 0) : np.searchsorted(self.prices, edge, "right")].sum()
        else:
            edge = int(bound.scaleb(8).to_integral_value(ROUND_CEILING))
            total = self.sizes[np.searchsorted(self.prices, edge, "left") : self.hint + 1].sum()
        return unscaled_to_decimal(int(total))


def _columns(table: pa.Table) -> dict[str, np.ndarray]:
    out = {
        name: np.asarray(table[name].to_numpy(zero_copy_only=False), dtype=bool)
        for name in ("ask", "is_snapshot")
        if name in table.column_names
    }
    out["price"], out["size"] = unscaled_from_decimal(table["price"]), unscaled_from_decimal(table["size"])
    for name in ("u", "ts"):
        out[name] = np.asarray(table[name].to_numpy(zero_copy_only=False), dtype=np.int64)
    return out


def _price_grid(prices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct prices, sorted, and each row's slot in them: ``np.unique(prices, return_inverse=True)``
    by hashing (pandas' factorize) and sorting only the distinct prices - a few times faster on the
    million-row hours, which hold a few tens of thousands of prices.

    >>> _price_grid(np.array([30, 10, 30, 20]))
    (array([10, 20, 30]), array([2, 0, 2, 1]))
    """
    codes, distinct = pd.factorize(prices, sort=False)
    order = np.argsort(distinct)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return np.asarray(distinct[order], dtype=np.int64), rank[codes]


def _in_update_order(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``rows`` stably sorted by update id. The files hold sorted runs (one per file or row group, in any
    order): when the runs do not overlap, concatenating them ordered by their first id is that sort, a
    few block copies instead of an argsort and a gather of every column (~0.25 s on an hour's rows)."""
    u = rows["u"]
    breaks = np.flatnonzero(u[1:] < u[:-1]) + 1
    if not len(breaks):
        return rows
    if len(breaks) <= _MAX_RUNS:
        edges = [0, *breaks.tolist(), len(u)]
        runs = sorted(zip(edges[:-1], edges[1:], strict=True), key=lambda run: (int(u[run[0]]), run[0]))
        # Concatenation equals the stable sort when each run ends below the next one's first id (or at
        # it, when the next run also comes later in the files).
        if all(
            u[a[1] - 1] < u[b[0]] or (u[a[1] - 1] == u[b[0]] and a[0] < b[0])
            for a, b in zip(runs, runs[1:], strict=False)
        ):
            return {name: np.concatenate([values[a:b] for a, b in runs]) for name, values in rows.items()}
    order = np.argsort(u, kind="stable")
    return {name: values[order] for name, values in rows.items()}


def _by_step(
    rows: dict[str, np.ndarray], start_us: int, step_us: int, steps: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The changes in (step, update id) order, each row tagged with its step ``k`` (the first step whose
    moment is at or after its exchange time), without the rows a restart in the same step supersedes.
    Also: which steps restart the book. A level changed several times in a step keeps all its rows: the
    replay assigns them in id order, so the last one wins (numpy assigns repeated indices in order)."""
    rows = _in_update_order(rows)
    k = (rows["ts"] - start_us + step_us - 1) // step_us
    if np.any(k[1:] < k[:-1]):  # exchange time not monotonic in update id: group by step, id order inside
        order = np.argsort(k, kind="stable")
        rows, k = {name: values[order] for name, values in rows.items()}, k[order]
    snapshot = rows["is_snapshot"]
    restart = np.full(steps + 1, -1, dtype=np.int64)  # per step: the update id of its last restart
    if snapshot.any():
        np.maximum.at(restart, k[snapshot], rows["u"][snapshot])
        cut = restart[k]
        keep = (cut < 0) | (rows["u"] > cut) | (snapshot & (rows["u"] == cut))
        out = {name: rows[name][keep] for name in ("ask", "slot", "size", "u", "ts")}
        out["k"] = k[keep]
    else:
        out = {name: rows[name] for name in ("ask", "slot", "size", "u", "ts")}
        out["k"] = k
    return out, restart >= 0


def _sides(
    prices: np.ndarray, seed: dict[str, np.ndarray], changes: dict[str, np.ndarray]
) -> list[tuple[_Side, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Per side (bids, asks): its sizes over the price slots, seeded, and the steps, slots and sizes of its
    changes."""
    out = []
    for ask in (False, True):
        mine, changed = seed["ask"] == ask, changes["ask"] == ask
        side = _Side(ask, prices, np.zeros(len(prices), dtype=np.int64))
        side.assign(seed["slot"][mine], seed["size"][mine])
        out.append((side, (changes["k"][changed], changes["slot"][changed], changes["size"][changed])))
    return out


def series_table(
    client: Client,
    symbol: str,
    start: datetime,
    steps: int,
    step: timedelta,
    depth: int,
    *,
    exchange: str | None,
    as_of: AsOf | None,
    metrics_levels: int,
    bps: Decimal | int,
    quantity: Decimal | None,
) -> pa.Table:
    """The rows of :func:`k2.query.book.book_series` (``steps`` steps from ``start``)."""
    read = client._resolve("book_deltas", as_of)
    last = start + step * max(steps - 1, 0)
    found = _source(client, read, symbol, until=start)
    if found is None:
        raise _no_snapshot(symbol, exchange, start, None)
    venue, restart = _start(client, found[0], found[1], symbol, exchange, start, None)
    seed_from = _source(client, read, symbol, above=restart - 1, until=start)
    assert seed_from is not None  # it holds the restart
    seed = client._execute(
        _SEED_SQL.format(source=seed_from[0]),
        [*seed_from[1], symbol, venue, restart, restart, start],
        query="book_series",
    )
    changes_from = _source(client, read, symbol, above=restart, until=last)
    seeded, changes, stepped = _columns(seed), None, None
    if changes_from is not None and steps > 1:
        table = client._execute(
            _CHANGES_SQL.format(source=changes_from[0]),
            [*changes_from[1], symbol, venue, start, last, restart],
            query="book_series",
        )
        changes = _columns(table)
    # One grid of price slots for both sides: every price the seed or the changes name.
    n = len(seeded["price"])
    both = seeded["price"] if changes is None else np.concatenate([seeded["price"], changes["price"]])
    prices, slots = _price_grid(both)
    seeded["slot"] = slots[:n]
    if changes is not None:
        changes["slot"] = slots[n:]
        step_us = int(step / timedelta(microseconds=1))
        stepped = _by_step(changes, datetime_to_micros(start), step_us, steps)
    metrics = _Metrics(depth, metrics_levels, bps, quantity)
    return _replay(venue, prices, seeded, stepped, start, steps, step, depth, metrics)


def _replay(
    venue: str,
    prices: np.ndarray,
    seed: dict[str, np.ndarray],
    stepped: tuple[dict[str, np.ndarray], np.ndarray] | None,
    start: datetime,
    steps: int,
    step: timedelta,
    depth: int,
    metrics: _Metrics,
) -> pa.Table:
    """Step through the changes (from :func:`_by_step`) and collect the rows."""
    if stepped is None:
        empty = np.zeros(0, dtype=np.int64)
        changes = {
            "k": empty,
            "u": empty,
            "ts": empty,
            "slot": empty,
            "size": empty,
            "ask": np.zeros(0, bool),
        }
        restarts = np.zeros(steps + 1, dtype=bool)
    else:
        changes, restarts = stepped
    sides = _sides(prices, seed, changes)
    # Python lists, not numpy arrays, for what the loop indexes one element at a time (~5x cheaper each).
    bounds = np.searchsorted(changes["k"], np.arange(steps + 1), "left").tolist()
    side_bounds = [np.searchsorted(c[0], np.arange(steps + 1), "left").tolist() for _, c in sides]
    restarted = restarts.tolist()
    last_u, last_ts = (None, None)
    if len(seed["u"]):
        top = int(np.argmax(seed["u"]))
        last_u, last_ts = int(seed["u"][top]), int(seed["ts"][top])
    tops = _Tops(steps, depth)
    rows = []
    for i in range(steps):
        a, b = bounds[i], bounds[i + 1]
        if b > a:
            for n, (side, c) in enumerate(sides):
                if restarted[i]:
                    side.clear()
                low, high = side_bounds[n][i], side_bounds[n][i + 1]
                side.assign(c[1][low:high], c[2][low:high])
            last_u, last_ts = int(changes["u"][b - 1]), int(changes["ts"][b - 1])
        row: dict[str, Any] = {
            "ts": start + step * i,
            "exchange": venue,
            "last_update_id": last_u,
            "exchange_ts": None if last_ts is None else micros_to_datetime(last_ts),
        }
        row.update(metrics.row(sides[0][0], sides[1][0], tops, i))
        rows.append(row)
    if not rows:
        return pa.table({"ts": pa.array([], pa.timestamp("us", tz="UTC"))})
    table = pa.Table.from_pylist(rows)
    for n, name in enumerate(("bid_prices", "bid_sizes", "ask_prices", "ask_sizes")):
        table = table.add_column(4 + n, name, tops.column(n))
    return table


class _Tops:
    """The top ``depth`` (price, size) per side of every step, kept as unscaled ints, turned into
    ``list<decimal128(18, 8)>`` columns at the end (no Decimal per level)."""

    def __init__(self, steps: int, depth: int) -> None:
        self.values = np.zeros(
            (4, steps, depth), dtype=np.int64
        )  # bid prices, bid sizes, ask prices, ask sizes
        self.counts = np.zeros((2, steps), dtype=np.int64)

    def put(self, step: int, ask: bool, side: _Side, order: np.ndarray) -> None:
        top = order[: self.values.shape[2]]
        self.values[2 * ask, step, : len(top)] = side.prices[top]
        self.values[2 * ask + 1, step, : len(top)] = side.sizes[top]
        self.counts[int(ask), step] = len(top)

    def column(self, n: int) -> pa.Array:
        counts = self.counts[n // 2]
        keep = np.arange(self.values.shape[2])[None, :] < counts[:, None]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), decimal_array(pa.array(self.values[n][keep])))


@dataclass
class _Metrics:
    """Per-step metrics (:func:`k2.query.book.book_metrics`) fed the levels they use, plus the tops."""

    depth: int
    levels: int
    bps: Decimal | int
    quantity: Decimal | None

    def __post_init__(self) -> None:
        # The smallest unscaled total covering ``quantity`` (a walk needs levels summing to at least it).
        self.wanted = None
        if self.quantity is not None:
            self.wanted = int(Decimal(self.quantity).scaleb(8).to_integral_value(ROUND_CEILING))

    def row(self, bids: _Side, asks: _Side, tops: _Tops, step: int) -> dict[str, Any]:
        floor = max(self.depth, self.levels)
        levels = []
        for side in (bids, asks):
            order = side.walk(floor, self.wanted)
            tops.put(step, side.ask, side, order)
            levels.append(list(zip(side.prices[order].tolist(), side.sizes[order].tolist(), strict=True)))
        return book_metrics(
            levels[0],
            levels[1],
            self.levels,
            self.bps,
            self.quantity,
            depth_within=lambda low, high: (bids.within(low), asks.within(high)),
        )
