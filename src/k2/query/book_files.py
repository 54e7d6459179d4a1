"""Planned data files of the order-book tables, cached per snapshot, pruned by symbol and update id.

``book()`` reads one symbol's rows in a narrow update-id window (a stored snapshot and the deltas after
it). DuckDB's ``iceberg_scan`` plans the whole table at every call (manifest list, manifests, then every
data file's footer): on a table of many files that planning alone exceeds the read. Here pyiceberg plans
a snapshot **once** (cached by snapshot id; a snapshot never changes) and keeps each data file's bounds
of ``symbol``, ``last_update_id`` and ``exchange_ts`` from the manifests; a read keeps only the files
whose bounds can hold its rows and hands them to ``read_parquet``, where the Parquet row-group
statistics (files sorted by symbol, update id) prune the rest.

Hazards:

* Only for append-only tables: a snapshot with delete files (row-level deletes) is not planned here
  (:func:`planned_files` returns None and callers use ``iceberg_scan``). K2 writes none.
* Columns are read by name (``read_parquet``), not by Iceberg field id: a renamed column would read as
  missing. The book tables' schemas come from one definition (``k2.model.schema``) and are never renamed.
* Manifest bounds may be truncated (strings, 16 characters): a truncated lower bound is still a lower
  bound and pyiceberg writes upper bounds rounded up, so pruning stays safe; it only keeps more files.
* The cache holds the last few snapshots per table (a live table gets a new snapshot per landing commit,
  so the plan is redone after each commit: one manifest read per commit, not per query).

Example (needs a catalog with landed depth)::

    files = planned_files(table, snapshot_id)                    # cached
    paths = select_files(files, "BTCUSDT", above=5, through=90)  # only files that can hold those rows
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pyiceberg.conversions import from_bytes
from pyiceberg.table import Table
from pyiceberg.types import PrimitiveType

from k2.model.values import datetime_to_micros

_CACHED_SNAPSHOTS = 8
_BOUNDED = ("symbol", "last_update_id", "exchange_ts")


@dataclass(frozen=True)
class PlannedFile:
    """One data file and its column bounds (None: unknown, never pruned on)."""

    path: str
    rows: int
    symbol: tuple[str | None, str | None]
    update_id: tuple[int | None, int | None]
    exchange_ts: tuple[int | None, int | None]  # µs


_cache: OrderedDict[tuple[str, int], list[PlannedFile] | None] = OrderedDict()
_lock = threading.Lock()


def _bounds(table: Table, data_file: Any) -> dict[str, tuple[Any, Any]]:
    schema = table.schema()
    out: dict[str, tuple[Any, Any]] = {}
    for name in _BOUNDED:
        field = schema.find_field(name)
        kind = field.field_type
        assert isinstance(kind, PrimitiveType)
        lower = (data_file.lower_bounds or {}).get(field.field_id)
        upper = (data_file.upper_bounds or {}).get(field.field_id)
        out[name] = (
            None if lower is None else from_bytes(kind, lower),
            None if upper is None else from_bytes(kind, upper),
        )
    return out


def _plan(table: Table, snapshot_id: int) -> list[PlannedFile] | None:
    files: list[PlannedFile] = []
    for task in table.scan(snapshot_id=snapshot_id).plan_files():
        if task.delete_files:
            return None
        bounds = _bounds(table, task.file)
        files.append(
            PlannedFile(
                task.file.file_path,
                int(task.file.record_count),
                bounds["symbol"],
                bounds["last_update_id"],
                bounds["exchange_ts"],
            )
        )
    return files


def planned_files(table: Table, snapshot_id: int) -> list[PlannedFile] | None:
    """Every data file of ``table`` at ``snapshot_id`` with its bounds (cached); None when it has delete files."""
    key = (str(table.metadata.location), snapshot_id)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    files = _plan(table, snapshot_id)
    with _lock:
        _cache[key] = files
        while len(_cache) > _CACHED_SNAPSHOTS * 2:
            _cache.popitem(last=False)
    return files


def _may_hold(bounds: tuple[Any, Any], low: Any, high: Any) -> bool:
    """Whether a file with ``bounds`` may hold a value in [low, high] (None: unbounded on that end)."""
    lower, upper = bounds
    if low is not None and upper is not None and upper < low:
        return False
    return not (high is not None and lower is not None and lower > high)


def select_files(
    files: list[PlannedFile],
    symbol: str,
    *,
    above: int | None = None,
    through: int | None = None,
    until: datetime | None = None,
) -> list[str]:
    """Paths of the files that may hold rows of ``symbol`` with ``above < last_update_id <= through``
    and ``exchange_ts <= until`` (each bound optional)."""
    low = None if above is None else above + 1
    until_us = None if until is None else datetime_to_micros(until)
    return [
        f.path
        for f in files
        if _may_hold(f.symbol, symbol, symbol)
        and _may_hold(f.update_id, low, through)
        and _may_hold(f.exchange_ts, None, until_us)
    ]
