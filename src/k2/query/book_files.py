"""Which planned data files of the order-book tables a read keeps: pruned by symbol, update id and time.

``book()`` reads one symbol's rows in a narrow update-id window (a stored snapshot and the deltas after
it). DuckDB's ``iceberg_scan`` plans the whole table at every call (manifest list, manifests, then every
data file's footer): on a table of many files that planning alone exceeds the read. The client's
:class:`k2.query.files.FilePlanner` plans a snapshot **once** (cached by snapshot id; a snapshot never
changes; manifests read once per path, so a landing commit costs only its new manifests) and keeps each
data file's bounds of ``symbol``, ``last_update_id`` and ``exchange_ts`` from the manifests; a read keeps
only the files whose bounds can hold its rows (:func:`select_files`) and hands them to ``read_parquet``,
where the Parquet row-group statistics (files sorted by symbol, update id) prune the rest.

Hazards:

* Only for append-only tables: a snapshot with delete files (row-level deletes) is not planned
  (:meth:`~k2.query.files.FilePlanner.planned` returns None and callers use ``iceberg_scan``). K2 writes none.
* Columns are read by name (``read_parquet``), not by Iceberg field id: a renamed column would read as
  missing. The book tables' schemas come from one definition (``k2.model.schema``) and are never renamed.
* Manifest bounds may be truncated (strings, 16 characters): a truncated lower bound is still a lower
  bound and pyiceberg writes upper bounds rounded up, so pruning stays safe; it only keeps more files.
  A file missing either bound of a column is never pruned on that column.

Example (needs a catalog with landed depth)::

    files = client._files.planned(table, snapshot_id)            # cached per snapshot
    paths = select_files(files, "BTCUSDT", above=5, through=90)  # only files that can hold those rows
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from k2.model.values import datetime_to_micros
from k2.query.files import PlannedFile

_UNKNOWN = (None, None)


def _may_hold(bounds: tuple[Any, Any], low: Any, high: Any) -> bool:
    """Whether a file with ``bounds`` may hold a value in [low, high] (None: unbounded on that end)."""
    lower, upper = bounds
    if low is not None and upper is not None and upper < low:
        return False
    return not (high is not None and lower is not None and lower > high)


def select_files(
    files: Sequence[PlannedFile],
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
        if _may_hold(f.bounds.get("symbol", _UNKNOWN), symbol, symbol)
        and _may_hold(f.bounds.get("last_update_id", _UNKNOWN), low, through)
        and _may_hold(f.bounds.get("exchange_ts", _UNKNOWN), None, until_us)
    ]
