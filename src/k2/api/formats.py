"""Response formats: JSON (default), CSV, Parquet and Arrow IPC, streamed one record batch at a time.

The format comes from ``format=`` when given, otherwise from the ``Accept`` header (``*/*`` or no
header means JSON); anything else is 406 ``not_acceptable``. Bodies are produced by generators that
encode one record batch (``STREAM_BATCH_ROWS`` rows) at a time, so the encoded response is never
held in memory as a whole.

Value conventions: JSON and CSV carry exact decimals as strings (``"61837.63000000"``) and times as
ISO-8601 UTC (``"2024-08-08T23:54:15.342000Z"``); lists and maps are JSON arrays and objects (JSON
text inside a CSV cell). Parquet and Arrow keep the native types (``decimal128(18, 8)``,
``timestamp[us, tz=UTC]``).

Example:
    >>> import pyarrow as pa
    >>> b"".join(encode(pa.table({"x": [1, 2]}), "csv", {})).decode()
    '"x"\\n1\\n2\\n'
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from k2.api.errors import APIError

Format = Literal["json", "csv", "parquet", "arrow"]
FORMATS: tuple[Format, ...] = ("json", "csv", "parquet", "arrow")
MEDIA_TYPES: dict[Format, str] = {
    "json": "application/json",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.stream",
}
# Accepted aliases in Accept headers.
_ACCEPT_ALIASES: dict[str, Format] = {
    "application/json": "json",
    "text/csv": "csv",
    "application/csv": "csv",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
    "application/parquet": "parquet",
    "application/vnd.apache.arrow.stream": "arrow",
    "application/vnd.apache.arrow.file": "arrow",
    "application/x-arrow": "arrow",
}
STREAM_BATCH_ROWS = 4096
# %S prints the fractional seconds of a microsecond timestamp: 2024-08-08T23:54:15.342000Z.
_TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def negotiate(format_param: str | None, accept: str | None) -> Format:
    """The response format for a request (``format=`` wins over ``Accept``).

    Example:
        >>> negotiate(None, "text/csv;q=0.9, application/json;q=0.5")
        'csv'
        >>> negotiate("arrow", "text/csv")
        'arrow'
    """
    if format_param is not None:
        if format_param not in FORMATS:
            raise APIError(
                406,
                "not_acceptable",
                f"format: expected one of {list(FORMATS)}, found {format_param[:100]!r}",
                {"parameter": "format", "supported": list(FORMATS)},
            )
        return format_param
    if not accept or not accept.strip():
        return "json"
    choices: list[tuple[float, int, Format]] = []
    for index, part in enumerate(accept.split(",")):
        pieces = [p.strip() for p in part.split(";")]
        media = pieces[0].lower()
        q = 1.0
        for param in pieces[1:]:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
                if math.isnan(q):
                    q = 0.0
        if q <= 0:
            continue
        if media in ("*/*", "application/*", ""):
            choices.append((q, index, "json"))
        elif media == "text/*":
            choices.append((q, index, "csv"))
        elif media in _ACCEPT_ALIASES:
            choices.append((q, index, _ACCEPT_ALIASES[media]))
    if not choices:
        raise APIError(
            406,
            "not_acceptable",
            f"Accept: expected one of {sorted(set(MEDIA_TYPES.values()))} (or format=json|csv|parquet|arrow), found {accept[:200]!r}",
            {"header": "Accept", "supported": sorted(set(MEDIA_TYPES.values()))},
        )
    choices.sort(key=lambda c: (-c[0], c[1]))
    return choices[0][2]


def _column_to_py(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    t = column.type
    if pa.types.is_decimal(t):
        return pc.cast(column, pa.string()).to_pylist()
    if pa.types.is_timestamp(t):
        if t.tz is None:
            column = pc.assume_timezone(column, "UTC")
        return pc.strftime(column, format=_TS_FORMAT).to_pylist()
    if pa.types.is_date(t):
        return [None if v is None else v.isoformat() for v in column.to_pylist()]
    if pa.types.is_map(t):
        return [None if v is None else dict(v) for v in column.to_pylist()]
    if pa.types.is_floating(t):
        return [None if v is None or math.isnan(v) or math.isinf(v) else v for v in column.to_pylist()]
    if pa.types.is_list(t) and pa.types.is_decimal(t.value_type):
        return [None if v is None else [str(x) for x in v] for v in column.to_pylist()]
    return column.to_pylist()


def batch_rows(batch: pa.RecordBatch | pa.Table) -> list[dict[str, Any]]:
    """Rows of ``batch`` as JSON-ready dicts (decimals and times as strings, maps as dicts).

    Example:
        >>> import decimal
        >>> batch_rows(pa.table({"p": pa.array([decimal.Decimal("1.5")], pa.decimal128(18, 8))}))
        [{'p': '1.50000000'}]
    """
    names = batch.schema.names
    columns = [_column_to_py(batch.column(i)) for i in range(len(names))]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def _json_default(value: Any) -> Any:
    return str(value)


def _csv_ready(batch: pa.RecordBatch) -> pa.RecordBatch:
    # The CSV writer cannot write nested types (they become JSON text); times use the JSON ISO form.
    arrays = []
    fields = []
    for field, column in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_timestamp(field.type):
            if field.type.tz is None:
                column = pc.assume_timezone(column, "UTC")
            column = pc.strftime(column, format=_TS_FORMAT)
            field = pa.field(field.name, pa.string(), nullable=True)
        elif pa.types.is_nested(field.type):
            values = _column_to_py(column)
            column = pa.array([None if v is None else orjson.dumps(v, default=_json_default).decode() for v in values], pa.string())
            field = pa.field(field.name, pa.string(), nullable=True)
        arrays.append(column)
        fields.append(field)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


class _Sink(io.RawIOBase):
    """A write-only file that hands out what was written since the last ``drain``."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        return len(chunk)

    def drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def _rebatch(table: pa.Table) -> Iterator[pa.RecordBatch]:
    # Results may arrive in many tiny chunks; re-slice into STREAM_BATCH_ROWS-row batches (one copy each).
    for offset in range(0, table.num_rows, STREAM_BATCH_ROWS):
        yield from table.slice(offset, STREAM_BATCH_ROWS).combine_chunks().to_batches()


def encode(table: pa.Table, fmt: Format, envelope: Mapping[str, Any]) -> Iterator[bytes]:
    """Encode ``table`` in ``fmt`` one record batch at a time.

    For JSON the body is ``{"data": [rows...], **envelope}`` (``envelope`` carries ``next_cursor``,
    ``snapshot_ids``...); other formats carry only the rows (the envelope travels in headers).
    """
    batches = _rebatch(table)
    if fmt == "json":
        yield b'{"data":['
        first = True
        for batch in batches:
            rows = batch_rows(batch)
            if not rows:
                continue
            # One orjson call per batch: "[...]" without its brackets, joined to the previous batch by a comma.
            text = orjson.dumps(rows, default=_json_default)[1:-1]
            yield text if first else b"," + text
            first = False
        tail = orjson.dumps(dict(envelope), default=_json_default)
        yield b"]" + (b"," + tail[1:] if len(tail) > 2 else b"}")
    elif fmt == "csv":
        schema = _csv_ready(pa.RecordBatch.from_pylist([], schema=table.schema)).schema
        header = True
        for batch in batches:
            buf = io.BytesIO()
            pacsv.write_csv(_csv_ready(batch).cast(schema), buf, pacsv.WriteOptions(include_header=header))
            header = False
            yield buf.getvalue()
        if header:  # no rows: the header alone
            buf = io.BytesIO()
            pacsv.write_csv(pa.table({n: pa.array([], pa.string()) for n in schema.names}), buf)
            yield buf.getvalue()
    elif fmt == "parquet":
        sink = _Sink()
        with pq.ParquetWriter(sink, table.schema, compression="zstd") as writer:
            for batch in batches:
                writer.write_batch(batch)
                chunk = sink.drain()
                if chunk:
                    yield chunk
        yield sink.drain()
    else:
        sink = _Sink()
        with pa.ipc.new_stream(sink, table.schema) as stream:
            chunk = sink.drain()
            if chunk:
                yield chunk
            for batch in batches:
                stream.write_batch(batch)
                yield sink.drain()
        yield sink.drain()
