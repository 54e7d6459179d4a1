"""``market_data.book_snapshots``: the top N levels of every book at a cadence, written by K2 from the deltas.

Each run (``k2 book-snapshots``, or any scheduler calling :func:`write_book_snapshots`) replays
``market_data.book_deltas`` per (exchange, symbol) with :class:`k2.model.book.OrderBook` and writes one row:

* at every (re)start of the book (a group of ``is_snapshot`` rows: the venue snapshot after a start or a
  resync), reflecting that snapshot;
* after the first event of every ``book_snapshot_interval_seconds`` bucket of exchange time (default 10 s).

Rows hold the best ``book_snapshot_depth`` levels per side (default 500) as lists, the update id and the
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

Scheduled: the landing service runs :class:`BookSnapshotter` (a thread) at its start and then every
``book_snapshot_run_seconds`` (default 10 s of wall time; 0 = off). It keeps, per pair, the book it
rebuilt up to the last whole event and the deltas-table snapshot it read, so a run reads only the delta
rows above that update id and the pairs of the data files added since (a process start replays once from
the latest restart). The commit summary is built by :func:`k2.lake.summary.commit_summary` (writer
``book-snapshots``, plus ``k2.book.deltas_snapshot``: the deltas snapshot the rows were computed from).

Hazard of the kept state: it assumes delta rows of a pair land in update-id order (one Kafka partition
per symbol does that). A late import of *older* rows for a pair (update ids below the kept book's) is
not re-applied by a running snapshotter; ``k2 book-snapshots`` (no kept state) and every restart of the
landing service replay from the latest restart and see them.

Example (needs a catalog with landed depth)::

    written = write_book_snapshots(load_settings())   # {('binance', 'BTCUSDT'): 62}
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import structlog
from pyiceberg import expressions as _expressions
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.manifest import ManifestEntryStatus
from pyiceberg.table import Table

from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.lake.summary import commit_summary
from k2.lake.writer import append
from k2.model import BOOK_SNAPSHOT
from k2.model.arrow import records_to_arrow, unscaled_from_decimal
from k2.model.book import OrderBook
from k2.model.values import canonical_instrument, now_micros
from k2.pacing import Backoff, Periodic

_X: Any = _expressions
DELTAS_SNAPSHOT_KEY = "k2.book.deltas_snapshot"
WRITER = "book-snapshots"
log = structlog.get_logger("k2.book_snapshots")
Pair = tuple[str, str, str]
_PAIR_FIELDS = ("exchange", "symbol", "asset_class")


@dataclass
class PairState:
    """The book of one pair rebuilt through update id ``u`` (whole events only), kept between runs."""

    book: OrderBook = field(default_factory=OrderBook)
    u: int | None = None
    loaded: int | None = None  # update id of the venue snapshot being loaded (its rows may span reads)


@dataclass
class SnapshotterState:
    """What a scheduled writer keeps between runs: the pairs seen, through which deltas snapshot, and books."""

    pairs: set[Pair] = field(default_factory=set)
    through: int | None = None  # deltas-table snapshot id whose data files ``pairs`` covers
    books: dict[Pair, PairState] = field(default_factory=dict)


def _distinct_pairs(data: pa.Table) -> set[Pair]:
    if data.num_rows == 0:
        return set()
    grouped = data.group_by(list(_PAIR_FIELDS)).aggregate([])
    return set(zip(*(grouped[name].to_pylist() for name in _PAIR_FIELDS), strict=True))


def _added_files(deltas: Table, since: int) -> list[str] | None:
    """Data files added by the snapshots after ``since`` (None when ``since`` is no longer an ancestor)."""
    snapshot, added = deltas.current_snapshot(), []
    while snapshot is not None and snapshot.snapshot_id != since:
        added.append(snapshot)
        parent = snapshot.parent_snapshot_id
        snapshot = deltas.snapshot_by_id(parent) if parent is not None else None
    if snapshot is None:
        return None  # expired or rewritten history: rescan the table
    paths: list[str] = []
    for new in added:
        for manifest in new.manifests(deltas.io):
            if manifest.added_snapshot_id != new.snapshot_id:
                continue
            for entry in manifest.fetch_manifest_entry(deltas.io, discard_deleted=True):
                if entry.status == ManifestEntryStatus.ADDED and entry.snapshot_id == new.snapshot_id:
                    paths.append(entry.data_file.file_path)
    return paths


def _pairs(deltas: Table, state: SnapshotterState | None = None) -> list[Pair]:
    """Every (exchange, symbol, asset class) in the deltas; with ``state``, only new data files are read."""
    current = deltas.current_snapshot()
    paths = None
    if state is not None and state.through is not None and current is not None:
        paths = _added_files(deltas, state.through)
    if paths is None:
        found = _distinct_pairs(deltas.scan(selected_fields=_PAIR_FIELDS).to_arrow())
    else:
        found = set()
        for path in paths:
            with deltas.io.new_input(path).open() as stream:
                found |= _distinct_pairs(pq.read_table(stream, columns=list(_PAIR_FIELDS)))
    if state is None:
        return sorted(found)
    state.pairs |= found
    state.through = None if current is None else current.snapshot_id
    return sorted(state.pairs)


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


def _read(
    deltas: Table, exchange: str, symbol: str, after_u: int | None, above: int | None = None
) -> pa.Table:
    """The pair's delta rows from the latest restart at or before ``after_u`` (all when None), by update id.

    With ``above`` (the update id a kept book reflects): only the rows above it.
    """
    base = _X.And(_X.EqualTo("exchange", exchange), _X.EqualTo("symbol", symbol))
    start = None
    if above is not None:
        base = _X.And(base, _X.GreaterThan("last_update_id", above))
    elif after_u is not None:
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
        # A restart may share its update id with the event before it (a venue snapshot taken right after
        # that event): its rows supersede that event's, whichever order the rows came in (as readers do).
        restart = any(snap[lo:hi])
        chosen = [i for i in range(lo, hi) if snap[i]] if restart else range(lo, hi)
        levels = [(asks[i], prices[i], sizes[i]) for i in chosen]
        yield int(ids[lo]), ts[lo], restart, any(end[lo:hi]), levels


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
    deltas: Table,
    pair: Pair,
    last: tuple[int, int] | None,
    interval_us: int,
    depth: int,
    kept: PairState | None = None,
) -> list[dict[str, Any]]:
    """The new book_snapshots rows of one pair (update ids above ``last``'s), per the module docstring.

    ``kept`` (updated in place) carries the rebuilt book between runs; without it the pair is replayed
    from the latest restart at or before ``last``.
    """
    exchange, symbol, asset_class = pair
    last_u, last_ts = last if last is not None else (None, None)
    state = kept if kept is not None else PairState()
    book, rows, written = state.book, [], now_micros()
    bucket = None if last_ts is None else last_ts // interval_us
    for u, ts, is_snapshot, complete, levels in _events(_read(deltas, exchange, symbol, last_u, state.u)):
        if not complete:
            break  # the rest of this event has not landed yet
        if is_snapshot and state.loaded != u:
            book.clear()
        state.loaded = u if is_snapshot else None
        for ask, price, size in levels:
            book.apply("ASK" if ask else "BID", price, size)
        book.last_update_id, book.exchange_ts, state.u = u, ts, u
        if last_u is not None and u <= last_u:
            continue
        if is_snapshot or bucket is None or ts // interval_us != bucket:
            rows.append(_row(exchange, symbol, asset_class, book, depth, written))
            bucket = ts // interval_us
    return rows


def write_book_snapshots(
    settings: Settings,
    attempts: int = 5,
    state: SnapshotterState | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[tuple[str, str], int]:
    """Write the due book_snapshots rows of every pair in one commit; returns rows written per pair.

    A commit conflict (another writer committed first) waits with :class:`k2.pacing.Backoff` before
    recomputing, so colliding writers spread out instead of retrying in lock step.

    ``state`` (a scheduled writer's, see :class:`BookSnapshotter`) makes a run incremental. A commit
    conflict drops the books kept for this run's pairs (they were advanced past what was committed).
    """
    tables = ensure_tables(load_catalog(settings), settings)
    deltas, snapshots = tables["book_deltas"], tables["book_snapshots"]
    interval_us = int(settings.book_snapshot_interval_seconds * 1_000_000)
    backoff = Backoff(0.05, 1.0)  # writers that collided spread out (k2.pacing), as every K2 writer does
    for attempt in range(attempts):
        deltas.refresh()
        snapshots.refresh()
        source = deltas.current_snapshot()
        if source is None:
            return {}
        written = _written(snapshots)
        rows: list[dict[str, Any]] = []
        counts: dict[tuple[str, str], int] = {}
        for pair in _pairs(deltas, state):
            kept = None if state is None else state.books.setdefault(pair, PairState())
            new = snapshots_for_pair(
                deltas, pair, written.get(pair[:2]), interval_us, settings.book_snapshot_depth, kept
            )
            if new:
                counts[pair[:2]] = len(new)
                rows.extend(new)
        if not rows:
            return {}
        summary = commit_summary(
            snapshots.current_snapshot(), WRITER, {DELTAS_SNAPSHOT_KEY: str(source.snapshot_id)}
        )
        try:
            append(snapshots, records_to_arrow(BOOK_SNAPSHOT, rows), "book_snapshots", summary)
        except CommitFailedException:
            if state is not None:
                state.books.clear()  # kept books ran ahead of the table: replay from the restarts
            if attempt + 1 < attempts:
                sleep(backoff.next_delay())
            continue  # another writer committed: recompute from its state
        return counts
    raise RuntimeError(
        f"expected a book_snapshots commit within {attempts} attempts, found continuous conflicts"
    )


class BookSnapshotter(Periodic):
    """The landing service's schedule for book_snapshots: a run at start, then every ``book_snapshot_run_seconds``.

    Example (needs a catalog)::

        snapshotter = BookSnapshotter(settings).start()
        ...
        snapshotter.stop()   # lets a run in progress finish
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__("k2-book-snapshots", settings.book_snapshot_run_seconds, run_at_start=True)
        self.settings = settings
        self.state = SnapshotterState()
        self.runs = 0
        self.written: dict[tuple[str, str], int] = {}

    def run_once(self) -> None:
        try:
            for pair, count in write_book_snapshots(self.settings, state=self.state).items():
                self.written[pair] = self.written.get(pair, 0) + count
                log.info("book snapshots written", exchange=pair[0], symbol=pair[1], rows=count)
        except Exception:  # the next run starts again from the table's state (logged by Periodic)
            self.state = SnapshotterState()
            raise
        finally:
            self.runs += 1

    def stop(self, timeout: float = 60.0) -> None:
        super().stop(timeout)


def start_book_snapshotter(settings: Settings) -> BookSnapshotter | None:
    """Start the scheduled book_snapshots writer unless ``book_snapshot_run_seconds`` is 0.

    Example:
        >>> from k2.config import Settings
        >>> start_book_snapshotter(Settings(book_snapshot_run_seconds=0)) is None
        True
    """
    if settings.book_snapshot_run_seconds <= 0:
        return None
    snapshotter = BookSnapshotter(settings)
    snapshotter.start()
    return snapshotter
