"""Confluent-framed Avro straight from an Arrow table of canonical columns (no dict rows in between).

:func:`encode_table` gives, for each row of a table in K2's canonical Arrow schema (:mod:`k2.model.arrow`:
``decimal128(18, 8)``, ``timestamp[us]``, strings, ``list<string>``, ``map<string, string>``), exactly the
bytes :func:`k2.bus.avro_encode.encode_batch` (and fastavro) writes for the row's wire form: integers,
decimals and times are read from the Arrow buffers by numpy, strings from Arrow's offsets and data, so
there is no Python object per value. Callers that hold Arrow (the file importer) skip both the Arrow ->
dict conversion and the dict -> column transpose of the row path.

Hazards: a column of another type than the canonical one (a ``timestamp[ms]``, a ``decimal128(38, 10)``,
a missing field), a null in a required field, or a null map (the row path writes it as ``{}``) raises
:class:`k2.bus.avro_encode.NotUniform`, before anything is encoded; the caller then sends wire-form rows.
Extra columns are ignored. ``fill`` replaces nulls (or a missing column) of a long/timestamp field, as
``encode_batch``'s does.

Example:
    >>> _ints(pa.array([1, None, 3]), 7).tolist()
    [1, 7, 3]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from k2.bus.avro_encode import (
    NotUniform,
    Part,
    block_rows,
    decimal_parts,
    header_part,
    interleave,
    messages,
    optional_parts,
    string_parts,
    zigzag_varints,
)
from k2.model import RecordType
from k2.model.arrow import unscaled_from_decimal


def _ints(column: pa.Array, fill: Any = None) -> np.ndarray:
    """int64 values of an integer or ``timestamp[us]`` column (nulls replaced by ``fill``)."""
    if pa.types.is_timestamp(column.type):
        if column.type.unit != "us":
            raise NotUniform(f"expected timestamp[us], found {column.type}")
    elif not pa.types.is_integer(column.type):
        raise NotUniform(f"expected integers, found {column.type}")
    ints = column.cast(pa.int64())
    if fill is not None and ints.null_count:
        ints = pc.fill_null(ints, fill)
    return np.asarray(ints.to_numpy(zero_copy_only=False), dtype=np.int64)


def _strings(column: pa.Array) -> list[Part]:
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise NotUniform(f"expected strings, found {column.type}")
    return string_parts(column.cast(pa.string()) if pa.types.is_large_string(column.type) else column)


def _window(column: pa.Array) -> tuple[np.ndarray, int, int]:
    """Entries per row of a list or map column, and where its (unsliced) children start and end."""
    offsets = np.asarray(column.offsets, dtype=np.int64)
    return np.diff(offsets), int(offsets[0]), int(offsets[-1])


def _list_parts(column: pa.Array) -> Part:
    if not (pa.types.is_list(column.type) and pa.types.is_string(column.type.value_type)):
        raise NotUniform(f"expected list<string>, found {column.type}")
    counts, start, end = _window(column)
    if end == start:
        return np.zeros(len(column), dtype=np.uint8), np.ones(len(column), dtype=np.int64)
    flat = column.values.slice(start, end - start)
    return block_rows(counts, counts, interleave(_strings(flat), end - start), len(column))


def _map_parts(column: pa.Array) -> Part:
    if not (
        pa.types.is_map(column.type)
        and pa.types.is_string(column.type.key_type)
        and pa.types.is_string(column.type.item_type)
    ):
        raise NotUniform(f"expected map<string, string>, found {column.type}")
    counts, start, end = _window(column)
    if end == start:
        return np.zeros(len(column), dtype=np.uint8), np.ones(len(column), dtype=np.int64)
    keys, items = column.keys.slice(start, end - start), column.items.slice(start, end - start)
    entries = interleave([*_strings(keys), *_strings(items)], end - start)
    return block_rows(counts, counts, entries, len(column))


def _inner(kind: str, column: pa.Array) -> list[Part]:
    if kind in ("long", "timestamp"):
        return [zigzag_varints(_ints(column))]
    if kind == "decimal":
        if column.type != pa.decimal128(18, 8):
            raise NotUniform(f"expected decimal128(18, 8), found {column.type}")
        return decimal_parts(unscaled_from_decimal(column))
    if kind == "string":
        return _strings(column)
    if kind == "boolean":
        if not pa.types.is_boolean(column.type):
            raise NotUniform(f"expected booleans, found {column.type}")
        values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.uint8)
        return [(values, np.ones(len(values), dtype=np.int64))]
    if kind == "string_list":
        return [_list_parts(column)]
    if kind == "string_map":
        return [_map_parts(column)]
    raise NotUniform(f"no vectorised encoding for kind {kind!r}")


def _column_parts(kind: str, required: bool, column: pa.Array, name: str) -> list[Part]:
    n = len(column)
    if required and column.null_count:
        raise NotUniform(f"{name}: expected no nulls, found {column.null_count}")
    try:
        if required or not column.null_count:
            inner = _inner(kind, column)
            if required:
                return inner
            return [(np.full(n, 2, dtype=np.uint8), np.ones(n, dtype=np.int64)), *inner]
        present = np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        return optional_parts(present, _inner(kind, column.drop_null()))
    except NotUniform as exc:
        raise NotUniform(f"{name}: {exc}") from None


def encode_table(
    record: RecordType, header: bytes, table: pa.Table, fill: Mapping[str, Any] | None = None
) -> list[bytes]:
    """Each row's Confluent-framed Avro bytes (header + body) from canonical Arrow columns; NotUniform if not."""
    n = table.num_rows
    if n == 0:
        return []
    fill = fill or {}
    parts: list[Part] = [header_part(header, n)]
    names = set(table.column_names)
    for field in record.fields:
        if field.name in names:
            column = table.column(field.name).combine_chunks()
        elif field.name in fill:
            column = pa.nulls(n, pa.int64())
        else:
            raise NotUniform(f"{field.name}: expected the column, found none")
        if fill.get(field.name) is not None and column.null_count:
            try:
                column = pa.array(_ints(column, fill[field.name]))
            except NotUniform as exc:
                raise NotUniform(f"{field.name}: {exc}") from None
        parts.extend(_column_parts(field.kind, field.required, column, field.name))
    return messages(parts, n)
