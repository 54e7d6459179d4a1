"""Parquet encodings of K2's data files: delta encoding for the monotone lineage columns.

pyarrow dictionary-encodes every column by default. For a column whose values are all distinct and
rising by small steps (a Kafka offset, a producer's sequence number, a file's line number) that is the
worst choice: a dictionary as large as the column plus ~2 bytes of index per row (measured on the demo
capture: 2.8 bytes/row per column), where ``DELTA_BINARY_PACKED`` stores the same column in ~0.01.

pyiceberg (0.12) has no per-column encoding property, so :func:`install` wraps its writer-options
function once per process (through :mod:`k2.lake.compat`, the one module touching pyiceberg's privates): columns named in :data:`DELTA_COLUMNS` are written ``DELTA_BINARY_PACKED``
and every other column of K2's tables keeps dictionary encoding (``use_dictionary`` becomes the list
of their Parquet column paths, taken from the model). Readers need nothing: the encoding is recorded
in each column chunk.

Hazards: a column that is not in the model (a table evolved by hand) is written without dictionary
encoding (larger, still correct). The wrap touches a private pyiceberg function; when a pyiceberg
upgrade renames it, :func:`install` does nothing and files are written as before (larger lineage).

Example:
    >>> "lineage_offset" in DELTA_COLUMNS, "symbol" in dictionary_columns()
    (True, True)
"""

from __future__ import annotations

import io
from functools import cache
from typing import Any

import pyarrow.parquet as pq

from k2.lake.compat import wrap_parquet_writer_options
from k2.model import RECORD_TYPES

#: Monotone integer columns written with DELTA_BINARY_PACKED instead of a dictionary.
DELTA_COLUMNS = ("lineage_offset", "lineage_sequence", "lineage_line")


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


def writer_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` (pyarrow ParquetWriter keywords) with the delta columns and dictionary list added."""
    return {
        **options,
        "use_dictionary": list(dictionary_columns()),
        "column_encoding": dict.fromkeys(DELTA_COLUMNS, "DELTA_BINARY_PACKED"),
    }


def install() -> None:
    """Make pyiceberg's Parquet writer use K2's encodings in this process (idempotent)."""
    wrap_parquet_writer_options(writer_options)
