"""Lineage columns on a batch of rows: where each row came from (see ``LINEAGE_FIELDS`` in the schema).

The one place that turns positions into the table-side lineage columns. Two origins:

* a Kafka message: topic, partition, offset and the producer's message id (:mod:`k2.bus.lineage`);
* a line of a file imported directly (``k2 import`` without ``--via-kafka``): file name and line.

Columns of the other origin are left out; :func:`k2.lake.writer.conform` fills absent lineage columns
with nulls, so every writer appends to the same table schema.

Example:
    >>> import pyarrow as pa
    >>> rows = pa.table({"trade_id": [7, 8]})
    >>> with_file_lineage(rows, "BTCUSDT-trades.csv", [2, 3]).column("lineage_line").to_pylist()
    [2, 3]
    >>> t = with_kafka_lineage(rows, ["market.crypto.trades.x"], [0, 0], [1, 1], [40, 41], ["ab", "ab"], [5, 6])
    >>> t.column("lineage_offset").to_pylist(), t.column("lineage_topic").to_pylist()
    ([40, 41], ['market.crypto.trades.x', 'market.crypto.trades.x'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa


def _set(data: pa.Table, name: str, column: pa.Array) -> pa.Table:
    index = data.schema.get_field_index(name)
    return data.set_column(index, name, column) if index >= 0 else data.append_column(name, column)


def with_kafka_lineage(
    data: pa.Table,
    topic_names: Sequence[str],
    topic_codes: Sequence[int] | np.ndarray,
    partitions: Sequence[int] | np.ndarray,
    offsets: Sequence[int] | np.ndarray,
    producers: Sequence[str | None] | pa.Array,
    sequences: Sequence[int | None] | pa.Array,
) -> pa.Table:
    """``data`` with the Kafka lineage columns, one entry per row (topics as codes into ``topic_names``)."""
    topics = pa.array(list(topic_names), pa.string()).take(pa.array(np.asarray(topic_codes, dtype=np.int64)))
    columns: list[tuple[str, Any]] = [
        ("lineage_topic", topics),
        ("lineage_partition", pa.array(np.asarray(partitions, dtype=np.int64))),
        ("lineage_offset", pa.array(np.asarray(offsets, dtype=np.int64))),
        ("lineage_producer", pa.array(producers, pa.string())),
        ("lineage_sequence", pa.array(sequences, pa.int64())),
    ]
    for name, column in columns:
        data = _set(data, name, column)
    return data


def with_file_lineage(data: pa.Table, file_name: str, lines: Sequence[int] | np.ndarray) -> pa.Table:
    """``data`` with the file lineage columns: ``file_name`` and each row's line (1 = the file's first line)."""
    data = _set(data, "lineage_file", pa.repeat(pa.scalar(file_name, pa.string()), data.num_rows))
    return _set(data, "lineage_line", pa.array(np.asarray(lines, dtype=np.int64)))
