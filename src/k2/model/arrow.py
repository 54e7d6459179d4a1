"""Columnar conversion of canonical records (wire form) to Arrow and back, without per-value Decimal objects.

*Wire form* is how K2 passes records between stages in Python: a dict per record with decimals as
unscaled integers (x 10**8), timestamps as integer microseconds since the epoch (UTC), dates as
``datetime.date``, ``conditions`` as a list of strings and ``vendor`` as a dict of strings.

Example:
    >>> from k2.model import TRADE
    >>> t = decimal_array([6183763000000, None])
    >>> t.to_pylist()
    [Decimal('61837.63000000'), None]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from k2.model.schema import PRICE_PRECISION, PRICE_SCALE, RecordType

DECIMAL_TYPE = pa.decimal128(PRICE_PRECISION, PRICE_SCALE)


def decimal_array(unscaled: Sequence[int | None] | pa.Array) -> pa.Array:
    """A ``decimal128(18, 8)`` array from unscaled integers (None for null), built from buffers."""
    ints = unscaled if isinstance(unscaled, pa.Array) else pa.array(unscaled, type=pa.int64())
    if isinstance(ints, pa.ChunkedArray):
        ints = ints.combine_chunks()
    n = len(ints)
    validity, data = ints.buffers()[0], ints.buffers()[1]
    low = (
        np.frombuffer(data, dtype=np.int64, count=n + ints.offset)[ints.offset :]
        if data is not None
        else np.zeros(n, np.int64)
    )
    wide = np.empty(2 * n, dtype=np.int64)
    wide[0::2] = low
    wide[1::2] = low >> 63  # sign extension into the high 64 bits
    if validity is not None and ints.offset:
        validity = pa.array(ints.is_valid()).buffers()[1]
    return pa.Array.from_buffers(DECIMAL_TYPE, n, [validity, pa.py_buffer(wide)], null_count=ints.null_count)


def decimal_list_array(values: Sequence[Sequence[int] | None]) -> pa.Array:
    """A ``list<decimal128(18, 8)>`` array from lists of unscaled integers (None for a null list).

    >>> decimal_list_array([[100000000, 250000000], []]).to_pylist()
    [[Decimal('1.00000000'), Decimal('2.50000000')], []]
    """
    lengths = [0 if v is None else len(v) for v in values]
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = decimal_array([x for v in values if v is not None for x in v])
    mask = pa.array([v is None for v in values], type=pa.bool_()) if any(v is None for v in values) else None
    list_type = pa.list_(pa.field("element", DECIMAL_TYPE, nullable=False))
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), flat, type=list_type, mask=mask)


def unscaled_from_decimal(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The unscaled int64 values of a ``decimal128(18, 8)`` array (nulls become 0)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    wide = np.frombuffer(array.buffers()[1], dtype=np.int64, count=2 * (len(array) + array.offset))
    return wide[0::2][array.offset :].copy()


def column_to_arrow(kind: str, values: list[Any]) -> pa.Array:
    """Build one Arrow column of the given canonical kind from wire-form values."""
    if kind == "decimal":
        return decimal_array(values)
    if kind == "timestamp":
        return pa.array(values, type=pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    if kind == "string":
        return pa.array(values, type=pa.string())
    if kind == "long":
        return pa.array(values, type=pa.int64())
    if kind == "date":
        return pa.array(values, type=pa.date32())
    if kind == "boolean":
        return pa.array(values, type=pa.bool_())
    if kind == "string_list":
        return pa.array(values, type=pa.list_(pa.field("element", pa.string(), nullable=False)))
    if kind == "string_map":
        return pa.array(
            [list(v.items()) if isinstance(v, dict) else v for v in values],
            type=pa.map_(pa.string(), pa.field("value", pa.string(), nullable=False)),
        )
    if kind == "decimal_list":
        return decimal_list_array(values)
    raise ValueError(f"expected a canonical field kind, found {kind!r}")


def records_to_arrow(record: RecordType, rows: Sequence[dict[str, Any]]) -> pa.Table:
    """A table with ``record``'s canonical Arrow schema from wire-form dicts.

    >>> from k2.model import TRADE
    >>> row = dict(exchange="binance", symbol="BTCUSDT", instrument="BTC-USDT", asset_class="crypto",
    ...     trade_id=1, price=100000000, quantity=1, quote_quantity=None, side="BUY", exchange_ts=0,
    ...     receipt_ts=0, ingest_ts=0, source_sequence=None, conditions=[], vendor={})
    >>> records_to_arrow(TRADE, [row])["price"].to_pylist()
    [Decimal('1.00000000')]
    """
    arrays = [column_to_arrow(spec.kind, [r.get(spec.name) for r in rows]) for spec in record.fields]
    return pa.Table.from_arrays(arrays, schema=record.arrow_schema())


def columns_to_arrow(record: RecordType, columns: dict[str, list[Any]]) -> pa.Table:
    """Like :func:`records_to_arrow` but from column lists (faster for bulk sources)."""
    arrays = [column_to_arrow(spec.kind, columns[spec.name]) for spec in record.fields]
    return pa.Table.from_arrays(arrays, schema=record.arrow_schema())


def arrow_to_records(record: RecordType, table: pa.Table) -> list[dict[str, Any]]:
    """Wire-form dicts (unscaled decimals, integer micros, dict vendor, list conditions) of a table of
    ``record``: the inverse of :func:`records_to_arrow` (the producer's input for stored or imported rows).

    >>> from k2.model import TRADE
    >>> row = dict(exchange="binance", symbol="BTCUSDT", instrument="BTC-USDT", asset_class="crypto", trade_id=1,
    ...     price=6183763000000, quantity=2000000, quote_quantity=None, side="SELL", exchange_ts=5, receipt_ts=6,
    ...     ingest_ts=7, source_sequence=1, conditions=["BEST_MATCH"], vendor={"E": "9"}, currency="USDT")
    >>> arrow_to_records(TRADE, records_to_arrow(TRADE, [row])) == [row]
    True
    """
    columns: dict[str, list[Any]] = {}
    for spec in record.fields:
        column = table.column(spec.name)
        if spec.kind == "decimal":
            valid = np.asarray(column.is_valid())
            values = unscaled_from_decimal(column).tolist()
            columns[spec.name] = (
                [v if ok else None for v, ok in zip(values, valid, strict=True)]
                if not valid.all()
                else values
            )
        elif spec.kind == "timestamp":
            columns[spec.name] = column.cast(pa.int64()).to_pylist()
        elif spec.kind == "string_map":
            columns[spec.name] = [dict(v) if v is not None else {} for v in column.to_pylist()]
        elif spec.kind == "string_list":
            columns[spec.name] = [v if v is not None else [] for v in column.to_pylist()]
        else:
            columns[spec.name] = column.to_pylist()
    names = list(columns)
    return [
        dict(zip(names, values, strict=True)) for values in zip(*(columns[n] for n in names), strict=True)
    ]
