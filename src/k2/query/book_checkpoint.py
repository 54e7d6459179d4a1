"""``book_series`` started from the stored ``book_snapshots`` rows instead of every delta since the restart.

The book at ``start`` was the latest size of every level changed since the book's restart: one DuckDB
aggregation over all those deltas. A live feed restarts the book rarely, so that read grows with the time
since: on the 100M-delta benchmark table (12 h chains) 1.75 s of a 2.95 s CPU call, 8 hours after the
restart. Here it starts instead from the newest stored row at or before ``start`` (the top N levels per
side, written every few seconds) plus the deltas after it: seconds of deltas, not hours.

A stored row knows only its top N levels: on each side, the prices from its best level to its deepest
listed one (its *edge*; the whole side when it lists fewer than N). Deeper levels are unknown, so the
answer is exact only while every step's walks stay inside what is known. What is known only grows: a
level inside a known range stays known (every change to it is a delta), and each later stored row adds
its own range (:func:`correction_rows` turns it into change rows: its levels beyond what was known, and
size 0 for the grid's prices there that it does not list). After a restart inside the range the book is
the restart's rows, known as the full path knows them. The replay checks every step
(:func:`k2.query.book_steps.replay` with ``known``): the walked levels (top N, a fill's walk) and the
depth-within-bps band must lie inside the known range, and a walk that ran out of levels must have run
out of a wholly known side; the first step that fails stops it. When any step fails, the
caller computes the series again from the full aggregation - the answer never depends on this path.

Hazards: the stored rows must be consistent with the deltas (K2 writes them from the deltas:
:mod:`k2.lake.book_snapshots`); a stored row of a book restarted later than ``restart`` is not used. The
later rows are taken at most one per 10 s (``_CORRECTION_SPACING_US``, the writer's default cadence): a
book whose walks or depth band reach past the stored depth (a crossed or very thin book; a ``bps`` band
wider than the stored levels) makes the check fail, and the series is computed the slow way - about the
stored attempt's cost more than before (a band already too wide at ``start`` is caught before it,
:func:`band_fits`). ``book_snapshot_depth`` (500 levels a side by default) sets how far the stored rows reach.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from k2.model.arrow import unscaled_from_decimal
from k2.model.values import datetime_to_micros
from k2.query.book import delta_source
from k2.query.book_steps import KNOWN_ALL, band_edges
from k2.query.book_stored import _stored_levels

if TYPE_CHECKING:
    from k2.query.client import AsOf, Client

_CORRECTION_SPACING_US = 10_000_000
_SEED_AFTER_SQL = (
    "SELECT side = 'ASK' AS ask, price, arg_max(size, last_update_id) AS size, max(last_update_id) AS u, "
    "arg_max(epoch_us(exchange_ts), last_update_id) AS ts, bool_or(is_snapshot) AS restarted "
    "FROM {source} WHERE symbol = ? AND exchange = ? AND last_update_id > ? AND exchange_ts <= ? GROUP BY side, price"
)
_LATER_SQL = (
    "SELECT last_update_id AS u, epoch_us(exchange_ts) AS ts, depth, bid_prices, bid_sizes, ask_prices, ask_sizes "
    "FROM {source} WHERE symbol = ? AND exchange = ? AND exchange_ts > ? AND exchange_ts <= ? AND last_update_id > ? "
    "QUALIFY row_number() OVER (PARTITION BY epoch_us(exchange_ts) // ? ORDER BY last_update_id) = 1 "
    "ORDER BY last_update_id"
)
_LOW, _HIGH = KNOWN_ALL  # "the whole side is known"


@dataclass
class Stored:
    """One stored row's levels (unscaled) and the edges of what it knows per side."""

    u: int
    ts: int
    bids: tuple[np.ndarray, np.ndarray]
    asks: tuple[np.ndarray, np.ndarray]
    bid_edge: int  # bids at or above it are known (_LOW: the whole side)
    ask_edge: int  # asks at or below it are known (_HIGH: the whole side)


@dataclass
class Checkpoint:
    """Where a series starts: the levels at ``start`` and what they know, and the later stored rows."""

    seed: dict[str, np.ndarray]  # ask, price, size, u, ts: the book at start (sizes > 0 and 0 alike)
    first: Stored
    later: list[Stored]


def _stored_from_table(table: pa.Table) -> list[Stored]:
    """Stored rows from a table of (u, ts, depth, bid/ask price/size lists), vectorised per column."""
    out = []
    columns = {}
    for name in ("bid_prices", "bid_sizes", "ask_prices", "ask_sizes"):
        array = table[name].combine_chunks()
        lengths = np.asarray(array.value_lengths().fill_null(0).to_numpy(zero_copy_only=False), np.int64)
        values = unscaled_from_decimal(array.flatten()) if len(array.flatten()) else np.zeros(0, np.int64)
        columns[name] = np.split(values, np.cumsum(lengths)[:-1]) if len(lengths) else []
    us = table["u"].to_numpy()
    ts = table["ts"].to_numpy()
    depths = table["depth"].to_numpy()
    for i in range(table.num_rows):
        bp, bs, ap, asz = (columns[n][i] for n in ("bid_prices", "bid_sizes", "ask_prices", "ask_sizes"))
        depth = int(depths[i])
        bid_edge = int(bp.min()) if len(bp) >= depth and len(bp) else _LOW
        ask_edge = int(ap.max()) if len(ap) >= depth and len(ap) else _HIGH
        out.append(Stored(int(us[i]), int(ts[i]), (bp, bs), (ap, asz), bid_edge, ask_edge))
    return out


def checkpoint(
    client: Client,
    read: Any,
    symbol: str,
    venue: str,
    restart: int,
    start: datetime,
    last: datetime,
    as_of: AsOf | None,
) -> Checkpoint | None:
    """The start from stored rows, or None when there is none to use (no stored row of this book at or
    before ``start``, a restart between it and ``start``, or its lists cannot be read)."""
    snaps = client._resolve("book_snapshots", as_of)
    if snaps.snapshot_id is None:
        return None
    newest = client._stored_rows.newest(client, snaps, symbol, start, venue, None, 1)
    if not newest or newest[0]["u"] < restart:
        return None
    row = newest[0]
    lists = client._stored_rows.lists(snaps.table.io if snaps.table is not None else None, newest)
    if lists is None:
        lists = _stored_levels(client, snaps, symbol, venue, row["u"], row["u"])
    if lists is None or lists.num_rows != 1:
        return None
    first = _stored_table_row(lists, row)
    seed = _seed_after(client, read, symbol, venue, first, start)
    if seed is None:
        return None
    return Checkpoint(seed, first, _later(client, snaps, symbol, venue, first.u, start, last))


def _stored_table_row(lists: pa.Table, row: dict[str, Any]) -> Stored:
    ts = datetime_to_micros(row["ts"])
    table = pa.table(
        {
            "u": pa.array([row["u"]], pa.int64()),
            "ts": pa.array([ts], pa.int64()),
            "depth": pa.array([row["depth"]], pa.int64()),
            **{name: lists[name] for name in ("bid_prices", "bid_sizes", "ask_prices", "ask_sizes")},
        }
    )
    return _stored_from_table(table)[0]


def _seed_after(
    client: Client, read: Any, symbol: str, venue: str, first: Stored, start: datetime
) -> dict[str, np.ndarray] | None:
    """The stored row's levels with every level changed after it (through ``start``) at its latest size;
    None when the book restarted in between (the full path handles that)."""
    found = delta_source(client, read, symbol, above=first.u, until=start)
    changed = None
    if found is not None:
        changed = client._execute(
            _SEED_AFTER_SQL.format(source=found[0]),
            [*found[1], symbol, venue, first.u, start],
            query="book_series",
        )
        if changed.num_rows and bool(pa.compute.any(changed["restarted"]).as_py()):
            return None
    parts = {
        "ask": [np.zeros(len(first.bids[0]), bool), np.ones(len(first.asks[0]), bool)],
        "price": [first.bids[0], first.asks[0]],
        "size": [first.bids[1], first.asks[1]],
        "u": [np.full(len(first.bids[0]) + len(first.asks[0]), first.u, np.int64)],
        "ts": [np.full(len(first.bids[0]) + len(first.asks[0]), first.ts, np.int64)],
    }
    stored = {name: np.concatenate(values) for name, values in parts.items()}
    if changed is None or not changed.num_rows:
        return stored
    later = {
        "ask": np.asarray(changed["ask"].to_numpy(zero_copy_only=False), bool),
        "price": unscaled_from_decimal(changed["price"]),
        "size": unscaled_from_decimal(changed["size"]),
        "u": np.asarray(changed["u"].to_numpy(zero_copy_only=False), np.int64),
        "ts": np.asarray(changed["ts"].to_numpy(zero_copy_only=False), np.int64),
    }
    # A changed level replaces the stored one: keep the stored levels no change names.
    keep = ~np.isin(_level_key(stored), _level_key(later))
    return {name: np.concatenate([stored[name][keep], later[name]]) for name in stored}


def band_fits(cp: Checkpoint, bps: Decimal | int) -> bool:
    """Whether the depth-within-``bps`` band at ``start`` lies inside the first stored row's levels: when
    not, the replay's first step already fails its check, so the caller skips this path at once."""

    live = cp.seed["size"] > 0
    bids, asks = cp.seed["price"][live & ~cp.seed["ask"]], cp.seed["price"][live & cp.seed["ask"]]
    if not len(bids) or not len(asks):
        return False
    low, high = band_edges(bps)(int(bids.max()), int(asks.min()))
    return bool(low >= cp.first.bid_edge and high <= cp.first.ask_edge)


def _level_key(levels: dict[str, np.ndarray]) -> np.ndarray:
    """One int64 per (side, price): unscaled prices of decimal(18, 8) are below 10**18, so 2p + side fits."""
    return np.asarray(levels["price"] * 2 + levels["ask"], dtype=np.int64)


def _later(
    client: Client, snaps: Any, symbol: str, venue: str, after: int, start: datetime, last: datetime
) -> list[Stored]:
    """Stored rows inside the range, at most one per ``_CORRECTION_SPACING_US``, in update-id order."""
    found = delta_source(client, snaps, symbol, above=after, until=last)
    if found is None:
        return []
    table = client._execute(
        _LATER_SQL.format(source=found[0]),
        [*found[1], symbol, venue, start, last, after, _CORRECTION_SPACING_US],
        query="book_series",
    )
    return _stored_from_table(table) if table.num_rows else []


def correction_rows(
    cp: Checkpoint, grid: np.ndarray, start_us: int, step_us: int, steps: int
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The later stored rows as change rows over the price ``grid`` (their levels beyond what was known,
    and size 0 for the grid's prices there they do not list), and per step the known edges (bids, asks)."""
    bid_edges = np.full(steps, cp.first.bid_edge, dtype=np.int64)
    ask_edges = np.full(steps, cp.first.ask_edge, dtype=np.int64)
    bid_known, ask_known = cp.first.bid_edge, cp.first.ask_edge
    parts: list[tuple[bool, np.ndarray, np.ndarray, int, int]] = []
    for row in cp.later:
        k = max(0, (row.ts - start_us + step_us - 1) // step_us)
        if row.bid_edge < bid_known:  # new bid range: [row.bid_edge, bid_known)
            parts.append(
                (False, *_new_range(grid, row.bids, row.bid_edge, bid_known, ask=False), row.u, row.ts)
            )
            bid_known = row.bid_edge
            bid_edges[k:] = np.minimum(bid_edges[k:], bid_known)
        if row.ask_edge > ask_known:
            parts.append(
                (True, *_new_range(grid, row.asks, ask_known, row.ask_edge, ask=True), row.u, row.ts)
            )
            ask_known = row.ask_edge
            ask_edges[k:] = np.maximum(ask_edges[k:], ask_known)
    if not parts:
        empty = np.zeros(0, np.int64)
        return (
            {"ask": np.zeros(0, bool), "slot": empty, "size": empty, "u": empty, "ts": empty},
            bid_edges,
            ask_edges,
        )
    return (
        {
            "ask": np.concatenate([np.full(len(p[1]), p[0]) for p in parts]).astype(bool),
            "slot": np.concatenate([p[1] for p in parts]),
            "size": np.concatenate([p[2] for p in parts]),
            "u": np.concatenate([np.full(len(p[1]), p[3], np.int64) for p in parts]),
            "ts": np.concatenate([np.full(len(p[1]), p[4], np.int64) for p in parts]),
        },
        bid_edges,
        ask_edges,
    )


def _new_range(
    grid: np.ndarray, side: tuple[np.ndarray, np.ndarray], low: int, high: int, *, ask: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(slots, sizes) setting the grid's prices in the newly known range: bids ``[low, high)``, asks
    ``(low, high]``; listed levels get their size, every other grid price there 0."""
    if ask:
        first, stop = np.searchsorted(grid, low, "right"), np.searchsorted(grid, high, "right")
    else:
        first, stop = np.searchsorted(grid, low, "left"), np.searchsorted(grid, high, "left")
    slots = np.arange(first, stop, dtype=np.int64)
    sizes = np.zeros(len(slots), dtype=np.int64)
    prices, listed = side
    inside = (prices > low) & (prices <= high) if ask else (prices >= low) & (prices < high)
    where = np.searchsorted(grid, prices[inside]) - first
    sizes[where] = listed[inside]
    return slots, sizes
