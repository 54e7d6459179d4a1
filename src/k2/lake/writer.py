"""Appending Arrow data to K2's tables: sorted, typed, one atomic commit per call.

pyiceberg ignores the table sort order on write, so every batch is sorted here by the table's sort
columns before it is appended; within each written file rows are then ordered by (symbol, exchange
time), which is what makes DuckDB's min/max pruning effective.

Example:
    >>> import pyarrow as pa
    >>> sort_for_table(pa.table({"symbol": ["B", "A"], "exchange_ts": [1, 2], "trade_id": [1, 1]}), "trades")["symbol"].to_pylist()
    ['A', 'B']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.table import Table

from k2.lake.catalog import TABLES
from k2.lake.runs import append_runs


@dataclass
class Landed:
    """What one batch written by a direct (non-Kafka) writer became."""

    rows: int = 0  # rows committed
    duplicates: int = 0  # rows already in the table (or earlier in the batch): not written
    gaps: int = 0  # gaps opened in quality.gaps
    snapshot_id: int | None = None


def sort_for_table(data: pa.Table, short_name: str) -> pa.Table:
    """Sort rows by the table's sort columns (stable)."""
    columns = [c for c in TABLES[short_name].sort_columns if c in data.column_names]
    if data.num_rows <= 1 or not columns:
        return data
    return data.sort_by([(c, "ascending") for c in columns])


def conform(data: pa.Table, short_name: str) -> pa.Table:
    """Select and cast columns to the table's Arrow schema (raises on a missing message column).

    Table-side columns (lineage, ``RecordType.table_fields``) that ``data`` lacks are added as nulls:
    writers that know nothing of a row's origin (maintenance, replays of old rows) still append.
    """
    record = TABLES[short_name].record
    schema = record.table_arrow_schema()
    missing = [f.name for f in record.fields if f.name not in data.column_names]
    if missing:
        raise ValueError(
            f"expected columns {record.arrow_schema().names}, found {data.column_names} (missing {missing})"
        )
    for spec in record.table_fields:
        if spec.name not in data.column_names:
            data = data.append_column(spec.name, pa.nulls(data.num_rows, spec.arrow_type()))
    return data.select(schema.names).cast(schema)


def append(table: Table, data: pa.Table, short_name: str, properties: Mapping[str, str] | None = None) -> int:
    """Sort, conform and append ``data`` in one Iceberg commit; return the new snapshot id.

    ``properties`` go into the snapshot summary (K2 stores the Kafka offsets a commit covers there).
    Raises pyiceberg's ``CommitFailedException`` on a concurrent commit; callers that must not
    double-write refresh the table, re-check and retry (see :mod:`k2.landing`).
    """
    prepared = sort_for_table(conform(data, short_name), short_name)
    table.append(prepared, snapshot_properties=dict(properties or {}))
    snapshot = table.current_snapshot()
    assert snapshot is not None
    return int(snapshot.snapshot_id)


def is_sorted(data: pa.Table, short_name: str) -> bool:
    """Whether ``data`` is already in the table's sort order (checked column-wise, no copy)."""
    columns = [c for c in TABLES[short_name].sort_columns if c in data.column_names]
    n = data.num_rows
    if n <= 1:
        return True
    # Rows are in order when each adjacent pair is ordered lexicographically over the sort columns.
    undecided = np.ones(n - 1, dtype=bool)
    for name in columns:
        column = data.column(name).combine_chunks()
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            if column.null_count == 0 and pc.all(pc.equal(column, column[0])).as_py():
                continue  # one value (one symbol / interval): no order among rows
            values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=object)
        else:
            values = np.asarray(column.cast(pa.int64()) if pa.types.is_timestamp(column.type) else column)
        before, after = values[:-1], values[1:]
        if bool(np.any(undecided & (before > after))):
            return False
        undecided &= before == after
        if not undecided.any():
            return True
    return True


def append_sorted(table: Table, data: pa.Table, short_name: str, properties: Mapping[str, str]) -> int:
    """:func:`append`, skipping the sort (a full copy) when ``data`` is already in order (vendor files are).

    One symbol in time order is written as zero-copy partition runs (:mod:`k2.lake.runs`); anything
    else goes through :func:`append`. Same failure contract: ``CommitFailedException`` on a conflict.
    """
    if not is_sorted(data, short_name):
        return append(table, data, short_name, properties)
    prepared = conform(data, short_name)
    snapshot_id = append_runs(table, prepared, properties)
    if snapshot_id is None:
        table.append(prepared, snapshot_properties=dict(properties))
        snapshot = table.current_snapshot()
        assert snapshot is not None
        snapshot_id = int(snapshot.snapshot_id)
    return snapshot_id
