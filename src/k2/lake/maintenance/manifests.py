"""Manifest rewrite: live entries packed into few manifests, as one replace snapshot."""

from __future__ import annotations

import math
from typing import Any

from pyiceberg.manifest import ManifestContent
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Operation

from k2.config import Settings
from k2.lake.compat import (
    Plan,
    RewriteManifests,
)
from k2.lake.maintenance.common import MAINTENANCE_WRITER, MaintenanceReport, commit_with_rebase
from k2.lake.summary import MAINTENANCE_KEY, commit_summary


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

    report.manifests_rewritten = commit_with_rebase(table, build, report) or report.manifests_rewritten
