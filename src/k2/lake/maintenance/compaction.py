"""Compaction: small files of a partition rewritten, sorted, into files of the target size (one replace commit each)."""

from __future__ import annotations

import contextlib
import math
import uuid
from collections import defaultdict
from typing import Any

from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.snapshots import Operation
from pyiceberg.typedef import Record

from k2.config import Settings
from k2.lake.compat import (
    Plan,
    ReplaceFiles,
    data_files_from_arrow,
)
from k2.lake.maintenance.common import (
    MAINTENANCE_WRITER,
    MaintenanceReport,
    commit_with_rebase,
    live_data_files,
    partition_label,
    sort_rows,
)
from k2.lake.summary import MAINTENANCE_KEY, commit_summary


def plan_compaction(table: Table, settings: Settings) -> dict[tuple[int, Record], list[DataFile]]:
    """Partitions worth compacting -> their small live data files (partitions with delete files are skipped).

    Example (needs a table)::

        plan = plan_compaction(table, settings)
    """
    table.refresh()
    data, deletes, _ = live_data_files(table, table.current_snapshot())
    limit = settings.maintenance_small_file_ratio * settings.target_file_size_bytes
    with_deletes = {(f.spec_id, f.partition) for f in deletes}
    groups: dict[tuple[int, Record], list[DataFile]] = defaultdict(list)
    for f in data:
        if f.file_size_in_bytes < limit and (f.spec_id, f.partition) not in with_deletes:
            groups[(f.spec_id, f.partition)].append(f)
    return {
        k: sorted(v, key=lambda f: f.file_path)
        for k, v in groups.items()
        if len(v) >= settings.maintenance_min_input_files
    }


def _compact_partition(
    table: Table,
    short_name: str | None,
    settings: Settings,
    files: list[DataFile],
    label: str,
    report: MaintenanceReport,
) -> bool:
    tasks = [FileScanTask(f) for f in files]
    data = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue()).to_table(tasks)
    data = sort_rows(data, table, short_name)
    file_bytes = sum(f.file_size_in_bytes for f in files)
    # pyiceberg sizes files by in-memory Arrow bytes; scale so the Parquet files land near the target.
    arrow_target = max(
        1 << 20, int(settings.target_file_size_bytes * max(1.0, data.nbytes / max(1, file_bytes)))
    )
    metadata = table.metadata.model_copy(
        update={
            "properties": {**table.metadata.properties, "write.target-file-size-bytes": str(arrow_target)}
        }
    )
    written = list(
        data_files_from_arrow(table_metadata=metadata, df=data, io=table.io, write_uuid=uuid.uuid4())
    )

    def build(tx: Any, plan: Plan | None) -> ReplaceFiles:
        props = commit_summary(table.current_snapshot(), MAINTENANCE_WRITER, {MAINTENANCE_KEY: "compaction"})
        producer = ReplaceFiles(
            operation=Operation.OVERWRITE, transaction=tx, io=table.io, snapshot_properties=props
        )
        if plan is not None:
            producer._snapshot_id, producer.plan = plan.snapshot_id, plan
        for f in files:
            producer.delete_data_file(f)
        for f in written:
            producer.append_data_file(f)
        producer.commit()
        return producer

    # pyiceberg checks every deleted file is still live in the parent (ValidationException otherwise:
    # another maintenance run got there first), so a retry never drops a file it did not read.
    ok = commit_with_rebase(table, build, report)
    if not ok:
        report.partitions_skipped.append(f"{label}: its files were changed by another writer")
        for f in written:  # never committed: remove now rather than leave them to orphan removal
            with contextlib.suppress(OSError):
                table.io.delete(f.file_path)
        return False
    report.partitions_compacted += 1
    report.files_rewritten += len(files)
    report.files_written += len(written)
    return True


def compact(
    table: Table,
    settings: Settings,
    report: MaintenanceReport,
    short_name: str | None = None,
    dry_run: bool = False,
) -> None:
    """Compact every partition :func:`plan_compaction` selects, one atomic replace commit per partition.

    Example (needs a table)::

        compact(table, settings, MaintenanceReport("trades"), "trades")
    """
    plan = plan_compaction(table, settings)
    for (spec_id, partition), files in sorted(plan.items(), key=lambda kv: partition_label(table, *kv[0])):
        label = partition_label(table, spec_id, partition)
        if dry_run:
            report.partitions_compacted += 1
            report.files_rewritten += len(files)
            report.files_written += max(
                1, math.ceil(sum(f.file_size_in_bytes for f in files) / settings.target_file_size_bytes)
            )
            continue
        _compact_partition(table, short_name, settings, files, label, report)
