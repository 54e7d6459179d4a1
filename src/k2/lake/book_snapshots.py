"""``market_data.book_snapshots``: the top N levels of every book at a cadence, written by K2 from the deltas.

Each run (``k2 book-snapshots``, or any scheduler calling :func:`write_book_snapshots`) replays
``market_data.book_deltas`` per (exchange, symbol) with :class:`k2.model.book.OrderBook` and writes one row:

* at every (re)start of the book (a group of ``is_snapshot`` rows: the venue snapshot after a start or a
  resync), reflecting that snapshot;
* after the first event of every ``book_snapshot_interval_seconds`` bucket of exchange time (default 10 s).

Rows hold the best ``book_snapshot_depth`` levels per side (default 25) as lists, the update id and the
exchange time they reflect. Only whole events are used: the replay stops before an event whose end row
(``is_event_end``) has not landed yet (a landing batch may split an event), so a snapshot is always
consistent with the deltas.

Exactly once and idempotent: a run only writes rows with an update id above the largest already in the
table for that pair, in one Iceberg commit; on a concurrent commit it refreshes and recomputes. Running it
twice writes nothing the second time.

Hazards: each run replays from the latest book restart at or before the last written snapshot (the table
holds only the top N, not the whole book), so its cost grows with the run of deltas since that restart
(a live feed restarts at every reconnect; Binance drops connections daily). Readers must not rebuild
deep levels from a top-N snapshot: :func:`k2.query.book.book` uses one only when the answer provably
lies inside the snapshot's levels plus the levels changed since.

Example (needs a catalog with landed depth)::

    written = write_book_snapshots(load_settings())   # {('binance', 'BTCUSDT'): 62}
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg import expressions as _expressions
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.lake.summary import WRITER_KEY
from k2.lake.writer import append
from k2.model import BOOK_SNAPSHOT
from k2.model.arrow import records_to_arrow, unscaled_from_decimal
from k2.model.book import OrderBook
from k2.model.values import canonical_instrument, now_micros

_X: Any = _expressions
DELTAS_SNAPSHOT_KEY = "k2.book.deltas_snapshot"


def _pairs(deltas: Table) -> list[tuple[str, str, str]]:
    data = deltas.scan(selected_fields=("exchange", "symbol", "asset_class")).to_arrow()
    if data.num_rows == 0:
        return []
    grouped = data.group_by(["exchange", "symbol", "asset_class"]).aggregate([])
    return sorted(
        zip(
            grouped["exchange"].to_pylist(),
            grouped["symbol"].to_pylist(),
            grouped["asset_class"].to_pylist(),
            strict=True,
        )
    )


def _written(snapshots: Table) -> dict[tuple[str, str], tuple[int, int]]:
    """(exchange, symbol) -> (largest update id, its exchange time in µs) already in book_snapshots."""
    if snapshots.current_snapshot() is None:
        return {}
    data = snapshots.scan(selected_fields=("exchange", "symbol", "last_update_id", "exchange_ts")).to_arrow()
    if data.num_rows == 0:
        return {}
    data = data.sort_by([("last_update_id", "descending")])
    out: dict[tuple[str, str], tuple[int, int]] = {}
    ts = pc.cast(data["exchange_ts"], pa.int64()).to_pylist()
    for exchange, symbol, u, t in zip(
        data["exchange"].to_pylist(),
        data["symbol"].to_pylist(),
        data["last_update_id"].to_pylist(),
        ts,
        strict=True,
    ):
        out.setdefault((exchange, symbol), (u, t))
    return out


def _read(deltas: Table, exchange: str, symbol: str, after_u: int | None) -> pa.Table:
    """The pair's delta rows from the latest restart at or before ``after_u`` (all when None), by update id."""
    base = _X.And(_X.EqualTo("exchange", exchange), _X.EqualTo("symbol", symbol))
    start = None
    if after_u is not None:
        restarts = deltas.scan(
            row_filter=_X.And(
                base, _X.And(_X.EqualTo("is_snapshot", True), _X.LessThanOrEqual("last_update_id", after_u))
            ),
            selected_fields=("last_update_id",),
        ).to_arrow()
        start = pc.max(restarts["last_update_id"]).as_py() if restarts.num_rows else None
    row_filter = base if start is None else _X.And(base, _X.GreaterThanOrEqual("last_update_id", start))
    fields = ("side", "price", "size", "last_update_id", "exchange_ts", "is_snapshot", "is_event_end")
    return deltas.scan(row_filter=row_filter, selected_fields=fields).to_arrow().sort_by("last_update_id")


def _events(data: pa.Table) -> Iterator[tuple[int, int, bool, bool, list[tuple[bool, int, int]]]]:
    """(update id, exchange time µs, is snapshot, complete, [(is ask, price, size)]) per event, in order."""
    ids = data["last_update_id"].to_numpy()
    if len(ids) == 0:
        return
    asks = (data["side"].to_numpy(zero_copy_only=False) == "ASK").tolist()
    prices, sizes = (
        unscaled_from_decimal(data["price"]).tolist(),
        unscaled_from_decimal(data["size"]).tolist(),
    )
    ts = pc.cast(data["exchange_ts"], pa.int64()).to_pylist()
    snap, end = data["is_snapshot"].to_pylist(), data["is_event_end"].to_pylist()
    bounds = np.flatnonzero(np.diff(ids)) + 1
    for lo, hi in zip(
        np.concatenate(([0], bounds)).tolist(), np.concatenate((bounds, [len(ids)])).tolist(), strict=True
    ):
        levels = [(asks[i], prices[i], sizes[i]) for i in range(lo, hi)]
        yield int(ids[lo]), ts[lo], bool(snap[lo]), any(end[lo:hi]), levels


def _row(
    exchange: str, symbol: str, asset_class: str, book: OrderBook, depth: int, written: int
) -> dict[str, Any]:
    bids, asks = book.top("BID", depth), book.top("ASK", depth)
    return {
        "exchange": exchange,
        "symbol": symbol,
        "instrument": canonical_instrument(symbol),
        "asset_class": asset_class,
        "exchange_ts": book.exchange_ts,
        "last_update_id": book.last_update_id,
        "depth": depth,
        "bid_prices": [p for p, _ in bids],
        "bid_sizes": [s for _, s in bids],
        "ask_prices": [p for p, _ in asks],
        "ask_sizes": [s for _, s in asks],
        "written_ts": written,
    }


def snapshots_for_pair(
    deltas: Table, pair: tuple[str, str, str], last: tuple[int, int] | None, interval_us: int, depth: int
) -> list[dict[str, Any]]:
    """The new book_snapshots rows of one pair (update ids above ``last``'s), per the module docstring."""
    exchange, symbol, asset_class = pair
    last_u, last_ts = last if last is not None else (None, None)
    book, rows, written = OrderBook(), [], now_micros()
    bucket = None if last_ts is None else last_ts // interval_us
    loaded: int | None = None
    for u, ts, is_snapshot, complete, levels in _events(_read(deltas, exchange, symbol, last_u)):
        if not complete:
            break  # the rest of this event has not landed yet
        if is_snapshot and loaded != u:
            book.clear()
        loaded = u if is_snapshot else None
        for ask, price, size in levels:
            book.apply("ASK" if ask else "BID", price, size)
        book.last_update_id, book.exchange_ts = u, ts
        if last_u is not None and u <= last_u:
            continue
        if is_snapshot or bucket is None or ts // interval_us != bucket:
            rows.append(_row(exchange, symbol, asset_class, book, depth, written))
            bucket = ts // interval_us
    return rows


def write_book_snapshots(settings: Settings, attempts: int = 5) -> dict[tuple[str, str], int]:
    """Write the due book_snapshots rows of every pair in one commit; returns rows written per pair."""
    tables = ensure_tables(load_catalog(settings), settings)
    deltas, snapshots = tables["book_deltas"], tables["book_snapshots"]
    interval_us = int(settings.book_snapshot_interval_seconds * 1_000_000)
    for _ in range(attempts):
        deltas.refresh()
        snapshots.refresh()
        source = deltas.current_snapshot()
        if source is None:
            return {}
        written = _written(snapshots)
        rows: list[dict[str, Any]] = []
        counts: dict[tuple[str, str], int] = {}
        for pair in _pairs(deltas):
            new = snapshots_for_pair(
                deltas, pair, written.get(pair[:2]), interval_us, settings.book_snapshot_depth
            )
            if new:
                counts[pair[:2]] = len(new)
                rows.extend(new)
        if not rows:
            return {}
        properties = {DELTAS_SNAPSHOT_KEY: str(source.snapshot_id), WRITER_KEY: "book-snapshots"}
        try:
            append(snapshots, records_to_arrow(BOOK_SNAPSHOT, rows), "book_snapshots", properties)
        except CommitFailedException:
            continue  # another writer committed: recompute from its state
        return counts
    raise RuntimeError(
        f"expected a book_snapshots commit within {attempts} attempts, found continuous conflicts"
    )
