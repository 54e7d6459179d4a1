"""Snapshot expiry by age and count; branch/tag heads and the newest snapshots are kept."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from k2.config import Settings
from k2.lake.maintenance.common import MAX_ATTEMPTS, MaintenanceReport
from k2.lake.tags import drop_expired_tags
from k2.pacing import Backoff


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
    for _attempt in range(MAX_ATTEMPTS):
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
    report.notes.append(f"gave up expiring snapshots after {MAX_ATTEMPTS} concurrent-commit conflicts")
