"""``book()`` from the stored ``book_snapshots`` rows and the deltas after them, merged in numpy.

A stored row lists the best N levels per side at one update id. The book at a later moment is the newest
row's levels with every level changed since replaced by its latest delta (sizes are absolute; 0 removes).
That is exact only for the prices the row *covers* (from the best to its last listed price, the whole
side when the row lists fewer than N): a level deeper than that and unchanged since is unknown. So per
side the answer is exact when at least ``depth`` live levels lie inside the covered range. When not (the
price moved past the row's levels), older rows are combined too (``tries``: the newest 1, 6, 60 rows):
their union covers more, at the price of reading the deltas after the oldest of them.

Which rows form a window comes from the client's :class:`k2.query.book_index.StoredRowIndex` (kept per
table snapshot). Per try this module then reads the window's stored lists (from the rows' own small row
groups, :data:`k2.lake.catalog.TABLE_LAYOUT`, through the index; a plain DuckDB scan when their files are
not known) and the raw delta rows after the oldest row (one plain scan, no join or window in SQL: planning
the single combined query this replaced cost ~10 ms a read on its own); the rest is numpy over unscaled
int64 prices and sizes, so decimals stay exact.

Hazards: a restart of the book (``is_snapshot`` delta rows) after the oldest row used makes the try
unusable (rows before a restart describe another book): the caller is told the restart's update id and
retries with the rows from it on. A window's delta read grows with its span (60 rows at the 10 s cadence:
ten minutes of deltas); a stored depth well above the depths read keeps those tries rare.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from k2.model.arrow import decimal_array, unscaled_from_decimal
from k2.query.book import LEVELS_SCHEMA, Book, RecentDepth, delta_source, run_book_sql

if TYPE_CHECKING:
    from k2.query.client import Client

_SIDES = ("BID", "ASK")


def _stored_levels(
    client: Client, snaps: Any, symbol: str, venue: str, low: int, high: int
) -> pa.Table | None:
    """The lists of the stored rows with ``low <= last_update_id <= high`` (None: the files are gone)."""
    found = delta_source(client, snaps, symbol, above=low - 1, through=high)
    if found is None:
        return None
    sql = (
        "SELECT last_update_id AS u, depth, bid_prices, bid_sizes, ask_prices, ask_sizes "  # noqa: S608
        f"FROM {found[0]} WHERE symbol = ? AND exchange = ? AND last_update_id >= ? AND last_update_id <= ?"
    )
    return run_book_sql(client, sql, [*found[1], symbol, venue, low, high])


def _deltas(
    client: Client,
    read: Any,
    symbol: str,
    venue: str,
    after: int,
    moment: datetime,
    update_id: int | None,
    recent: RecentDepth,
) -> pa.Table | None:
    """The raw delta rows with ``after < last_update_id`` and ``exchange_ts <= moment`` (None: no file can hold any)."""
    found = delta_source(client, read, symbol, above=after, through=update_id, until=moment, recent=recent)
    if found is None:
        return None
    through = "" if update_id is None else " AND last_update_id <= ?"
    sql = (
        "SELECT side = 'ASK' AS ask, price, size, last_update_id AS u, exchange_ts AS ts, is_snapshot "  # noqa: S608
        f"FROM {found[0]} WHERE symbol = ? AND exchange = ? AND last_update_id > ? AND exchange_ts <= ?{through}"
    )
    args = [*found[1], symbol, venue, after, moment, *([] if update_id is None else [update_id])]
    return run_book_sql(client, sql, args, recent.register)


def _flat(lists: pa.ChunkedArray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unscaled values, the update id of the row each came from) of a list column."""
    array = lists.combine_chunks()
    lengths = np.asarray(array.value_lengths().fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    return unscaled_from_decimal(array.flatten()), np.repeat(u, lengths)


def _edge(stored: pa.Table, side: str) -> int | None:
    """The unscaled price beyond which a level may be unknown on ``side`` (None: every level is known).

    A row lists every level from the best to its last price (the whole side when it lists fewer than its
    depth), so the rows together cover down to the lowest listed bid / up to the highest listed ask.
    """
    prices = stored[f"{side.lower()}_prices"].combine_chunks()
    lengths = np.asarray(prices.value_lengths().fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    if (lengths < stored["depth"].to_numpy()).any():
        return None
    ends = unscaled_from_decimal(prices.flatten())[np.cumsum(lengths) - 1]  # every row lists >= 1 level here
    return int(ends.min()) if side == "BID" else int(ends.max())


def _side(
    stored: pa.Table, deltas: pa.Table | None, side: str, depth: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """(prices, sizes) of the best ``depth`` live levels of ``side``, best first; None when not provably exact.

    Every known value of a level - a stored row listing it, a delta - is ordered by update id (a delta
    after a stored row at the same id); the last one is the level's size.
    """
    u = stored["u"].to_numpy()
    prices, ids = _flat(stored[f"{side.lower()}_prices"], u)
    sizes, _ = _flat(stored[f"{side.lower()}_sizes"], u)
    later = np.zeros(len(prices), dtype=np.int8)
    if deltas is not None and deltas.num_rows:
        mine = np.asarray(deltas["ask"].to_numpy(zero_copy_only=False), dtype=bool) == (side == "ASK")
        prices = np.concatenate([prices, unscaled_from_decimal(deltas["price"])[mine]])
        sizes = np.concatenate([sizes, unscaled_from_decimal(deltas["size"])[mine]])
        ids = np.concatenate([ids, deltas["u"].to_numpy()[mine]])
        later = np.concatenate([later, np.ones(int(mine.sum()), dtype=np.int8)])
    order = np.lexsort((later, ids, prices))  # by price, then update id, deltas last
    prices, sizes = prices[order], sizes[order]
    last = np.ones(len(prices), dtype=bool)
    last[:-1] = prices[1:] != prices[:-1]
    prices, sizes = prices[last], sizes[last]
    edge = _edge(stored, side)
    live = sizes > 0
    if edge is not None:
        live &= prices >= edge if side == "BID" else prices <= edge
    prices, sizes = prices[live], sizes[live]
    if edge is not None and len(prices) < depth:
        return None  # deeper untouched levels are unknown here
    best = np.argsort(-prices if side == "BID" else prices, kind="stable")[:depth]
    return prices[best], sizes[best]


def _levels_table(bids: tuple[np.ndarray, np.ndarray], asks: tuple[np.ndarray, np.ndarray]) -> pa.Table:
    """``LEVELS_SCHEMA`` rows (bids then asks, level 1 = best) from unscaled (prices, sizes) per side."""
    sides = (bids, asks)
    return pa.table(
        [
            pa.array(np.repeat(np.array(_SIDES, dtype=object), [len(s[0]) for s in sides]), pa.string()),
            pa.array(np.concatenate([np.arange(1, len(s[0]) + 1, dtype=np.int64) for s in sides])),
            decimal_array(pa.array(np.concatenate([s[0] for s in sides]), pa.int64())),
            decimal_array(pa.array(np.concatenate([s[1] for s in sides]), pa.int64())),
        ],
        schema=LEVELS_SCHEMA,
    )


def combine(
    client: Client,
    snaps: Any,
    read: Any,
    symbol: str,
    rows: list[dict[str, Any]],
    moment: datetime,
    depth: int,
    update_id: int | None,
    recent: RecentDepth,
) -> Book | int | None:
    """The book from ``rows`` (newest first) and the deltas after the oldest: a Book, the update id of a
    restart after the oldest row (retry from it), or None (not provably exact, or the rows are gone)."""
    oldest, newest, venue = rows[-1], rows[0], rows[0]["exchange"]
    stored = client._stored_rows.lists(snaps.table.io if snaps.table is not None else None, rows)
    if stored is None:  # the rows' files are not known: ask DuckDB
        stored = _stored_levels(client, snaps, symbol, venue, oldest["u"], newest["u"])
    if stored is None or stored.num_rows == 0:
        return None  # the rows just read are gone (a concurrent rewrite): read the deltas
    deltas = _deltas(client, read, symbol, venue, oldest["u"], moment, update_id, recent)
    if deltas is not None and deltas.num_rows:
        snapshot = deltas.filter(deltas["is_snapshot"])
        if snapshot.num_rows:
            return int(pa.compute.max(snapshot["u"]).as_py())
    bids, asks = (_side(stored, deltas, side, depth) for side in _SIDES)
    if bids is None or asks is None:
        return None
    levels = _levels_table(bids, asks)
    last_u, last_ts = newest["u"], newest["ts"]
    if deltas is not None and deltas.num_rows:
        last_u = max(last_u, int(pa.compute.max(deltas["u"]).as_py()))
        last_ts = max(last_ts, pa.compute.max(deltas["ts"]).as_py())
    return Book(symbol, venue, levels, last_u, last_ts, read.snapshot_id, "book_snapshots")
