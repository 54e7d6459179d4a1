"""Parquet encodings of K2's data files: delta encoding for monotone columns, dictionaries for the rest.

pyarrow dictionary-encodes every column by default. For a column whose values are nearly all distinct and
rising by small steps (a Kafka offset, a producer's sequence number, a file's line number; in K2's sort
order also the times, ids and the trade and quote prices of a table) that is the worst choice: a
dictionary as large as the column plus ~2 bytes of index per row (measured on the demo capture: 2.8
bytes/row per lineage column), where ``DELTA_BINARY_PACKED`` stores the differences in a few bits.

pyiceberg (0.12) has no per-column encoding property, so :func:`install` wraps its writer-options
function once per process (through :mod:`k2.lake.compat`, the one module touching pyiceberg's
privates): the columns of :data:`DELTA_COLUMNS` (every table) and of the table's
:data:`DELTA_PROPERTY` (set by :mod:`k2.lake.catalog` from :data:`TABLE_DELTA_COLUMNS`) are written
``DELTA_BINARY_PACKED`` and every other column keeps dictionary encoding (``use_dictionary`` becomes the
list of their Parquet column paths, taken from the model). Readers need nothing: the encoding is recorded
in each column chunk.

Hazards: a column that is not in the model (a table evolved by hand) is written without dictionary
encoding (larger, still correct). The wrap touches a private pyiceberg function; when a pyiceberg
upgrade renames it, :func:`install` does nothing and files are written as before (larger files). Only
INT32/INT64 columns can be delta-encoded: every column named here is a time, an integer or a decimal(18, 8)
(stored as int64).

Example:
    >>> "lineage_offset" in DELTA_COLUMNS, "symbol" in dictionary_columns()
    (True, True)
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from functools import cache
from typing import Any

import pyarrow.parquet as pq

from k2.lake.compat import wrap_parquet_writer_options
from k2.model import RECORD_TYPES

#: Monotone integer columns written with DELTA_BINARY_PACKED instead of a dictionary, in every table.
DELTA_COLUMNS = ("lineage_offset", "lineage_sequence", "lineage_line")

#: The table property naming a table's own delta-encoded columns (comma-separated): the writer-options hook
#: only sees a table's properties, so this is how it knows which table it writes.
DELTA_PROPERTY = "k2.write.parquet.delta-columns"

#: Per table, the columns that rise by small steps in K2's sort order (symbol, time, id), chosen by
#: ``benchmarks/encoding_probe.py`` on the real captures (docs/performance.md): the times and ids, and a
#: trade's price (a random walk in ticks: 1.92 -> 1.67 B/row on the demo capture). A quote's prices gained
#: nothing; book deltas (5.7 B/row with dictionaries) gained 3%, not worth a slower read, and keep theirs.
TABLE_DELTA_COLUMNS: dict[str, tuple[str, ...]] = {
    "trades": ("exchange_ts", "receipt_ts", "ingest_ts", "trade_id", "price"),
    "quotes": ("exchange_ts", "receipt_ts", "ingest_ts", "update_id"),
}


@cache
def dictionary_columns() -> tuple[str, ...]:
    """Parquet column paths (nested ones dotted, as pyarrow names them) of every K2 table but the delta ones."""
    paths: set[str] = set()
    for record in RECORD_TYPES.values():
        buffer = io.BytesIO()
        pq.write_table(record.table_arrow_schema().empty_table(), buffer)
        schema = pq.ParquetFile(io.BytesIO(buffer.getvalue())).schema
        paths.update(schema.column(i).path for i in range(len(schema)))
    return tuple(sorted(p for p in paths if p not in DELTA_COLUMNS))


def delta_properties(short: str | None) -> dict[str, str]:
    """The table property that names table ``short``'s own delta columns (none for other tables).

    >>> delta_properties("quotes")[DELTA_PROPERTY], delta_properties("book_deltas")
    ('exchange_ts,receipt_ts,ingest_ts,update_id', {})
    """
    columns = TABLE_DELTA_COLUMNS.get(short or "")
    return {DELTA_PROPERTY: ",".join(columns)} if columns else {}


def delta_columns(table_properties: Mapping[str, str]) -> tuple[str, ...]:
    """The columns written DELTA_BINARY_PACKED in a table with these properties.

    >>> delta_columns({DELTA_PROPERTY: "exchange_ts,trade_id"})
    ('lineage_offset', 'lineage_sequence', 'lineage_line', 'exchange_ts', 'trade_id')
    """
    own = tuple(c for c in table_properties.get(DELTA_PROPERTY, "").split(",") if c)
    return DELTA_COLUMNS + own


def writer_options(options: dict[str, Any], table_properties: Mapping[str, str]) -> dict[str, Any]:
    """``options`` (pyarrow ParquetWriter keywords) with the table's delta columns and the dictionary list.

    pyarrow refuses a column encoding for a column with its dictionary on, so the delta columns leave the list.
    """
    delta = delta_columns(table_properties)
    return {
        **options,
        "use_dictionary": [c for c in dictionary_columns() if c not in delta],
        "column_encoding": dict.fromkeys(delta, "DELTA_BINARY_PACKED"),
    }


def install() -> None:
    """Make pyiceberg's Parquet writer use K2's encodings in this process (idempotent)."""
    wrap_parquet_writer_options(writer_options)
