"""``book_series``: the book and its metrics at every step of a range, in one pass over the deltas.

Same answer as calling :func:`k2.query.book.book` at each step (rows with ``exchange_ts <=`` the step,
from the latest restarting snapshot on; a level's size is the one of its largest update id), computed as:

1. the restart at or before ``start`` (``R``) and the **whole** book at ``start``: one DuckDB aggregation
   (latest size per level) over the deltas from ``R`` through ``start``;
2. the changes inside the range read once, in file order (no ORDER BY: DuckDB sorting the hour's rows
   nearly doubled the read's CPU), put in update-id order in numpy only when they are not already
   (:func:`_in_update_order`: the files' sorted runs concatenated when they do not overlap, else a stable
   sort), each row tagged with its step (the first step at or after its exchange time), and the rows a
   restart in the same step supersedes dropped (the book is cleared at that step). A level changed several
   times in one step keeps all its rows: they are assigned in id order and the last one wins;
3. a replay over numpy arrays (one price grid, built by hashing: :func:`_price_grid`; a size array per
   side) in :mod:`k2.query.book_steps`: the step loop assigns each step's levels and records the walked
   top levels and the depth within ``bps`` (integers only); the metrics of all steps are computed after it
   with the same ``Decimal`` arithmetic as :func:`k2.query.book.book_metrics`.

Both queries read only the planned data files that can hold the rows (:mod:`k2.query.book_files`).

Step 1 is first tried from the stored ``book_snapshots`` rows (:mod:`k2.query.book_checkpoint`: the newest
row at or before ``start`` and the deltas after it, the later rows extending what is known, every step
checked to lie inside it); only when a step is not provably exact is the full aggregation run.

Hazards: the full aggregation costs what the deltas since the book's restart cost (a live feed restarts at
every reconnect; a long-lived book makes it grow). Memory: the range's rows as a few
numpy columns (~40 bytes a row) and two int64 per distinct price.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from k2.model.arrow import unscaled_from_decimal
from k2.model.values import datetime_to_micros
from k2.query.book import delta_source, last_restart, no_snapshot_error
from k2.query.book_checkpoint import Checkpoint, band_fits, checkpoint, correction_rows
from k2.query.book_steps import KNOWN_ALL, Changes, Side, metrics_columns, replay

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


_MAX_RUNS = 256  # sorted runs concatenated instead of sorted (:func:`_in_update_order`)


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
) -> list[tuple[Side, Changes]]:
    """Per side (bids, asks): its sizes over the price slots, seeded, and the steps, slots and sizes of its
    changes."""
    out = []
    for ask in (False, True):
        mine, changed = seed["ask"] == ask, changes["ask"] == ask
        side = Side(ask, prices, np.zeros(len(prices), dtype=np.int64))
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
    """The rows of :func:`k2.query.book.book_series` (``steps`` steps from ``start``): started from the stored
    ``book_snapshots`` rows when they provably give the same answer (:mod:`k2.query.book_checkpoint`), else
    from every delta since the book's restart."""
    read = client._resolve("book_deltas", as_of)
    last = start + step * max(steps - 1, 0)
    found = delta_source(client, read, symbol, until=start)
    if found is None:
        raise no_snapshot_error(symbol, exchange, start, None)
    venue, restart = last_restart(client, found[0], found[1], symbol, exchange, start, None)
    changes = None
    changes_from = delta_source(client, read, symbol, above=restart, until=last)
    if changes_from is not None and steps > 1:
        table = client._execute(
            _CHANGES_SQL.format(source=changes_from[0]),
            [*changes_from[1], symbol, venue, start, last, restart],
            query="book_series",
        )
        changes = _columns(table)
    frame = _Frame(venue, start, steps, step, depth, _Metrics(depth, metrics_levels, bps, quantity))
    stored = checkpoint(client, read, symbol, venue, restart, start, last, as_of)
    if stored is not None and band_fits(stored, bps):
        answer = _series(frame, stored.seed, changes, stored)
        if answer is not None:
            client._book_series_starts["stored"] += 1
            return answer
    seed_from = delta_source(client, read, symbol, above=restart - 1, until=start)
    assert seed_from is not None  # it holds the restart
    seed = client._execute(
        _SEED_SQL.format(source=seed_from[0]),
        [*seed_from[1], symbol, venue, restart, restart, start],
        query="book_series",
    )
    answer = _series(frame, _columns(seed), changes, None)
    assert answer is not None  # only a stored start can fail its check
    client._book_series_starts["deltas"] += 1
    return answer


@dataclass
class _Frame:
    """What every series of one call shares: the venue, the steps, the depth and the metrics' parameters."""

    venue: str
    start: datetime
    steps: int
    step: timedelta
    depth: int
    metrics: _Metrics


def _series(
    frame: _Frame,
    seed: dict[str, np.ndarray],
    changes: dict[str, np.ndarray] | None,
    stored: Checkpoint | None,
) -> pa.Table | None:
    """The table from a seed (the book at start) and the range's changes; with a stored start, also its
    later rows as changes, and None when a step is not provably exact (see :mod:`k2.query.book_checkpoint`)."""
    seeded = dict(seed)
    n = len(seeded["price"])
    later = [np.concatenate([r.bids[0], r.asks[0]]) for r in stored.later] if stored is not None else []
    parts = [seeded["price"], *([changes["price"]] if changes is not None else []), *later]
    # One grid of price slots for both sides: every price the seed, the changes or the stored rows name.
    prices, slots = _price_grid(np.concatenate(parts))
    seeded["slot"] = slots[:n]
    start_us, step_us = datetime_to_micros(frame.start), int(frame.step / timedelta(microseconds=1))
    rows = None
    if changes is not None:
        rows = {name: values for name, values in changes.items() if name != "price"}
        rows["slot"] = slots[n : n + len(changes["price"])]  # the slot replaces the price
    edges = None
    if stored is not None:
        extra, bid_edges, ask_edges = correction_rows(stored, prices, start_us, step_us, frame.steps)
        edges = (bid_edges, ask_edges)
        if len(extra["slot"]) and frame.steps > 1:
            extra["is_snapshot"] = np.zeros(len(extra["slot"]), dtype=bool)
            # After the deltas: a stored row is the book after its update id's own rows (stable sort).
            rows = (
                extra if rows is None else {name: np.concatenate([rows[name], extra[name]]) for name in rows}
            )
    stepped = _by_step(rows, start_us, step_us, frame.steps) if rows is not None else None
    return _replay(frame, prices, seeded, stepped, edges)


def _replay(
    frame: _Frame,
    prices: np.ndarray,
    seed: dict[str, np.ndarray],
    stepped: tuple[dict[str, np.ndarray], np.ndarray] | None,
    edges: tuple[np.ndarray, np.ndarray] | None,
) -> pa.Table | None:
    """Step through the changes (from :func:`_by_step`, :func:`k2.query.book_steps.replay`) and build the
    table: the per-step columns computed for all steps at once. With ``edges`` (a stored start: what is
    known per step), None when a step's walks leave it."""
    venue, start, steps, step, depth, metrics = (
        frame.venue, frame.start, frame.steps, frame.step, frame.depth, frame.metrics
    )  # fmt: skip
    if not steps:
        return pa.table({"ts": pa.array([], pa.timestamp("us", tz="UTC"))})
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
    floor = max(depth, metrics.levels)
    known = None
    if edges is not None:  # from a restart on, the book is the restart's: known as the full path knows it
        restarted = np.cumsum(restarts[:steps]) > 0
        known = (
            np.where(restarted, KNOWN_ALL[0], edges[0]).tolist(),
            np.where(restarted, KNOWN_ALL[1], edges[1]).tolist(),
        )
    replayed = replay(
        _sides(prices, seed, changes), restarts, steps, floor, metrics.wanted, metrics.bps, known
    )
    if replayed is None:
        return None
    walked, within = replayed
    columns: dict[str, pa.Array] = {
        "ts": pa.array(
            datetime_to_micros(start)
            + np.arange(steps, dtype=np.int64) * (step // timedelta(microseconds=1)),
            pa.timestamp("us", tz="UTC"),
        ),
        "exchange": pa.array([venue] * steps, pa.string()),
        **_last_update(seed, changes["k"], changes["u"], changes["ts"], steps),
    }
    for ask, side in enumerate(walked):
        name = "ask" if ask else "bid"
        columns[f"{name}_prices"], columns[f"{name}_sizes"] = side.top_columns(prices, depth)
    columns.update(metrics_columns(walked, within, prices, metrics.levels, metrics.bps, metrics.quantity))
    return pa.table(columns)


def _last_update(
    seed: dict[str, np.ndarray], k: np.ndarray, u: np.ndarray, ts: np.ndarray, steps: int
) -> dict[str, pa.Array]:
    """The update id and exchange time each step reflects: its last change's (the changes are in (step,
    update id) order), else the previous step's, else the seed's newest level's (None without one)."""
    ends = (
        np.searchsorted(k, np.arange(1, steps + 1), "left") - 1
    )  # per step: its last row, or an earlier one
    valid = ends >= 0
    index = np.maximum(ends, 0)
    last_u, last_ts = (
        u[index] if len(u) else np.zeros(steps, np.int64),
        ts[index] if len(ts) else np.zeros(steps, np.int64),
    )
    if len(seed["u"]):
        top = int(np.argmax(seed["u"]))
        last_u = np.where(valid, last_u, seed["u"][top])
        last_ts = np.where(valid, last_ts, seed["ts"][top])
        valid = np.ones(steps, dtype=bool)
    mask = ~valid
    return {
        "last_update_id": pa.array(last_u, pa.int64(), mask=mask),
        "exchange_ts": pa.array(last_ts, pa.timestamp("us", tz="UTC"), mask=mask),
    }


@dataclass
class _Metrics:
    """The metrics' parameters (:func:`k2.query.book.book_metrics`) and the unscaled quantity a fill walks."""

    depth: int
    levels: int
    bps: Decimal | int
    quantity: Decimal | None

    def __post_init__(self) -> None:
        # The smallest unscaled total covering ``quantity`` (a walk needs levels summing to at least it).
        self.wanted = None
        if self.quantity is not None:
            self.wanted = int(Decimal(self.quantity).scaleb(8).to_integral_value(ROUND_CEILING))
