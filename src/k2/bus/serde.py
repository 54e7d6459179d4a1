"""Avro in the Confluent wire format (magic byte 0, 4-byte schema id, Avro body), fast paths both ways.

Encoding takes wire-form records (see :mod:`k2.model.arrow`): decimals are unscaled integers, which
are turned into Avro ``decimal`` bytes directly, with no ``Decimal`` object per value. Decoding uses a
*raw* reader schema (logical types stripped) so fastavro hands back integers and bytes, and builds
Arrow columns from them; schema evolution still works because the writer schema is fetched by id and
resolved against the reader schema.

The bytes are readable by any Confluent-compatible consumer (``AvroDeserializer`` gives ``Decimal``
and ``datetime`` values); a test checks that.

Example:
    >>> header(7)
    b'\\x00\\x00\\x00\\x00\\x07'
"""

from __future__ import annotations

import copy
import io
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fastavro
import numpy as np
import pyarrow as pa
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from k2.bus.avro_columns import encode_table
from k2.bus.avro_encode import NotUniform, encode_batch
from k2.model import RecordType
from k2.model.arrow import column_to_arrow

MAGIC = 0
_HEADER = struct.Struct(">bI")


class RegistryUnavailableError(RuntimeError):
    """The schema registry could not answer (as opposed to answering "no such schema")."""


class DecodeError(ValueError):
    """A message could not be decoded; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def header(schema_id: int) -> bytes:
    """The 5-byte Confluent wire-format header for a schema id."""
    return _HEADER.pack(MAGIC, schema_id)


def subject_for(topic: str) -> str:
    """Confluent TopicNameStrategy subject of a topic's values."""
    return f"{topic}-value"


def _strip_logical(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {
            k: _strip_logical(v) for k, v in schema.items() if k not in ("logicalType", "precision", "scale")
        }
        return out
    if isinstance(schema, list):
        return [_strip_logical(s) for s in schema]
    return schema


def _shape(schema: Any) -> Any:
    """A schema without documentation, for comparing two schemas' encodings."""
    if isinstance(schema, dict):
        return {k: _shape(v) for k, v in schema.items() if k not in ("doc", "namespace")}
    if isinstance(schema, list):
        return [_shape(s) for s in schema]
    return schema


def _decimal_bytes(unscaled: int) -> bytes:
    return unscaled.to_bytes((unscaled.bit_length() + 8) // 8 or 1, "big", signed=True)


def registry_client(url: str) -> SchemaRegistryClient:
    """A confluent-kafka registry client for ``url``."""
    return SchemaRegistryClient({"url": url})


class AvroEncoder:
    """Encode wire-form records of one record type for one topic (registers the schema on creation)."""

    def __init__(self, registry: SchemaRegistryClient, record: RecordType, topic: str) -> None:
        self.record = record
        self.topic = topic
        schema = record.avro_schema()
        try:
            self.schema_id = registry.register_schema(subject_for(topic), Schema(json.dumps(schema), "AVRO"))
        except SchemaRegistryError:
            raise  # the registry answered (e.g. incompatible schema): its own error says why
        except Exception as exc:  # no answer at all: say which registry, not a transport traceback
            url = getattr(registry, "_rest_client", None)
            where = getattr(url, "base_urls", None) or "the configured K2_SCHEMA_REGISTRY_URL"
            raise RegistryUnavailableError(
                f"expected a schema registry at {where}, found none answering registering {record.name} "
                f"for {topic} ({type(exc).__name__}: {exc}); start the local stack with `k2 up` or set "
                "K2_SCHEMA_REGISTRY_URL"
            ) from exc
        self._parsed = fastavro.parse_schema(schema)
        self._header = header(self.schema_id)
        self._decimal_fields = [f.name for f in record.fields if f.kind == "decimal"]

    def encode(self, row: dict[str, Any]) -> bytes:
        """Encode one record; decimals given as unscaled ints (Decimal also accepted)."""
        prepared = dict(row)
        for name in self._decimal_fields:
            value = prepared.get(name)
            if isinstance(value, int):
                prepared[name] = _decimal_bytes(value)
        buffer = io.BytesIO()
        buffer.write(self._header)
        fastavro.schemaless_writer(buffer, self._parsed, prepared)
        return buffer.getvalue()

    def encode_table(self, table: pa.Table, fill: Mapping[str, Any] | None = None) -> list[bytes]:
        """Encode canonical Arrow rows column-wise (:func:`k2.bus.avro_columns.encode_table`, the same bytes
        as :meth:`encode_many` of their wire form); raises NotUniform (nothing encoded) if it cannot."""
        return encode_table(self.record, self._header, table, fill)

    def encode_many(
        self, rows: Sequence[dict[str, Any]], fill: Mapping[str, Any] | None = None
    ) -> list[bytes]:
        """Encode a batch: column-wise (:mod:`k2.bus.avro_encode`, the same bytes) when the rows are uniform
        wire-form records (decimals as unscaled ints), else row by row. ``fill``: values for fields a row
        lacks or holds as None (see :func:`k2.bus.avro_encode.encode_batch`)."""
        try:
            return encode_batch(self.record, self._header, rows, fill)
        except NotUniform:
            pass
        if fill:
            rows = [
                row
                if all(row.get(k) is not None for k in fill)
                else {**row, **{k: v for k, v in fill.items() if row.get(k) is None}}
                for row in rows
            ]
        return [self.encode(row) for row in rows]


@dataclass
class DecodedBatch:
    """Result of decoding a batch: an Arrow table of the good messages and the failures.

    ``indices[i]`` is the position in the input of the table's row ``i``; ``failures`` holds
    ``(position, DecodeError)`` for every message that could not be decoded.
    """

    table: pa.Table
    indices: list[int] | np.ndarray
    failures: list[tuple[int, DecodeError]]


class AvroBatchDecoder:
    """Decode Confluent-framed Avro messages of one record type into Arrow, in batches."""

    def __init__(self, registry: SchemaRegistryClient, record: RecordType, fast: bool = True) -> None:
        self.registry = registry
        self.record = record
        self.fast = fast
        self._block: Any = None
        self._canonical: dict[int, bool] = {}
        self._reader = fastavro.parse_schema(_strip_logical(record.avro_schema()))
        self._writers: dict[int, Any] = {}
        self._kinds = [(f.name, f.kind) for f in record.fields]

    def _writer_schema(self, schema_id: int) -> Any:
        parsed = self._writers.get(schema_id)
        if parsed is None:
            try:
                schema = self.registry.get_schema(schema_id)
            except SchemaRegistryError as exc:
                if exc.http_status_code == 404:  # the registry says no such id: the message's fault
                    raise DecodeError(
                        "unknown_schema_id", f"expected a registered schema id, found {schema_id}"
                    ) from None
                raise RegistryUnavailableError(
                    f"schema registry failed looking up id {schema_id}: {exc}"
                ) from exc
            # An unreachable registry: not the message's fault, never dead-letter for it.
            except Exception as exc:
                raise RegistryUnavailableError(
                    f"schema registry unreachable looking up id {schema_id}: {exc}"
                ) from exc
            if schema.schema_type not in (None, "AVRO"):
                raise DecodeError("wrong_schema_type", f"expected AVRO, found {schema.schema_type}")
            writer = json.loads(schema.schema_str or "{}")
            if writer.get("name") != self.record.name:
                raise DecodeError(
                    "wrong_record", f"expected record {self.record.name}, found {writer.get('name')}"
                )
            parsed = self._writers[schema_id] = fastavro.parse_schema(_strip_logical(copy.deepcopy(writer)))
        return parsed

    def decode_one(self, value: bytes | None) -> dict[str, Any]:
        """Decode one message to a raw dict (decimals as bytes, timestamps as ints)."""
        if value is None or len(value) < 5:
            raise DecodeError(
                "truncated", f"expected at least 5 bytes, found {0 if value is None else len(value)}"
            )
        magic, schema_id = _HEADER.unpack_from(value)
        if magic != MAGIC:
            raise DecodeError("bad_magic", f"expected magic byte 0, found {magic}")
        writer = self._writer_schema(schema_id)
        stream = io.BytesIO(value)
        stream.seek(5)
        try:
            row = fastavro.schemaless_reader(stream, writer, self._reader)
        except Exception as exc:
            raise DecodeError("avro_decode", f"{type(exc).__name__}: {exc}") from None
        if stream.tell() != len(value):
            raise DecodeError("trailing_bytes", f"expected {stream.tell()} bytes, found {len(value)}")
        return row  # type: ignore[return-value]

    def _is_canonical(self, schema_id: int) -> bool:
        verdict = self._canonical.get(schema_id)
        if verdict is None:
            try:
                writer = json.loads(self.registry.get_schema(schema_id).schema_str or "{}")
            except Exception:
                return False
            verdict = self._canonical[schema_id] = _shape(writer) == _shape(self.record.avro_schema())
        return verdict

    def decode(self, values: Sequence[bytes | None]) -> DecodedBatch:
        """Decode a batch; undecodable messages are returned as failures, never raised.

        Messages written with the canonical schema go through the fast block path
        (:mod:`k2.bus.avro_block`); everything else, and any block the fast path cannot prove
        correct, is decoded message by message.
        """
        uniform = self._decode_uniform(values)
        if uniform is not None:
            return uniform
        return self._decode_groups(values, try_block=self.fast)

    def _decode_uniform(self, values: Sequence[bytes | None]) -> DecodedBatch | None:
        """The common case in one go: every message framed with the same canonical schema id.

        Headers are checked and stripped with numpy on the concatenated values, so the only per-message
        Python work is ``len``; None when the batch is not uniform or the block decoder cannot prove it.
        """
        n = len(values)
        if not self.fast or n < 64:
            return None
        try:
            lengths = np.fromiter(map(len, values), dtype=np.int64, count=n)  # type: ignore[arg-type]
            joined = b"".join(values)  # type: ignore[arg-type]
        except TypeError:  # a None value somewhere
            return None
        if int(lengths.min()) < 5:
            return None
        blob = np.frombuffer(joined, dtype=np.uint8)
        starts = np.cumsum(lengths) - lengths
        header_at = starts[:, None] + np.arange(5)
        heads = blob[header_at]
        if not (heads == heads[0]).all() or heads[0, 0] != MAGIC:
            return None
        schema_id = _HEADER.unpack(heads[0].tobytes())[1]
        try:
            self._writer_schema(schema_id)
        except DecodeError:
            return None
        if not self._is_canonical(schema_id):
            return None
        keep = np.ones(blob.size, dtype=bool)
        keep[header_at.ravel()] = False
        if self._block is None:
            from k2.bus.avro_block import BlockDecoder

            self._block = BlockDecoder(self.record)
        try:
            table = self._block.decode_joined(blob[keep].tobytes(), lengths - 5)
        except ValueError:  # BlockMismatch: the per-group path isolates the bad messages
            return None
        return DecodedBatch(table, np.arange(n, dtype=np.int64), [])

    def _decode_groups(self, values: Sequence[bytes | None], try_block: bool) -> DecodedBatch:
        groups: dict[bytes, list[int]] = {}
        failures: list[tuple[int, DecodeError]] = []
        for position, value in enumerate(values):
            if value is None or len(value) < 5:
                failures.append(
                    (
                        position,
                        DecodeError(
                            "truncated",
                            f"expected at least 5 bytes, found {0 if value is None else len(value)}",
                        ),
                    )
                )
            elif value[0] != MAGIC:
                failures.append(
                    (position, DecodeError("bad_magic", f"expected magic byte 0, found {value[0]}"))
                )
            else:
                groups.setdefault(bytes(value[:5]), []).append(position)
        tables: list[pa.Table] = []
        indices: list[int] = []
        for head, positions in groups.items():
            schema_id = _HEADER.unpack(head)[1]
            try:
                self._writer_schema(schema_id)  # one registry look-up per schema id and batch
            except DecodeError as exc:
                failures.extend((i, exc) for i in positions)
                continue
            if try_block and len(positions) >= 64 and self._is_canonical(schema_id):
                if self._block is None:
                    from k2.bus.avro_block import BlockDecoder

                    self._block = BlockDecoder(self.record)
                try:
                    tables.append(self._block.decode([values[i][5:] for i in positions]))  # type: ignore[index]
                    indices.extend(positions)
                    continue
                except ValueError:
                    pass  # BlockMismatch: fall back to per-message decoding for this group
            batch = self._decode_each([values[i] for i in positions])
            tables.append(batch.table)
            indices.extend(positions[i] for i in batch.indices)
            failures.extend((positions[i], err) for i, err in batch.failures)
        failures.sort(key=lambda f: f[0])
        if not tables:
            return DecodedBatch(self.record.arrow_schema().empty_table(), [], failures)
        return DecodedBatch(pa.concat_tables(tables) if len(tables) > 1 else tables[0], indices, failures)

    def _decode_each(self, values: Sequence[bytes | None]) -> DecodedBatch:
        """Per-message decoding (isolates malformed messages)."""
        rows: list[dict[str, Any]] = []
        indices: list[int] = []
        failures: list[tuple[int, DecodeError]] = []
        for position, value in enumerate(values):
            try:
                rows.append(self.decode_one(value))
                indices.append(position)
            except DecodeError as exc:
                failures.append((position, exc))
        columns = []
        for name, kind in self._kinds:
            raw = [r[name] for r in rows]
            if kind == "decimal":
                try:
                    raw = [None if b is None else int.from_bytes(b, "big", signed=True) for b in raw]
                    columns.append(column_to_arrow(kind, raw))
                except OverflowError:
                    # Out-of-range decimal somewhere in the batch: fall back to per-row checks.
                    return self._decode_slow(rows, indices, failures)
            else:
                columns.append(column_to_arrow(kind, raw))
        table = (
            pa.Table.from_arrays(columns, schema=self.record.arrow_schema())
            if rows
            else self.record.arrow_schema().empty_table()
        )
        return DecodedBatch(table, indices, failures)

    def _decode_slow(
        self, rows: list[dict[str, Any]], indices: list[int], failures: list[tuple[int, DecodeError]]
    ) -> DecodedBatch:
        limit = 2**63 - 1
        good_rows, good_idx = [], []
        for row, position in zip(rows, indices, strict=True):
            bad = None
            for name, kind in self._kinds:
                if kind == "decimal" and row[name] is not None:
                    value = int.from_bytes(row[name], "big", signed=True)
                    if abs(value) > limit:
                        bad = name
                        break
            if bad:
                failures.append(
                    (position, DecodeError("decimal_overflow", f"{bad} does not fit decimal(18,8)"))
                )
            else:
                good_rows.append(row)
                good_idx.append(position)
        failures.sort(key=lambda f: f[0])
        if not good_rows:
            return DecodedBatch(self.record.arrow_schema().empty_table(), [], failures)
        columns = []
        for name, kind in self._kinds:
            raw = [r[name] for r in good_rows]
            if kind == "decimal":
                raw = [None if b is None else int.from_bytes(b, "big", signed=True) for b in raw]
            columns.append(column_to_arrow(kind, raw))
        return DecodedBatch(
            pa.Table.from_arrays(columns, schema=self.record.arrow_schema()), good_idx, failures
        )
