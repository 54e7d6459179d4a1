"""Which stored ``book_snapshots`` rows a ``book()`` read starts from, found from the files' footers.

``book()`` asks, per read, for the newest stored rows of a symbol at or before a moment. Asked of the rows,
that is a scan of the symbol's scalars up to the moment, and ``book_snapshots`` is written in 32-row groups
sorted by (symbol, update id) (so a read decodes one group's price lists, :data:`k2.lake.catalog.TABLE_LAYOUT`):
on the 100M-delta benchmark table ~130 groups, 30-45 ms per (snapshot, symbol) even when kept afterwards -
and a writer committing every 10 s makes most reads the first of their snapshot.

So the look-up reads the Parquet footers instead: each row group's min/max of symbol, exchange, exchange
time and update id say which groups can hold rows at or before the moment, and their update-id maxima say
which can hold the newest ones. Only those groups' scalars are read (usually one group of 32 rows), and the
lists come from the same groups (:meth:`StoredRowIndex.lists`). Data files are immutable, so footers and
decoded groups are kept per path (bounded LRU, :mod:`k2.lru`): a new ``book_snapshots`` commit only adds
the footer of its new file, and a read never sees a stale answer (the file list comes from the read's own
snapshot plan).

Hazards: a group without statistics is read (never skipped), so a file from a writer that omits them
costs its full scan, not a wrong answer. A read that cannot be planned file by file (delete files, a
table without a loaded snapshot) falls back to one DuckDB scan of the symbol's scalars per (snapshot,
symbol), kept like the rest. Ties in update id between exchanges are ordered arbitrarily, as the scan
ordered them.
"""

from __future__ import annotations

import bisect
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from k2.lru import BoundedLRU

if TYPE_CHECKING:
    from pyiceberg.io import FileIO

    from k2.query.client import Client

LIST_COLUMNS = ("last_update_id", "depth", "bid_prices", "bid_sizes", "ask_prices", "ask_sizes")
_SCALARS = ("exchange", "symbol", "last_update_id", "exchange_ts", "depth")
_TS = pa.timestamp("us", tz="UTC")
_LOW, _HIGH = -sys.maxsize - 1, sys.maxsize  # an unknown bound: the group may hold anything


@dataclass(frozen=True)
class _Footer:
    """One data file's parsed footer and, per row group, its first row and the bounds a look-up prunes by."""

    meta: pq.FileMetaData
    starts: list[int]  # first row position of each group, then the row count
    symbols: list[tuple[str | None, str | None]]  # (min, max) per group; None: no statistics
    exchanges: list[tuple[str | None, str | None]]
    ts_min: np.ndarray  # exchange time, microseconds since the epoch (UTC)
    u_min: np.ndarray
    u_max: np.ndarray

    @classmethod
    def parse(cls, meta: pq.FileMetaData) -> _Footer:
        schema = meta.schema
        names = [schema.column(i).path for i in range(len(schema))]
        index = {name: names.index(name) for name in _SCALARS if name in names}
        micros = "exchange_ts" in index and "microseconds" in str(
            schema.column(index["exchange_ts"]).logical_type
        )
        starts, symbols, exchanges, ts_min, u_min, u_max = [0], [], [], [], [], []
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            starts.append(starts[-1] + group.num_rows)
            symbols.append(_bounds(group, index.get("symbol")))
            exchanges.append(_bounds(group, index.get("exchange")))
            low, _ = _bounds(group, index.get("exchange_ts"), raw=True) if micros else (None, None)
            ts_min.append(_LOW if low is None else low)
            low, high = _bounds(group, index.get("last_update_id"), raw=True)
            u_min.append(_LOW if low is None else low)
            u_max.append(_HIGH if high is None else high)
        return cls(
            meta,
            starts,
            symbols,
            exchanges,
            np.array(ts_min, np.int64),
            np.array(u_min, np.int64),
            np.array(u_max, np.int64),
        )

    def groups_for(
        self, symbol: str, moment_us: int, exchange: str | None, update_id: int | None
    ) -> np.ndarray:
        """The groups that may hold rows of ``symbol`` at or before the moment (of ``exchange``, through
        ``update_id``)."""
        keep = self.ts_min <= moment_us
        if update_id is not None:
            keep &= self.u_min <= update_id
        keep &= np.array([_may_hold(b, symbol) for b in self.symbols], dtype=bool)
        if exchange is not None:
            keep &= np.array([_may_hold(b, exchange) for b in self.exchanges], dtype=bool)
        return np.flatnonzero(keep)


def _bounds(group: pq.RowGroupMetaData, column: int | None, raw: bool = False) -> tuple[Any, Any]:
    """(min, max) of one column chunk's statistics, (None, None) when it has none."""
    stats = None if column is None else group.column(column).statistics
    if stats is None or not stats.has_min_max:
        return None, None
    return (stats.min_raw, stats.max_raw) if raw else (stats.min, stats.max)


def _may_hold(bounds: tuple[str | None, str | None], value: str) -> bool:
    low, high = bounds
    return low is None or high is None or low <= value <= high


class StoredRowIndex:
    """The newest stored rows of a symbol at a moment, from footers and the few row groups they point at.

    Example::

        index = StoredRowIndex()
        rows = index.newest(client, snaps, "BTCUSDT", moment, None, None, 6)
    """

    def __init__(self, entries: int = 64) -> None:
        self.entries = entries
        self._footers: BoundedLRU[str, _Footer] = BoundedLRU(4 * entries)
        self._groups: BoundedLRU[tuple[str, int], pa.Table] = BoundedLRU(64 * entries)
        self._scanned: BoundedLRU[tuple[Any, ...], pa.Table] = BoundedLRU(entries)
        self.footers_parsed = 0  # counters a test reads: what the look-ups cost
        self.groups_read = 0
        self.scans = 0

    def newest(
        self,
        client: Client,
        snaps: Any,
        symbol: str,
        moment: datetime,
        exchange: str | None,
        update_id: int | None,
        window: int,
    ) -> list[dict[str, Any]]:
        """Newest first: up to ``window`` stored rows at or before ``moment`` (of ``exchange``, through
        ``update_id`` when given), all of the exchange of the newest one: ``exchange``, ``u``, ``ts``,
        ``depth``, and the ``file`` and ``row`` position holding it (None when not known)."""
        from k2.query.book import planned_paths  # the client imports this module; book lazily

        io = snaps.table.io if snaps.table is not None else None
        paths = None if io is None else planned_paths(client, snaps, symbol, through=update_id, until=moment)
        if paths is None or io is None:
            rows = self._from_scan(client, snaps, symbol, moment, exchange, update_id)
        else:
            rows = self._from_groups_bounds(io, paths, symbol, moment, exchange, update_id, window)
        if rows.num_rows == 0:
            return []
        rows = rows.sort_by("u")
        newest = rows.slice(max(0, rows.num_rows - window)).to_pylist()[::-1]
        return [r for r in newest if r["exchange"] == newest[0]["exchange"]]

    def _from_groups_bounds(
        self,
        io: FileIO,
        paths: list[str],
        symbol: str,
        moment: datetime,
        exchange: str | None,
        update_id: int | None,
        window: int,
    ) -> pa.Table:
        """At least the ``window`` highest-update-id rows matching the look-up (all of them when fewer):
        groups are read by their update-id maximum, highest first, until no unread group can beat the
        ``window``-th highest id found."""
        moment_us = _micros(moment)
        candidates: list[tuple[int, str, int]] = []
        for path in paths:
            footer = self._footer(io, path)
            candidates.extend(
                (int(footer.u_max[g]), path, int(g))
                for g in footer.groups_for(symbol, moment_us, exchange, update_id)
            )
        candidates.sort(key=lambda c: c[0], reverse=True)
        parts: list[pa.Table] = []
        ids = np.empty(0, np.int64)
        for u_max, path, g in candidates:
            if len(ids) >= window and u_max < np.partition(ids, len(ids) - window)[len(ids) - window]:
                break
            part = _matching(self._group(io, path, g), symbol, moment, exchange, update_id)
            if part.num_rows:
                parts.append(part)
                ids = np.concatenate([ids, part["u"].to_numpy()])
        if not parts:
            return _EMPTY
        return pa.concat_tables(parts).select(list(_EMPTY.column_names))

    def _group(self, io: FileIO, path: str, group: int) -> pa.Table:
        """One row group's scalars with each row's file and position (decoded once per path and group)."""

        def read() -> pa.Table:
            footer = self._footer(io, path)
            with io.new_input(path).open() as stream:
                table = pq.ParquetFile(stream, metadata=footer.meta).read_row_group(
                    group, columns=list(_SCALARS)
                )
            self.groups_read += 1
            first = footer.starts[group]
            return pa.table(
                {
                    "exchange": table["exchange"],
                    "symbol": table["symbol"],
                    "u": table["last_update_id"],
                    "ts": table["exchange_ts"].cast(_TS),
                    "depth": table["depth"],
                    "file": pa.array([path] * table.num_rows, pa.string()),
                    "row": pa.array(np.arange(first, first + table.num_rows, dtype=np.int64)),
                }
            )

        return self._groups.get_or_make((path, group), read)

    def _footer(self, io: FileIO, path: str) -> _Footer:
        """``path``'s parsed footer and group bounds (files are immutable: parsed once per path)."""

        def parse() -> _Footer:
            with io.new_input(path).open() as stream:
                meta = pq.ParquetFile(stream).metadata
            self.footers_parsed += 1
            return _Footer.parse(meta)

        return self._footers.get_or_make(path, parse)

    def _from_scan(
        self,
        client: Client,
        snaps: Any,
        symbol: str,
        moment: datetime,
        exchange: str | None,
        update_id: int | None,
    ) -> pa.Table:
        """The look-up over one DuckDB scan of the symbol's scalars, kept per (snapshot, symbol): for reads
        that cannot be planned file by file. Rows' files are not known here (``file`` None)."""
        if snaps.snapshot_id is None:
            return _EMPTY
        key = (snaps.location, snaps.snapshot_id, symbol)
        rows = self._scanned.get_or_make(key, lambda: self._scan(client, snaps, symbol))
        return _matching(rows, symbol, moment, exchange, update_id).select(list(_EMPTY.column_names))

    def _scan(self, client: Client, snaps: Any, symbol: str) -> pa.Table:
        from k2.query.book import delta_source, run_book_sql

        self.scans += 1
        found = delta_source(client, snaps, symbol)
        if found is None:
            return _EMPTY
        source, params = found
        sql = (
            "SELECT exchange, symbol, last_update_id AS u, exchange_ts AS ts, depth, "  # noqa: S608 - constant fragments
            f"NULL::VARCHAR AS file, NULL::BIGINT AS row FROM {source} WHERE symbol = ?"
        )
        table = run_book_sql(client, sql, [*params, symbol])
        return table.set_column(3, "ts", table["ts"].cast(_TS))

    def lists(self, io: FileIO | None, rows: list[dict[str, Any]]) -> pa.Table | None:
        """The price lists of exactly ``rows`` (from :meth:`newest`), read from the row groups holding them:
        columns ``u``, ``depth`` and the four lists. None when a row's file is not known (a table read
        through ``iceberg_scan``) or cannot be read (gone, or written before a column existed): the caller
        then asks DuckDB."""
        if io is None or any(r["file"] is None for r in rows):
            return None
        parts = []
        try:
            for path in dict.fromkeys(r["file"] for r in rows):
                parts.append(self._rows_at(io, path, [r["row"] for r in rows if r["file"] == path]))
        except (OSError, KeyError, ValueError, pa.ArrowException):
            return None
        table = pa.concat_tables(parts).rename_columns(["u", *LIST_COLUMNS[1:]])
        if sorted(table["u"].to_pylist()) != sorted(r["u"] for r in rows):  # the positions were another's
            return None
        return table

    def _rows_at(self, io: FileIO, path: str, wanted: list[int]) -> pa.Table:
        """Rows at positions ``wanted`` of one file, reading only the row groups holding them."""
        footer = self._footer(io, path)
        starts = footer.starts
        group_of = {row: bisect.bisect_right(starts, row) - 1 for row in wanted}
        groups = sorted(set(group_of.values()))
        base, at = {}, 0  # where each group read begins in the table read
        for g in groups:
            base[g], at = at, at + starts[g + 1] - starts[g]
        with io.new_input(path).open() as stream:
            read = pq.ParquetFile(stream, metadata=footer.meta).read_row_groups(
                groups, columns=list(LIST_COLUMNS)
            )
        return read.take(pa.array([base[group_of[r]] + r - starts[group_of[r]] for r in wanted], pa.int64()))


def _micros(moment: datetime) -> int:
    """Microseconds since the epoch of a timezone-aware moment (exact: no float)."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _matching(
    rows: pa.Table, symbol: str, moment: datetime, exchange: str | None, update_id: int | None
) -> pa.Table:
    """The rows of ``symbol`` at or before ``moment`` (of ``exchange``, through ``update_id``)."""
    keep = pc.and_(pc.equal(rows["symbol"], symbol), pc.less_equal(rows["ts"], pa.scalar(moment, _TS)))
    if exchange is not None:
        keep = pc.and_(keep, pc.equal(rows["exchange"], exchange))
    if update_id is not None:
        keep = pc.and_(keep, pc.less_equal(rows["u"], update_id))
    return rows.filter(keep)


_EMPTY = pa.table(
    {
        "exchange": pa.array([], pa.string()),
        "u": pa.array([], pa.int64()),
        "ts": pa.array([], _TS),
        "depth": pa.array([], pa.int32()),
        "file": pa.array([], pa.string()),
        "row": pa.array([], pa.int64()),
    }
)
