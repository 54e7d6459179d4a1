"""The whole maintenance run of a table (``k2 maintain``) and of every K2 table."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime

import structlog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table

from k2.config import Settings
from k2.lake.catalog import TABLES, load_catalog, load_table
from k2.lake.maintenance.common import MaintenanceReport, ensure_no_builtin_retry, live_data_files
from k2.lake.maintenance.compaction import compact
from k2.lake.maintenance.expiry import expire_snapshots
from k2.lake.maintenance.manifests import rewrite_manifests
from k2.lake.maintenance.orphans import remove_orphan_files
from k2.telemetry.metrics import metric

log = structlog.get_logger("k2.maintenance")


def _measure(table: Table) -> tuple[int, int, int, int, int]:
    table.refresh()
    snapshot = table.current_snapshot()
    data, _, manifests = live_data_files(table, snapshot)
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
        ensure_no_builtin_retry(table)
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
    fields = {k: v for k, v in report.as_dict().items() if not isinstance(v, list)}
    # Why a partition was left as it was (skipped, gave up) is the part an operator needs; file lists are not.
    log.info("maintenance", **fields, partitions_skipped=report.partitions_skipped, notes=report.notes)
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
