"""Which stored ``book_snapshots`` rows a ``book()`` read starts from, found without a scan per read.

``book()`` asks, per read, for the newest stored rows of a symbol at or before a moment. Asked of the files,
that is a scan of every row group of the symbol's rows up to the moment, and ``book_snapshots`` is written
in 32-row groups (so a read decodes one group's price lists, :data:`k2.lake.catalog.TABLE_LAYOUT`): on the
100M-delta benchmark table a look-up visited ~130 groups and cost ~30 ms of a ~45 ms read.

A table snapshot never changes, so the answer's inputs - each stored row's exchange, update id, time and
depth, a few bytes per row - are read once per (snapshot, symbol) and kept (:class:`StoredRowIndex`,
bounded LRU, shared by a client and its pinned children); a look-up is then a mask over those columns.
A new ``book_snapshots`` commit is a new snapshot id, hence a new entry: never a stale answer.

Hazards: the first read of each (snapshot, symbol) pays the scan; a writer committing every few seconds
makes most reads first reads (the same cost as before, no more). Memory: ~30 bytes per stored row of the
symbols read, for at most ``entries`` (snapshot, symbol) pairs.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from pyiceberg.io import FileIO

    from k2.query.client import Client

_PLANNED = "read_parquet(?)"  # k2.query.book.delta_source's FROM for planned files
_PLANNED_WITH_POSITION = "read_parquet(?, filename = true, file_row_number = true)"
LIST_COLUMNS = ("last_update_id", "depth", "bid_prices", "bid_sizes", "ask_prices", "ask_sizes")


class StoredRowIndex:
    """Per (``book_snapshots`` snapshot id, symbol): the stored rows' scalars, sorted by update id.

    Example::

        index = StoredRowIndex()
        rows = index.newest(client, snaps, "BTCUSDT", moment, None, None, 6)
    """

    def __init__(self, entries: int = 64) -> None:
        self.entries = entries
        self._cache: OrderedDict[tuple[Any, ...], pa.Table] = OrderedDict()
        self._footers: OrderedDict[str, tuple[list[int], pq.FileMetaData]] = OrderedDict()
        self._lock = threading.Lock()

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
        ``update_id`` when given), all of the exchange of the newest one: ``exchange``, ``u``, ``ts``, ``depth``."""
        rows = self._rows(client, snaps, symbol)
        if rows is None or rows.num_rows == 0:
            return []
        keep = pc.less_equal(rows["ts"], pa.scalar(moment, rows.schema.field("ts").type))
        if exchange is not None:
            keep = pc.and_(keep, pc.equal(rows["exchange"], exchange))
        if update_id is not None:
            keep = pc.and_(keep, pc.less_equal(rows["u"], update_id))
        found = rows.filter(keep)
        newest = found.slice(max(0, found.num_rows - window)).to_pylist()[::-1]
        return [r for r in newest if r["exchange"] == newest[0]["exchange"]] if newest else []

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
                parts.append(self._from_groups(io, path, [r["row"] for r in rows if r["file"] == path]))
        except (OSError, KeyError, ValueError, pa.ArrowException):
            return None
        table = pa.concat_tables(parts).rename_columns(["u", *LIST_COLUMNS[1:]])
        if sorted(table["u"].to_pylist()) != sorted(r["u"] for r in rows):  # the positions were another's
            return None
        return table

    def _from_groups(self, io: FileIO, path: str, wanted: list[int]) -> pa.Table:
        """Rows at positions ``wanted`` of one file, reading only the row groups holding them."""
        starts, meta = self._footer(io, path)
        group_of = {row: bisect.bisect_right(starts, row) - 1 for row in wanted}
        groups = sorted(set(group_of.values()))
        base, at = {}, 0  # where each group read begins in the table read
        for g in groups:
            base[g], at = at, at + starts[g + 1] - starts[g]
        with io.new_input(path).open() as stream:
            read = pq.ParquetFile(stream, metadata=meta).read_row_groups(groups, columns=list(LIST_COLUMNS))
        return read.take(pa.array([base[group_of[r]] + r - starts[group_of[r]] for r in wanted], pa.int64()))

    def _footer(self, io: FileIO, path: str) -> tuple[list[int], pq.FileMetaData]:
        """The first row position of each row group of ``path`` (and the row count last), and its parsed
        footer (footers are immutable: parsed once per path)."""
        with self._lock:
            if path in self._footers:
                self._footers.move_to_end(path)
                return self._footers[path]
        with io.new_input(path).open() as stream:
            meta = pq.ParquetFile(stream).metadata
        starts = [0]
        for g in range(meta.num_row_groups):
            starts.append(starts[-1] + meta.row_group(g).num_rows)
        with self._lock:
            self._footers[path] = (starts, meta)
            while len(self._footers) > 4 * self.entries:
                self._footers.popitem(last=False)
        return starts, meta

    def _rows(self, client: Client, snaps: Any, symbol: str) -> pa.Table | None:
        """The symbol's stored rows (sorted by update id) in ``snaps``' snapshot; None when it cannot be kept
        (no snapshot id: an empty table, or a read that is not pinned to one)."""
        if snaps.snapshot_id is None:
            return None
        key = (snaps.location, snaps.snapshot_id, symbol)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        rows = _read(client, snaps, symbol)
        with self._lock:
            self._cache[key] = rows
            while len(self._cache) > self.entries:
                self._cache.popitem(last=False)
        return rows


def _read(client: Client, snaps: Any, symbol: str) -> pa.Table:
    from k2.query.book import delta_source, run_book_sql  # the client imports this module; book lazily

    found = delta_source(client, snaps, symbol)
    if found is None:
        return pa.table({"exchange": pa.array([], pa.string())})
    source, params = found
    if source == _PLANNED:  # each row's file and position, for reading its lists from its own row group
        source, where = _PLANNED_WITH_POSITION, "filename AS file, file_row_number AS row"
    else:
        where = "NULL::VARCHAR AS file, NULL::BIGINT AS row"
    sql = (
        f"SELECT exchange, last_update_id AS u, exchange_ts AS ts, depth, {where} "  # noqa: S608 - constant fragments
        f"FROM {source} WHERE symbol = ? ORDER BY last_update_id"
    )
    return run_book_sql(client, sql, [*params, symbol])
