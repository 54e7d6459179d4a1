"""Table maintenance: compaction, snapshot expiry, orphan-file removal, manifest rewrite (``k2 maintain``).

pyiceberg 0.12 has no compaction, so K2 does it itself, safely under concurrent landing:

* **Compaction** per partition: the live data files of a partition smaller than
  ``maintenance_small_file_ratio`` x ``target_file_size_bytes`` (when there are at least
  ``maintenance_min_input_files`` of them) are read, sorted by the table's sort columns and rewritten
  into files of about ``target_file_size_bytes``, in **one** Iceberg commit per partition that deletes
  exactly the files read (never "everything matching a predicate"), so rows another writer appends to
  the same partition meanwhile are never lost. The commit is a ``replace`` snapshot (same data, new
  files). Concurrency: the table's ``commit.retry.num-retries`` is 0, so a concurrent commit makes ours
  fail; K2 then refreshes and *rebases*: the manifests it wrote are kept, the new parent's manifests
  (including those a concurrent append added) are carried, and the summary is recomputed from the new
  parent, so a retry costs one manifest-list write and maintenance wins races with landing commits a
  few hundred milliseconds apart. If the manifests it replaced are gone (another maintenance run), it
  plans again; if the files it read are gone, it gives up on the partition and deletes what it wrote.
* **Kafka offsets carried forward**: the landing consumer resumes from the *current* snapshot's summary
  (``k2.kafka.offsets``, ``k2.kafka.last``...), so every maintenance snapshot copies the parent's
  ``k2.kafka.*`` properties (except ``k2.kafka.ranges``, which describes what one landing commit added).
* **Snapshot expiry** by age and count: snapshots older than ``maintenance_snapshot_max_age_hours`` are
  expired, except the newest ``maintenance_snapshots_keep`` and branch/tag heads. Time travel to any
  unexpired snapshot keeps working (its files are kept).
* **Orphan-file removal**: files under the table location that no live snapshot references (data files
  of expired snapshots, failed writes, stale metadata JSON and manifests), older than
  ``maintenance_orphan_min_age_hours`` so files a writer has not committed yet are never touched.
* **Manifest rewrite**: one ``replace`` snapshot whose live entries are packed into manifests of
  ``maintenance_target_manifest_entries`` entries (fast appends leave one manifest per commit).

Example (needs a catalog)::

    for report in maintain(load_settings(), tables=["trades"]):
        print(report.summary_line())
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import structlog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError, ValidationException
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile, ManifestContent
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.snapshots import Operation, Snapshot
from pyiceberg.typedef import Record

from k2.config import Settings
from k2.lake.catalog import TABLES, load_catalog, load_table, s3_properties
from k2.lake.compat import (
    CachedTransaction,
    Plan,
    ReplaceFiles,
    Replan,
    RewriteManifests,
    data_files_from_arrow,
)
from k2.lake.summary import MAINTENANCE_KEY, carried, commit_summary
from k2.lake.tags import drop_expired_tags
from k2.lake.writer import sort_for_table
from k2.pacing import Backoff, Periodic
from k2.telemetry.metrics import metric

log = structlog.get_logger("k2.maintenance")

MAINTENANCE_WRITER = "k2-maintenance"
_MAX_ATTEMPTS = 30


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


# -- helpers ---------------------------------------------------------------------------------------


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


def _live_data_files(table: Table, snapshot: Snapshot | None) -> tuple[list[DataFile], list[DataFile], int]:
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


def _partition_label(table: Table, spec_id: int, partition: Record) -> str:
    spec = table.specs()[spec_id]
    parts = [f"{f.name}={partition[i]}" for i, f in enumerate(spec.fields)]
    return "/".join(parts) or "(unpartitioned)"


def _sort(data: pa.Table, table: Table, short_name: str | None) -> pa.Table:
    if short_name in TABLES:
        return sort_for_table(data, short_name)
    schema = table.schema()
    columns = [schema.find_column_name(f.source_id) for f in table.sort_order().fields]
    keys = [(c, "ascending") for c in columns if c is not None and c in data.column_names]
    return data.sort_by(keys) if keys and data.num_rows > 1 else data


def _commit_with_retry(
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
    for _attempt in range(_MAX_ATTEMPTS):
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
    report.notes.append(f"gave up a commit after {_MAX_ATTEMPTS} concurrent-commit conflicts")
    return False


def _ensure_no_builtin_retry(table: Table) -> None:
    # pyiceberg's own retry would re-apply our summary (stale Kafka offsets) on top of a landing commit.
    if table.properties.get("commit.retry.num-retries") != "0":
        with table.transaction() as tx:
            tx.set_properties({"commit.retry.num-retries": "0"})


# -- compaction ------------------------------------------------------------------------------------


def plan_compaction(table: Table, settings: Settings) -> dict[tuple[int, Record], list[DataFile]]:
    """Partitions worth compacting -> their small live data files (partitions with delete files are skipped).

    Example (needs a table)::

        plan = plan_compaction(table, settings)
    """
    table.refresh()
    data, deletes, _ = _live_data_files(table, table.current_snapshot())
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
    data = _sort(data, table, short_name)
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
    ok = _commit_with_retry(table, build, report)
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
    for (spec_id, partition), files in sorted(plan.items(), key=lambda kv: _partition_label(table, *kv[0])):
        label = _partition_label(table, spec_id, partition)
        if dry_run:
            report.partitions_compacted += 1
            report.files_rewritten += len(files)
            report.files_written += max(
                1, math.ceil(sum(f.file_size_in_bytes for f in files) / settings.target_file_size_bytes)
            )
            continue
        _compact_partition(table, short_name, settings, files, label, report)


# -- snapshot expiry ---------------------------------------------------------------------------------


def snapshots_to_expire(table: Table, settings: Settings, now: datetime | None = None) -> list[int]:
    """Snapshot ids older than the max age, beyond the newest ``maintenance_snapshots_keep``, not ref heads.

    Example (needs a table)::

        ids = snapshots_to_expire(table, settings)
    """
    now = now or datetime.now(UTC)
    cutoff_ms = int((now - timedelta(hours=settings.maintenance_snapshot_max_age_hours)).timestamp() * 1000)
    protected = {ref.snapshot_id for ref in table.metadata.refs.values()}
    newest = sorted(
        table.metadata.snapshots, key=lambda s: (s.timestamp_ms, s.sequence_number or 0), reverse=True
    )
    keep = {s.snapshot_id for s in newest[: settings.maintenance_snapshots_keep]} | protected
    return [s.snapshot_id for s in newest if s.snapshot_id not in keep and s.timestamp_ms < cutoff_ms]


def expire_snapshots(
    table: Table,
    settings: Settings,
    report: MaintenanceReport,
    dry_run: bool = False,
    now: datetime | None = None,
) -> None:
    """Expire snapshots (metadata only; their unreferenced files go with orphan removal).

    Example (needs a table)::

        expire_snapshots(table, settings, MaintenanceReport("trades"))
    """
    # Tags keep their snapshot forever unless they carry a retention; those past it go first.
    dropped = drop_expired_tags(table, now or datetime.now(UTC), dry_run)
    if dropped:
        report.notes.append(
            f"tags past their retention {'to drop' if dry_run else 'dropped'}: {', '.join(dropped)}"
        )
    backoff = Backoff(0.01, 0.2)
    for _attempt in range(_MAX_ATTEMPTS):
        table.refresh()
        ids = snapshots_to_expire(table, settings, now)
        report.snapshots_expired = len(ids)
        if not ids or dry_run:
            return
        try:
            table.maintenance.expire_snapshots().by_ids(ids).commit()
            table.refresh()
            return
        except CommitFailedException:  # a landing commit in between: recompute on the new state
            report.commit_conflicts += 1
            time.sleep(backoff.next_delay())
    report.snapshots_expired = 0
    report.notes.append(f"gave up expiring snapshots after {_MAX_ATTEMPTS} concurrent-commit conflicts")


# -- manifest rewrite --------------------------------------------------------------------------------


def rewrite_manifests(
    table: Table, settings: Settings, report: MaintenanceReport, dry_run: bool = False
) -> None:
    """Repack data manifests into ``maintenance_target_manifest_entries``-entry manifests (one replace commit).

    Example (needs a table)::

        rewrite_manifests(table, settings, MaintenanceReport("trades"))
    """
    table.refresh()
    snapshot = table.current_snapshot()
    if snapshot is None:
        return
    manifests = [m for m in snapshot.manifests(table.io) if m.content == ManifestContent.DATA]
    entries = sum((m.added_files_count or 0) + (m.existing_files_count or 0) for m in manifests)
    specs = {m.partition_spec_id for m in manifests}
    needed = max(len(specs), math.ceil(entries / settings.maintenance_target_manifest_entries))
    # Manifests that only record deletions (left by overwrites) also count: they are dropped by a rewrite.
    if len(manifests) <= needed:
        return
    if dry_run:
        report.manifests_rewritten = True
        return

    def build(tx: Any, plan: Plan | None) -> RewriteManifests:
        props = commit_summary(
            table.current_snapshot(), MAINTENANCE_WRITER, {MAINTENANCE_KEY: "rewrite-manifests"}
        )
        producer = RewriteManifests(
            operation=Operation.OVERWRITE, transaction=tx, io=table.io, snapshot_properties=props
        )
        if plan is not None:
            producer._snapshot_id, producer.plan = plan.snapshot_id, plan
        producer.entries_per_manifest = settings.maintenance_target_manifest_entries
        producer.commit()
        return producer

    report.manifests_rewritten = _commit_with_retry(table, build, report) or report.manifests_rewritten


# -- orphan files ------------------------------------------------------------------------------------


def _strip_scheme(uri: str) -> str:
    for prefix in ("file://", "s3://", "s3a://", "s3n://"):
        if uri.startswith(prefix):
            return uri[len(prefix) :]
    return uri


def _filesystem(location: str, settings: Settings) -> Any:
    from pyarrow import fs

    if location.startswith("file://") or location.startswith("/"):
        return fs.LocalFileSystem()
    if location.startswith(("s3://", "s3a://", "s3n://")):
        props = s3_properties(settings)
        endpoint = props.get("s3.endpoint")
        kwargs: dict[str, Any] = {"region": props.get("s3.region", settings.s3_region)}
        if props.get("s3.access-key-id"):
            kwargs["access_key"] = props["s3.access-key-id"]
            kwargs["secret_key"] = props.get("s3.secret-access-key")
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            kwargs["endpoint_override"] = host or scheme
            kwargs["scheme"] = scheme if host else "https"
            kwargs["force_virtual_addressing"] = False
        return fs.S3FileSystem(**kwargs)
    raise ValueError(f"expected a file:// or s3:// table location for orphan removal, found {location!r}")


def referenced_files(table: Table) -> set[str]:
    """Every file a live snapshot or the current metadata needs (paths without scheme).

    Example (needs a table)::

        paths = referenced_files(table)
    """
    metadata = table.metadata
    refs: set[str] = {_strip_scheme(table.metadata_location)}
    refs |= {_strip_scheme(entry.metadata_file) for entry in metadata.metadata_log}
    refs |= {_strip_scheme(s.statistics_path) for s in metadata.statistics}
    refs |= {_strip_scheme(s.statistics_path) for s in metadata.partition_statistics}
    seen_manifests: set[str] = set()
    for snapshot in metadata.snapshots:
        refs.add(_strip_scheme(snapshot.manifest_list))
        for manifest in snapshot.manifests(table.io):
            if manifest.manifest_path in seen_manifests:
                continue
            seen_manifests.add(manifest.manifest_path)
            refs.add(_strip_scheme(manifest.manifest_path))
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                refs.add(_strip_scheme(entry.data_file.file_path))
    return refs


def remove_orphan_files(
    table: Table,
    settings: Settings,
    report: MaintenanceReport,
    dry_run: bool = False,
    now: datetime | None = None,
) -> list[str]:
    """Delete files under the table location no live snapshot references, older than the safety age.

    Returns the orphan paths (deleted unless ``dry_run``).

    Example (needs a table)::

        removed = remove_orphan_files(table, settings, MaintenanceReport("trades"))
    """
    from pyarrow import fs as pafs

    table.refresh()
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(hours=settings.maintenance_orphan_min_age_hours)
    filesystem = _filesystem(table.location(), settings)
    root = _strip_scheme(table.location()).rstrip("/")
    # List first, then collect references: a file committed in between is then referenced, not orphaned.
    try:
        infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except OSError as exc:
        report.notes.append(f"orphan removal skipped: cannot list {root}: {exc}")
        return []
    table.refresh()
    refs = referenced_files(table)
    orphans: list[str] = []
    for info in infos:
        if info.type != pafs.FileType.File or info.path in refs:
            continue
        mtime = info.mtime
        if mtime is None:
            continue
        if mtime.tzinfo is None:
            mtime = mtime.replace(tzinfo=UTC)
        if mtime >= cutoff:
            continue
        orphans.append(info.path)
        report.orphan_bytes += int(info.size or 0)
        if not dry_run:
            filesystem.delete_file(info.path)
    report.orphans_removed = len(orphans)
    return orphans


# -- the whole run -----------------------------------------------------------------------------------


def _measure(table: Table) -> tuple[int, int, int, int, int]:
    table.refresh()
    snapshot = table.current_snapshot()
    data, _, manifests = _live_data_files(table, snapshot)
    return (
        len(data),
        sum(f.file_size_in_bytes for f in data),
        sum(f.record_count for f in data),
        manifests,
        len(table.metadata.snapshots),
    )


def maintain_table(
    table: Table,
    settings: Settings,
    short_name: str | None = None,
    dry_run: bool = False,
    actions: Sequence[str] = ("compact", "expire", "orphans", "manifests"),
    now: datetime | None = None,
) -> MaintenanceReport:
    """Run the maintenance ``actions`` (in the order compact, manifests, expire, orphans) on one table.

    Example (needs a table)::

        report = maintain_table(load_table(catalog, "trades"), settings, "trades")
    """
    unknown = set(actions) - {"compact", "expire", "orphans", "manifests"}
    if unknown:
        raise ValueError(
            f"expected actions among compact, expire, orphans, manifests, found {sorted(unknown)}"
        )
    started = time.monotonic()
    name = short_name or ".".join(table.name())
    report = MaintenanceReport(table=name, dry_run=dry_run)
    (
        report.files_before,
        report.bytes_before,
        report.records_before,
        report.manifests_before,
        report.snapshots_before,
    ) = _measure(table)
    runs = metric("k2_maintenance_runs_total")
    if not dry_run:
        _ensure_no_builtin_retry(table)
    if "compact" in actions:
        if "manifests" in actions:
            # One manifest per landing commit would make every partition's commit read them all.
            rewrite_manifests(table, settings, report, dry_run)
        compact(table, settings, report, short_name, dry_run)
        runs.labels(table=name, action="compact").inc()
        if not dry_run:
            metric("k2_maintenance_files_removed_total").labels(table=name).inc(report.files_rewritten)
    if "manifests" in actions:
        rewrite_manifests(table, settings, report, dry_run)
        runs.labels(table=name, action="manifests").inc()
    if "expire" in actions:
        expire_snapshots(table, settings, report, dry_run, now)
        runs.labels(table=name, action="expire").inc()
    if "orphans" in actions:
        remove_orphan_files(table, settings, report, dry_run, now)
        runs.labels(table=name, action="orphans").inc()
    files, size, records, manifests, _ = _measure(table)
    if dry_run:
        report.files_after = report.files_before - report.files_rewritten + report.files_written
        report.bytes_after, report.records_after, report.manifests_after = size, records, manifests
    else:
        report.files_after, report.bytes_after, report.records_after, report.manifests_after = (
            files,
            size,
            records,
            manifests,
        )
    report.seconds = time.monotonic() - started
    log.info("maintenance", **{k: v for k, v in report.as_dict().items() if not isinstance(v, list)})
    return report


def maintain(
    settings: Settings,
    tables: Sequence[str] | None = None,
    dry_run: bool = False,
    actions: Sequence[str] = ("compact", "expire", "orphans", "manifests"),
) -> list[MaintenanceReport]:
    """Maintain K2's tables (all of them by default); tables not created yet are reported and skipped.

    Example (needs a catalog)::

        reports = maintain(load_settings(), ["trades"], dry_run=True)
    """
    names = list(tables) if tables else list(TABLES)
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        raise ValueError(f"expected tables among {sorted(TABLES)}, found {unknown}")
    catalog = load_catalog(settings)
    reports = []
    for name in names:
        try:
            table = load_table(catalog, name)
        except NoSuchTableError:
            reports.append(
                MaintenanceReport(table=name, dry_run=dry_run, notes=["table does not exist yet (k2 init)"])
            )
            continue
        reports.append(maintain_table(table, settings, name, dry_run, actions))
    return reports


class MaintenanceScheduler(Periodic):
    """Runs :func:`maintain` every ``maintenance_interval_seconds`` in a daemon thread (landing service).

    The first run is one interval after start. Example (needs a catalog)::

        scheduler = MaintenanceScheduler(settings).start()
        ...
        scheduler.stop()
    """

    def __init__(self, settings: Settings) -> None:
        super().__init__("k2-maintenance", settings.maintenance_interval_seconds)
        self.settings = settings
        self.runs = 0
        self.last_reports: list[MaintenanceReport] = []

    def run_once(self) -> None:
        self.last_reports = maintain(self.settings)
        self.runs += 1


def start_scheduler(settings: Settings) -> MaintenanceScheduler | None:
    """Start scheduled maintenance when ``maintenance_interval_seconds`` > 0 (else None).

    Example:
        >>> from k2.config import Settings
        >>> start_scheduler(Settings(maintenance_interval_seconds=0)) is None
        True
    """
    if settings.maintenance_interval_seconds <= 0:
        return None
    scheduler = MaintenanceScheduler(settings)
    scheduler.start()
    return scheduler
