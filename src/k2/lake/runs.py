"""Appending a pre-sorted, one-symbol batch to a partitioned table without pyiceberg's partition split.

pyiceberg's ``append`` finds partitions by filtering the whole batch once per partition and copying
each result (``_determine_partitions``): for a bulk import that is a full copy of every column -- the
per-row vendor map included -- before a single byte of Parquet is written, about a third of the CPU of
an import. A vendor file of one symbol, sorted by time, needs none of that: its partitions
(``day(time) x bucket(symbol)``) are consecutive runs, found with one vectorised pass and written as
zero-copy slices.

This writes the same data files, with the same partition values (computed by the very transforms
pyiceberg uses), through pyiceberg's own ``write_file`` and a fast-append snapshot in one transaction
(one commit, the snapshot summary properties included). Anything else (several symbols, rows not in
time order, an unpartitioned or differently partitioned table) returns ``None`` and the caller falls
back to :func:`k2.lake.writer.append` (:func:`k2.lake.writer.append_sorted` does both).

Example (needs a catalog)::

    snapshot_id = append_runs(table, conformed_sorted_batch, {"k2.import.file": "x.csv"})
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.io.pyarrow import bin_pack_arrow_table, pyarrow_to_schema, write_file
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
from pyiceberg.table import Table, TableProperties, WriteTask
from pyiceberg.transforms import DayTransform
from pyiceberg.utils.properties import property_as_int

from k2.lake.compat import check_arrow_schema_compatible


def _runs(table: Table, data: pa.Table) -> list[tuple[PartitionKey, int, int]] | None:
    spec = table.spec()
    schema = table.schema()
    if spec.is_unpartitioned() or data.num_rows == 0:
        return None
    n = data.num_rows
    boundaries = np.zeros(0, dtype=np.int64)
    per_field: list[tuple[Any, np.ndarray | Any]] = []
    for field in spec.fields:
        source = schema.find_field(field.source_id)
        column = data.column(source.name).combine_chunks()
        transform = field.transform.pyarrow_transform(source.field_type)
        if isinstance(field.transform, DayTransform):
            days = np.asarray(transform(column), dtype=np.int64)
            if column.null_count or bool(np.any(days[1:] < days[:-1])):
                return None  # not in time order: let pyiceberg split it
            boundaries = np.union1d(boundaries, np.flatnonzero(days[1:] != days[:-1]) + 1)
            per_field.append((field, days))
        else:
            first = column.slice(0, 1)
            if column.null_count or not _constant(column):
                return None  # several values (symbols): let pyiceberg split it
            per_field.append((field, transform(first).to_pylist()[0]))
    starts = np.concatenate(([0], boundaries)).astype(np.int64)
    ends = np.concatenate((boundaries, [n])).astype(np.int64)
    runs = []
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        values = [
            PartitionFieldValue(
                field=field, value=int(value[start]) if isinstance(value, np.ndarray) else value
            )
            for field, value in per_field
        ]
        runs.append((PartitionKey(field_values=values, partition_spec=spec, schema=schema), start, end))
    return runs


def _constant(column: pa.Array) -> bool:
    return bool(pc.all(pc.equal(column, column[0])).as_py())


def append_runs(table: Table, data: pa.Table, properties: Mapping[str, str]) -> int | None:
    """Append ``data`` (conformed, sorted, one symbol) in one commit; None when it does not qualify."""
    runs = _runs(table, data)
    if runs is None:
        return None
    metadata = table.metadata
    check_arrow_schema_compatible(metadata, data.schema)
    target_size = property_as_int(
        metadata.properties,
        TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
        TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT,
    )
    task_schema = pyarrow_to_schema(
        data.schema, name_mapping=metadata.schema().name_mapping, format_version=metadata.format_version
    )
    counter = itertools.count(0)
    with (
        table.transaction() as tx,
        tx.update_snapshot(snapshot_properties=dict(properties)).fast_append() as update,
    ):

        def tasks() -> Iterator[WriteTask]:
            for key, start, end in runs:
                for batches in bin_pack_arrow_table(data.slice(start, end - start), int(target_size or 0)):
                    yield WriteTask(
                        write_uuid=update.commit_uuid,
                        task_id=next(counter),
                        record_batches=batches,
                        partition_key=key,
                        schema=task_schema,
                    )

        for data_file in write_file(io=table.io, table_metadata=tx.table_metadata, tasks=tasks()):
            update.append_data_file(data_file)
    snapshot = table.current_snapshot()
    assert snapshot is not None
    return int(snapshot.snapshot_id)
