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

import pyarrow as pa
from pyiceberg.table import Table

from k2.lake.catalog import TABLES


def sort_for_table(data: pa.Table, short_name: str) -> pa.Table:
    """Sort rows by the table's sort columns (stable)."""
    columns = [c for c in TABLES[short_name].sort_columns if c in data.column_names]
    if data.num_rows <= 1 or not columns:
        return data
    return data.sort_by([(c, "ascending") for c in columns])


def conform(data: pa.Table, short_name: str) -> pa.Table:
    """Select and cast columns to the canonical Arrow schema of the table (raises on a missing column)."""
    schema = TABLES[short_name].record.arrow_schema()
    missing = [f.name for f in schema if f.name not in data.column_names]
    if missing:
        raise ValueError(f"expected columns {schema.names}, found {data.column_names} (missing {missing})")
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
