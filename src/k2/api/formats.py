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
import re
from collections.abc import Generator, Iterator, Mapping
from typing import Any, Literal, TypeAlias

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


# Characters a JSON string must escape: such values take the per-value path (orjson).
_NEEDS_ESCAPE = re.compile(rb'[\x00-\x1f"\\]')


def _plain(strings: pa.Array) -> bool:
    """Whether no value of ``strings`` needs JSON escaping (one byte scan of the data buffer, no Arrow kernel).

    A sliced array's buffer also holds values outside the slice: a false "needs escaping" only sends the
    column down the slower per-value path, which gives the same text.
    """
    buffers = strings.buffers()
    data = buffers[2] if len(buffers) > 2 else None
    return data is None or _NEEDS_ESCAPE.search(memoryview(data)) is None


def _json_text(column: pa.Array) -> tuple[pa.Array, str, str]:
    """(text, before, after): the JSON of every non-null value is ``before + text + after`` (a string is
    ``"`` + value + ``"``); nulls stay null. Computed column-wise by Arrow (no per-row Python).

    Types without a vectorised form here (maps that are not empty, lists of non-strings, strings that need
    escaping) fall back to one ``orjson.dumps`` per value for that column only.
    """
    t = column.type
    if pa.types.is_integer(t):
        return pc.cast(column, pa.string()), "", ""
    if pa.types.is_boolean(t):
        return pc.if_else(column, "true", "false"), "", ""
    if pa.types.is_floating(t):
        finite = pc.if_else(pc.is_finite(column), pc.cast(column, pa.string()), pa.scalar(None, pa.string()))
        return finite, "", ""
    if pa.types.is_decimal(t) or pa.types.is_date(t):  # digits, '-', '.': nothing to escape
        return pc.cast(column, pa.string()), '"', '"'
    if pa.types.is_timestamp(t):
        text, suffix = _iso_parts(column)
        return text, '"', suffix + '"'
    if (pa.types.is_string(t) or pa.types.is_large_string(t)) and _plain(column):
        return column.cast(pa.string()), '"', '"'
    string_list = (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_string(t.value_type)
    if string_list and (not len(column) or _plain(pc.list_flatten(column))):
        joined = pc.binary_join(column.cast(pa.list_(pa.string())), '","')
        empty = pc.equal(pc.list_value_length(column), 0)
        return pc.if_else(empty, "[]", pc.binary_join_element_wise('["', joined, '"]', "")), "", ""
    if pa.types.is_map(t) and _all_empty(column):
        return (
            pc.if_else(pc.is_null(column), pa.scalar(None, pa.string()), pa.scalar("{}", pa.string())),
            "",
            "",
        )
    texts = [
        None if v is None else orjson.dumps(v, default=_json_default).decode() for v in _column_to_py(column)
    ]
    return pa.array(texts, pa.string()), "", ""


def _iso_parts(column: pa.Array) -> tuple[pa.Array, str]:
    """(text, suffix): ``2024-08-08T23:54:15.342000`` + ``Z`` per timestamp (the JSON time form), a dozen
    times faster than strftime.

    Arrow's cast of a UTC (or naive) microsecond timestamp to text is ``2024-08-08 23:54:15.342000`` (+ ``Z``
    when UTC); other zones and units take strftime (suffix "").
    """
    t = column.type
    if t.unit == "us" and t.tz in (None, "UTC", "Etc/UTC", "+00:00"):
        text = pc.utf8_replace_slice(pc.cast(column.cast(pa.timestamp("us")), pa.string()), 10, 11, "T")
        return text, "Z"
    stamps = pc.assume_timezone(column, "UTC") if t.tz is None else column
    return pc.strftime(stamps, format=_TS_FORMAT), ""


def _iso_times(column: pa.Array) -> pa.Array:
    """``2024-08-08T23:54:15.342000Z`` per timestamp (see :func:`_iso_parts`)."""
    text, suffix = _iso_parts(column)
    return pc.binary_join_element_wise(text, suffix, "") if suffix else text


def _all_empty(column: pa.Array) -> bool:
    """Whether every map of ``column`` is empty or null (from the offsets; maps have no length kernel)."""
    offsets = column.offsets
    return len(column) == 0 or offsets[len(offsets) - 1].as_py() == offsets[0].as_py()


class _Parts:
    """The arguments of one ``binary_join_element_wise``: text columns between literals (adjacent ones merged)."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def literal(self, text: str) -> None:
        if self.items and isinstance(self.items[-1], str):
            self.items[-1] += text
        else:
            self.items.append(text)

    def column(self, column: pa.Array) -> None:
        """The JSON of ``column``'s values; a column without nulls puts its quotes in the literals around it."""
        if column.null_count == len(column):
            self.literal("null")
            return
        text, before, after = _json_text(column)
        if text.null_count == 0:
            self.literal(before)
            self.items.append(text)
            self.literal(after)
        else:
            if before or after:
                text = pc.binary_join_element_wise(before, text, after, "")
            self.items.append(pc.fill_null(text, "null"))


def json_rows(batch: pa.RecordBatch) -> bytes:
    """The rows of ``batch`` as JSON objects joined by commas (no brackets): ``{"a":1},{"a":2}``.

    Every row is built as ``{...},`` by one Arrow join; the rows are contiguous in its data buffer, which is
    the body less its last comma (no join of the rows, no Python string).

    Example:
        >>> import decimal
        >>> json_rows(pa.record_batch({"p": pa.array([decimal.Decimal("1.5"), None], pa.decimal128(18, 8)), "s": ["x", "y"]}))
        b'{"p":"1.50000000","s":"x"},{"p":null,"s":"y"}'
    """
    if batch.num_rows == 0:
        return b""
    parts = _Parts()
    for index, name in enumerate(batch.schema.names):
        parts.literal(("{" if index == 0 else ",") + orjson.dumps(name).decode() + ":")
        parts.column(batch.column(index))
    parts.literal("},")
    if not any(isinstance(item, pa.Array) for item in parts.items):  # every column null: one row, repeated
        return (str(parts.items[0]) * batch.num_rows).encode()[:-1]
    rows = pc.binary_join_element_wise(*parts.items, "")
    _validity, offsets_buffer, data = rows.buffers()
    offsets = memoryview(offsets_buffer).cast("i")  # a string array's offsets are int32
    return memoryview(data)[offsets[rows.offset] : offsets[rows.offset + len(rows)] - 1].tobytes()


def _csv_ready(batch: pa.RecordBatch) -> pa.RecordBatch:
    # The CSV writer cannot write nested types (they become JSON text); times use the JSON ISO form.
    arrays = []
    fields = []
    for field, column in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_timestamp(field.type):
            column = _iso_times(column)
            field = pa.field(field.name, pa.string(), nullable=True)
        elif pa.types.is_nested(field.type):
            values = _column_to_py(column)
            column = pa.array(
                [None if v is None else orjson.dumps(v, default=_json_default).decode() for v in values],
                pa.string(),
            )
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


class LazyRows:
    """Rows produced while the body is sent: ``num_rows`` (known up front) rows of ``schema``, as the tables
    ``chunks`` yields. The producer of ``chunks`` must yield exactly ``num_rows`` rows (the headers said so);
    closing the body closes ``chunks``, so a client that leaves stops the producer.
    """

    def __init__(self, schema: pa.Schema, num_rows: int, chunks: Iterator[pa.Table]) -> None:
        self.schema = schema
        self.num_rows = num_rows
        self.chunks = chunks

    def close(self) -> None:
        close = getattr(self.chunks, "close", None)
        if close is not None:
            close()


Rows: TypeAlias = "pa.Table | LazyRows"


def _rebatch(rows: Rows) -> Generator[pa.RecordBatch, None, None]:
    # Results may arrive in many tiny chunks; re-slice into STREAM_BATCH_ROWS-row batches (one copy each).
    if isinstance(rows, LazyRows):
        try:
            for chunk in rows.chunks:
                yield from _rebatch(chunk)
        finally:
            rows.close()
        return
    for offset in range(0, rows.num_rows, STREAM_BATCH_ROWS):
        yield from rows.slice(offset, STREAM_BATCH_ROWS).combine_chunks().to_batches()


def encode(table: Rows, fmt: Format, envelope: Mapping[str, Any]) -> Iterator[bytes]:
    """Encode ``table`` (rows in memory, or :class:`LazyRows`) in ``fmt`` one record batch at a time.

    For JSON the body is ``{"data": [rows...], **envelope}`` (``envelope`` carries ``next_cursor``,
    ``snapshot_ids``...); other formats carry only the rows (the envelope travels in headers).
    """
    batches = _rebatch(table)
    try:
        yield from _encode(batches, table.schema, fmt, envelope)
    finally:
        batches.close()  # a client that left: stop the producer of lazy rows now, not at garbage collection


def _encode(
    batches: Iterator[pa.RecordBatch], schema: pa.Schema, fmt: Format, envelope: Mapping[str, Any]
) -> Iterator[bytes]:
    if fmt == "json":
        yield b'{"data":['
        first = True
        for batch in batches:
            if not batch.num_rows:
                continue
            # Column-wise JSON text (json_rows), joined to the previous batch by a comma.
            text = json_rows(batch)
            yield text if first else b"," + text
            first = False
        tail = orjson.dumps(dict(envelope), default=_json_default)
        yield b"]" + (b"," + tail[1:] if len(tail) > 2 else b"}")
    elif fmt == "csv":
        schema = _csv_ready(pa.RecordBatch.from_pylist([], schema=schema)).schema
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
        with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
            for batch in batches:
                writer.write_batch(batch)
                chunk = sink.drain()
                if chunk:
                    yield chunk
        yield sink.drain()
    else:
        sink = _Sink()
        with pa.ipc.new_stream(sink, schema) as stream:
            chunk = sink.drain()
            if chunk:
                yield chunk
            for batch in batches:
                stream.write_batch(batch)
                yield sink.drain()
        yield sink.drain()
