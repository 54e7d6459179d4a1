"""Orphan-file removal: files under the table location no live snapshot references, past a minimum age."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pyiceberg.table import Table

from k2.config import Settings
from k2.lake.catalog import s3_properties
from k2.lake.maintenance.common import MaintenanceReport


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
