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

The package, one room per step: :mod:`~k2.lake.maintenance.compaction`, :mod:`~k2.lake.maintenance.manifests`,
:mod:`~k2.lake.maintenance.expiry`, :mod:`~k2.lake.maintenance.orphans`, the whole run
(:mod:`~k2.lake.maintenance.run`), the landing service's schedule (:mod:`~k2.lake.maintenance.schedule`),
and what they share (:mod:`~k2.lake.maintenance.common`: the report and the commit-with-rebase loop;
pyiceberg's private producers live in :mod:`k2.lake.compat`).
"""

from k2.lake.maintenance.common import MAINTENANCE_WRITER, MaintenanceReport, carried_properties
from k2.lake.maintenance.compaction import _compact_partition, compact, plan_compaction
from k2.lake.maintenance.expiry import expire_snapshots, snapshots_to_expire
from k2.lake.maintenance.manifests import rewrite_manifests
from k2.lake.maintenance.orphans import referenced_files, remove_orphan_files
from k2.lake.maintenance.run import maintain, maintain_table
from k2.lake.maintenance.schedule import MaintenanceScheduler, start_scheduler

__all__ = [
    "MAINTENANCE_WRITER",
    "MaintenanceReport",
    "MaintenanceScheduler",
    "_compact_partition",
    "carried_properties",
    "compact",
    "expire_snapshots",
    "maintain",
    "maintain_table",
    "plan_compaction",
    "referenced_files",
    "remove_orphan_files",
    "rewrite_manifests",
    "snapshots_to_expire",
    "start_scheduler",
]
