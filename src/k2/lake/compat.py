"""Every use of pyiceberg's private API, in one place, checked against the versions it was written for.

K2's maintenance needs what pyiceberg 0.12 does not offer publicly: a ``replace`` snapshot that swaps
exactly the given data files (compaction), a manifest rewrite, commits that rebase onto a concurrent
landing commit without rewriting their manifests, and a transaction that does not deep-copy the table
metadata on every access. These subclass pyiceberg's private snapshot producers (``_OverwriteFiles``,
``_SnapshotProducer``) and read their private attributes. The query side reads a SQL catalog's own
``iceberg_tables`` row to learn in ~0.2 ms whether a table moved.

Hazard: private APIs change without notice. :data:`CHECKED_VERSIONS` lists the pyiceberg versions this
module was checked against; :func:`compatibility_problems` probes every private name it uses, and a test
fails on any other installed version, so an upgrade is a conscious re-check, not a silent breakage.

Example:
    >>> from k2.lake.compat import compatibility_problems
    >>> compatibility_problems()
    []
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections import defaultdict
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import pyarrow as pa
import pyiceberg.io.pyarrow as _pyiceberg_arrow
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import _check_pyarrow_schema_compatible, _dataframe_to_data_files
from pyiceberg.manifest import DataFile, ManifestContent, ManifestEntry, ManifestEntryStatus, ManifestFile
from pyiceberg.table import Transaction
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Operation, Summary
from pyiceberg.table.update import update_table_metadata
from pyiceberg.table.update.snapshot import _OverwriteFiles, _SnapshotProducer
from pyiceberg.typedef import EMPTY_DICT

CHECKED_VERSIONS = ("0.12.0",)

# (object, attribute) pairs K2 relies on; probed by compatibility_problems().
_PRIVATE_ATTRIBUTES: tuple[tuple[Any, str], ...] = (
    (_SnapshotProducer, "_manifests"),
    (_SnapshotProducer, "_summary"),
    (_SnapshotProducer, "_existing_manifests"),
    (_SnapshotProducer, "_deleted_entries"),
    (_SnapshotProducer, "new_manifest_writer"),
    (_SnapshotProducer, "spec"),
    (_OverwriteFiles, "_existing_manifests"),
    (Transaction, "table_metadata"),
    (Transaction, "commit_transaction"),
    (_pyiceberg_arrow, "_get_parquet_writer_kwargs"),
)
_PRIVATE_INSTANCE_ATTRIBUTES = (
    "_transaction",
    "_parent_snapshot_id",
    "_snapshot_id",
    "_io",
    "_written_manifest_lists",
    "_operation",
)


def compatibility_problems() -> list[str]:
    """What of the private API K2 uses is missing from the installed pyiceberg (empty: all present)."""
    problems = [
        f"{owner.__name__}.{name} is missing"
        for owner, name in _PRIVATE_ATTRIBUTES
        if not hasattr(owner, name)
    ]
    source = "".join(
        _source(cls) for cls in _SnapshotProducer.__mro__ if cls.__module__.startswith("pyiceberg")
    )
    problems += [
        f"_SnapshotProducer no longer sets self.{name}"
        for name in _PRIVATE_INSTANCE_ATTRIBUTES
        if f"self.{name} =" not in source and f"self.{name}: " not in source
    ]
    return problems


def unchecked_version() -> str | None:
    """The installed pyiceberg version when it is not one of :data:`CHECKED_VERSIONS`, else None."""
    installed = importlib.metadata.version("pyiceberg")
    return None if installed in CHECKED_VERSIONS else installed


def _source(obj: Any) -> str:
    import inspect

    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def data_files_from_arrow(
    table_metadata: TableMetadata, df: pa.Table, io: FileIO, write_uuid: UUID | None = None
) -> list[DataFile]:
    """Write ``df`` as data files of the table (no commit): pyiceberg's private writer, unchanged."""
    return list(
        _dataframe_to_data_files(
            table_metadata=table_metadata, df=df, io=io, write_uuid=write_uuid or uuid4()
        )
    )


def check_arrow_schema_compatible(table_metadata: TableMetadata, schema: pa.Schema) -> None:
    """Raise ValueError (pyiceberg's wording) when ``schema`` cannot be written to the table as is."""
    _check_pyarrow_schema_compatible(
        table_metadata.schema(), provided_schema=schema, format_version=table_metadata.format_version
    )


def metadata_location_from_sql_catalog(
    catalog: Any, catalog_name: str, namespace: str, name: str
) -> str | None:
    """The table's current metadata location read from a SQL catalog's own table; None when not a SQL
    catalog or when the read fails (the caller then asks the catalog API)."""
    engine = getattr(catalog, "engine", None)
    if engine is None:
        return None
    import sqlalchemy as sa

    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT metadata_location FROM iceberg_tables "
                    "WHERE catalog_name = :c AND table_namespace = :ns AND table_name = :t"
                ),
                {"c": catalog_name, "ns": namespace, "t": name},
            ).first()
    except sa.exc.SQLAlchemyError:
        return None
    return None if row is None else str(row[0])


@dataclass
class Plan:
    """The manifests one maintenance commit wrote, so a retry only rewrites the manifest list."""

    snapshot_id: int
    new_manifests: list[ManifestFile]
    replaced_paths: set[str]


class Replan(Exception):
    """The parent no longer holds the manifests the plan replaces: plan again from scratch."""


class Rebasing:
    """Mixin for maintenance producers: record the first attempt's manifests; rebase retries onto them.

    After a concurrent commit, pyiceberg would rewrite every manifest again, which takes longer than
    the gap between landing commits, so maintenance would never win a race. Landing only fast-appends
    (adds manifests), so a retry keeps the manifests already written (same snapshot id, so their
    entries stay valid), drops the parent's manifests the plan replaced and keeps every other parent
    manifest, including those a concurrent append added: nothing it landed can be lost. If a replaced
    manifest is gone from the parent (another maintenance run), :class:`Replan`.
    """

    plan: Plan | None = None
    recorded: Plan | None = None

    def _manifests(self) -> list[ManifestFile]:
        producer: Any = self
        parent = (
            producer._transaction.table_metadata.snapshot_by_id(producer._parent_snapshot_id)
            if producer._parent_snapshot_id
            else None
        )
        parent_manifests = parent.manifests(producer._io) if parent is not None else []
        parent_paths = {m.manifest_path for m in parent_manifests}
        if self.plan is not None:
            if not self.plan.replaced_paths <= parent_paths:
                raise Replan()
            return self.plan.new_manifests + [
                m for m in parent_manifests if m.manifest_path not in self.plan.replaced_paths
            ]
        result: list[ManifestFile] = super()._manifests()  # type: ignore[misc]
        result_paths = {m.manifest_path for m in result}
        self.recorded = Plan(
            snapshot_id=producer._snapshot_id,
            new_manifests=[m for m in result if m.manifest_path not in parent_paths],
            replaced_paths=parent_paths - result_paths,
        )
        return result

    def _clean_all_uncommitted(self) -> None:
        # Keep the manifests for the rebased retry; only this attempt's manifest list is garbage.
        producer: Any = self
        for path in producer._written_manifest_lists:
            with contextlib.suppress(OSError):
                producer._io.delete(path)
        producer._written_manifest_lists.clear()


class ReplaceFiles(Rebasing, _OverwriteFiles):
    """Delete exactly the given files and add new ones, recorded as a ``replace`` snapshot (same rows)."""

    def _summary(self, snapshot_properties: dict[str, str] = EMPTY_DICT) -> Summary:
        # pyiceberg's totals bookkeeping only knows append/overwrite/delete: compute as overwrite, relabel.
        summary = super()._summary(snapshot_properties)
        return Summary(Operation.REPLACE, **summary.additional_properties)


class RewriteManifests(Rebasing, _SnapshotProducer["RewriteManifests"]):
    """Repack the parent's live manifest entries into few manifests, as a ``replace`` snapshot."""

    entries_per_manifest: int = 20_000

    def _existing_manifests(self) -> list[ManifestFile]:
        parent = (
            self._transaction.table_metadata.snapshot_by_id(self._parent_snapshot_id)
            if self._parent_snapshot_id
            else None
        )
        if parent is None:
            return []
        by_spec: dict[int, list[ManifestEntry]] = defaultdict(list)
        kept: list[ManifestFile] = []
        for manifest in parent.manifests(self._io):
            if manifest.content != ManifestContent.DATA:
                kept.append(manifest)  # K2 writes no delete files; keep any as they are
                continue
            for entry in manifest.fetch_manifest_entry(self._io, discard_deleted=True):
                by_spec[manifest.partition_spec_id].append(
                    ManifestEntry.from_args(
                        status=ManifestEntryStatus.EXISTING,
                        snapshot_id=entry.snapshot_id,
                        sequence_number=entry.sequence_number,
                        file_sequence_number=entry.file_sequence_number,
                        data_file=entry.data_file,
                    )
                )
        written: list[ManifestFile] = []
        for spec_id, entries in by_spec.items():
            for start in range(0, len(entries), self.entries_per_manifest):
                with self.new_manifest_writer(self.spec(spec_id)) as writer:
                    for entry in entries[start : start + self.entries_per_manifest]:
                        writer.add_entry(entry)
                written.append(writer.to_manifest_file())
        return written + kept

    def _deleted_entries(self) -> list[ManifestEntry]:
        return []

    def _summary(self, snapshot_properties: dict[str, str] = EMPTY_DICT) -> Summary:
        self._operation = Operation.OVERWRITE
        summary = super()._summary(snapshot_properties)
        return Summary(Operation.REPLACE, **summary.additional_properties)


class CachedTransaction(Transaction):
    """pyiceberg's Transaction re-derives (deep-copies) the table metadata on every access; cache it.

    A snapshot producer reads ``table_metadata`` dozens of times per commit and the copy grows with the
    snapshot history, which made each maintenance commit slow enough to lose every race with landing.
    The cache is keyed on the identity of the base metadata and of the staged updates (both immutable).
    """

    _cached: tuple[int, int, TableMetadata] | None = None

    @property
    def table_metadata(self) -> TableMetadata:
        key = (id(self._table.metadata), id(self._updates))
        if self._cached is None or self._cached[:2] != key:
            self._cached = (*key, update_table_metadata(self._table.metadata, self._updates))
        return self._cached[2]


_WRAPPED = "_k2_wrapped"


def wrap_parquet_writer_options(adjust: Any) -> None:
    """Pass the pyarrow ``ParquetWriter`` keywords pyiceberg derives from table properties through
    ``adjust(options, table_properties) -> options`` in this process (idempotent; :mod:`k2.lake.encoding`
    uses it for per-column encodings, which pyiceberg 0.12 has no table property for). A pyiceberg without
    the private function is left as it is (the compat test names it)."""
    original = getattr(_pyiceberg_arrow, "_get_parquet_writer_kwargs", None)
    if original is None or getattr(original, _WRAPPED, False):
        return

    def wrapped(table_properties: Any) -> dict[str, Any]:
        return dict(adjust(original(table_properties), table_properties))

    setattr(wrapped, _WRAPPED, True)
    _pyiceberg_arrow._get_parquet_writer_kwargs = wrapped
