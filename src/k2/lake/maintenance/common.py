"""Shared pieces of a maintenance run: its report, the writer name, and the commit-with-rebase loop."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.manifest import DataFile, ManifestContent
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.typedef import Record

from k2.lake.catalog import TABLES
from k2.lake.compat import (
    CachedTransaction,
    Plan,
    Replan,
)
from k2.lake.summary import carried
from k2.lake.writer import sort_for_table
from k2.pacing import Backoff

MAINTENANCE_WRITER = "k2-maintenance"
MAX_ATTEMPTS = 30


@dataclass
class MaintenanceReport:
    """What one maintenance run changed (or, with ``dry_run``, would change) in one table."""

    table: str
    dry_run: bool = False
    files_before: int = 0
    files_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    records_before: int = 0
    records_after: int = 0
    manifests_before: int = 0
    manifests_after: int = 0
    partitions_compacted: int = 0
    files_rewritten: int = 0
    files_written: int = 0
    commit_conflicts: int = 0
    partitions_skipped: list[str] = field(default_factory=list)
    snapshots_before: int = 0
    snapshots_expired: int = 0
    orphans_removed: int = 0
    orphan_bytes: int = 0
    manifests_rewritten: bool = False
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for ``k2 maintain --json``)."""
        return asdict(self)

    def summary_line(self) -> str:
        """One line for logs."""
        return (
            f"{self.table}: files {self.files_before}->{self.files_after}, bytes {self.bytes_before}->{self.bytes_after}, "
            f"manifests {self.manifests_before}->{self.manifests_after}, partitions compacted {self.partitions_compacted}, "
            f"snapshots expired {self.snapshots_expired}, orphans removed {self.orphans_removed}"
        )


def carried_properties(snapshot: Snapshot | None) -> dict[str, str]:
    """The parent's Kafka-position summary properties a maintenance snapshot must repeat.

    Example:
        >>> from pyiceberg.table.snapshots import Snapshot, Summary, Operation
        >>> s = Snapshot(snapshot_id=1, sequence_number=1, timestamp_ms=0, manifest_list="m",
        ...     summary=Summary(Operation.APPEND, **{"k2.kafka.offsets": "{}", "k2.kafka.ranges": "{}", "k2.rows.landed": "5"}))
        >>> carried_properties(s)
        {'k2.kafka.offsets': '{}'}
    """
    return carried(snapshot)


def live_data_files(table: Table, snapshot: Snapshot | None) -> tuple[list[DataFile], list[DataFile], int]:
    """(live data files, live delete files, number of manifests) of ``snapshot``."""
    if snapshot is None:
        return [], [], 0
    data: list[DataFile] = []
    deletes: list[DataFile] = []
    manifests = snapshot.manifests(table.io)
    for manifest in manifests:
        entries = manifest.fetch_manifest_entry(table.io, discard_deleted=True)
        target = data if manifest.content == ManifestContent.DATA else deletes
        target.extend(e.data_file for e in entries)
    return data, deletes, len(manifests)


def partition_label(table: Table, spec_id: int, partition: Record) -> str:
    spec = table.specs()[spec_id]
    parts = [f"{f.name}={partition[i]}" for i, f in enumerate(spec.fields)]
    return "/".join(parts) or "(unpartitioned)"


def sort_rows(data: pa.Table, table: Table, short_name: str | None) -> pa.Table:
    if short_name in TABLES:
        return sort_for_table(data, short_name)
    schema = table.schema()
    columns = [schema.find_column_name(f.source_id) for f in table.sort_order().fields]
    keys = [(c, "ascending") for c in columns if c is not None and c in data.column_names]
    return data.sort_by(keys) if keys and data.num_rows > 1 else data


def commit_with_rebase(
    table: Table, build: Callable[[Any, Plan | None], Any], report: MaintenanceReport
) -> bool:
    """Commit a maintenance snapshot; on a concurrent commit refresh and rebase it. False: gave up.

    ``build(tx, plan)`` stages the producer in ``tx`` (reusing ``plan``'s snapshot id and manifests when
    given) and returns it.
    """
    plan: Plan | None = None
    written: list[str] = []

    def discard() -> None:
        for path in written:
            with contextlib.suppress(OSError):
                table.io.delete(path)
        written.clear()

    backoff = Backoff(0.01, 0.2)
    for _attempt in range(MAX_ATTEMPTS):
        table.refresh()
        tx = CachedTransaction(table, autocommit=False)
        try:
            producer = build(tx, plan)
            if plan is None and producer.recorded is not None:
                plan = producer.recorded
                written = [m.manifest_path for m in plan.new_manifests]
            tx.commit_transaction()
            return True
        except CommitFailedException:
            report.commit_conflicts += 1
            time.sleep(backoff.next_delay())
        except Replan:
            discard()
            plan = None
        except ValidationException as exc:
            discard()
            report.notes.append(f"gave up a commit: {exc}")
            return False
    discard()
    report.notes.append(f"gave up a commit after {MAX_ATTEMPTS} concurrent-commit conflicts")
    return False


def ensure_no_builtin_retry(table: Table) -> None:
    # pyiceberg's own retry would re-apply our summary (stale Kafka offsets) on top of a landing commit.
    if table.properties.get("commit.retry.num-retries") != "0":
        with table.transaction() as tx:
            tx.set_properties({"commit.retry.num-retries": "0"})
