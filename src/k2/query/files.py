"""Planned data files per snapshot: point queries read the pruned Parquet files directly, not via ``iceberg_scan``.

A snapshot is immutable, so the list of its live data files (with each file's partition values and column
bounds) is planned once and kept, keyed by (table, snapshot id); manifests are immutable too and are read
once per path, so a new commit costs only its new manifests. A query then prunes that list in Python by
its symbols, exchange and time range (partition values first: ``bucket(symbol)``, ``day(time)``,
``identity``; then the files' lower/upper bounds) and reads the surviving files with DuckDB's
``read_parquet``. This skips ``iceberg_scan``'s per-query planning (metadata JSON, manifest list, every
manifest), which was most of a symbol-hour's time.

Pruning is conservative: a file is dropped only when its partition values or bounds prove it holds no row
of the query; the SQL still applies every filter to the rows read, so the answer is exactly
``iceberg_scan``'s.

Hazards (each makes :meth:`FilePlanner.files` answer None: the caller reads through ``iceberg_scan``):

* a snapshot with live **delete files** (K2 writes none: appends, and maintenance rewrites whole files);
* a table whose schema has **evolved** (more than one schema in its metadata), when a pruned file's
  Parquet footer lacks a column of the snapshot's schema or carries it under another Iceberg field id
  (older files written before a column was added or renamed); footers are read once per file path;
* a partition transform this module does not know is simply not used for pruning (never wrong, slower).

The order-book reads prune the same plans by their own rules (:mod:`k2.query.book_files`, through
:meth:`FilePlanner.planned`): the plans keep ``last_update_id`` bounds for them.

Example::

    planner = FilePlanner()
    paths = planner.files(table, snapshot_id, Prune(("BTCUSDT",), None, start_us, end_us, "exchange_ts"))
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pyarrow.parquet as pq
from pyiceberg.conversions import from_bytes
from pyiceberg.manifest import ManifestContent
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import BucketTransform, DayTransform, IdentityTransform
from pyiceberg.types import LongType, PrimitiveType, StringType, TimestampType, TimestamptzType

from k2.lru import BoundedLRU

_DAY_US = 86_400_000_000
_STRING_COLUMNS = ("symbol", "exchange")
_LONG_COLUMNS = ("last_update_id",)  # the order-book tables' update id (k2.query.book_files prunes by it)


@dataclass(frozen=True)
class Prune:
    """What a query filters on: symbols (None: any), exchange, ``[start_us, end_us)`` on ``time_column``."""

    symbols: tuple[str, ...] | None
    exchange: str | None
    start_us: int | None
    end_us: int | None
    time_column: str


@dataclass(frozen=True)
class PlannedFile:
    """One live data file and what proves a query can skip it."""

    path: str
    # Partition checks: (kind, column, argument, value); kind in bucket, day, identity.
    partition: tuple[tuple[str, str, int, Any], ...]
    # Column bounds: name -> (lower, upper) for symbol, exchange, last_update_id and timestamp columns
    # (when both are recorded).
    bounds: dict[str, tuple[Any, Any]]


@dataclass(frozen=True)
class _Plan:
    files: tuple[PlannedFile, ...]
    direct: bool  # False: delete files are live, read through iceberg_scan
    schema: Schema
    evolved: bool


@lru_cache(maxsize=4096)
def _bucket(buckets: int, symbol: str) -> int | None:
    return BucketTransform(buckets).transform(StringType())(symbol)


def _keep(file: PlannedFile, prune: Prune) -> bool:
    """False only when the file provably holds no row of ``prune``."""
    for kind, column, argument, value in file.partition:
        if value is None or (kind != "identity" and not isinstance(value, int)):
            continue  # unknown shape: never prune on it
        if kind == "bucket" and column == "symbol" and prune.symbols is not None:
            if all(_bucket(argument, s) != value for s in prune.symbols):
                return False
        elif kind == "identity" and column == "symbol" and prune.symbols is not None:
            if value not in prune.symbols:
                return False
        elif kind == "identity" and column == "exchange" and prune.exchange is not None:
            if value != prune.exchange:
                return False
        elif kind == "day" and column == prune.time_column:
            if prune.start_us is not None and value < prune.start_us // _DAY_US:
                return False
            if prune.end_us is not None and value > (prune.end_us - 1) // _DAY_US:
                return False
    bounds = file.bounds
    if prune.symbols is not None and "symbol" in bounds:
        lo, hi = bounds["symbol"]
        if all(not (lo <= s <= hi) for s in prune.symbols):
            return False
    if prune.exchange is not None and "exchange" in bounds:
        lo, hi = bounds["exchange"]
        if not (lo <= prune.exchange <= hi):
            return False
    if prune.time_column in bounds:
        lo, hi = bounds[prune.time_column]
        if prune.start_us is not None and hi < prune.start_us:
            return False
        if prune.end_us is not None and lo >= prune.end_us:
            return False
    return True


def _file_facts(table: Table, data_file: Any, schema: Schema) -> PlannedFile:
    spec = table.specs()[data_file.spec_id]
    checks = []
    for position, part in enumerate(spec.fields):
        source = schema.find_column_name(part.source_id)
        if source is None:
            continue
        value = data_file.partition[position]
        if isinstance(part.transform, BucketTransform):
            checks.append(("bucket", source, part.transform.num_buckets, value))
        elif isinstance(part.transform, DayTransform):
            checks.append(("day", source, 0, value))
        elif isinstance(part.transform, IdentityTransform):
            checks.append(("identity", source, 0, value))
    bounds: dict[str, tuple[Any, Any]] = {}
    lower, upper = data_file.lower_bounds or {}, data_file.upper_bounds or {}
    for column in schema.fields:
        kind = column.field_type
        wanted = column.name in _STRING_COLUMNS and isinstance(kind, StringType)
        wanted = wanted or (column.name in _LONG_COLUMNS and isinstance(kind, LongType))
        wanted = wanted or isinstance(kind, (TimestampType, TimestamptzType))
        if (
            wanted
            and isinstance(kind, PrimitiveType)
            and column.field_id in lower
            and column.field_id in upper
        ):
            bounds[column.name] = (
                from_bytes(kind, lower[column.field_id]),
                from_bytes(kind, upper[column.field_id]),
            )
    return PlannedFile(str(data_file.file_path), tuple(checks), bounds)


class FilePlanner:
    """Planned data files per (table, snapshot id), manifests per path, Parquet footers per path; thread-safe.

    ``max_snapshots`` bounds the plans kept (least recently used dropped first).
    """

    def __init__(self, max_snapshots: int = 64) -> None:
        self._lock = threading.Lock()  # the counter below
        self._plans: BoundedLRU[tuple[str, int], _Plan] = BoundedLRU(max_snapshots)
        self._manifests: BoundedLRU[str, tuple[ManifestContent, tuple[Any, ...]]] = BoundedLRU(
            16 * max_snapshots
        )
        self._footers: BoundedLRU[str, dict[str, int | None]] = BoundedLRU(100_000)
        self.plans_built = 0  # how many snapshots were planned (a test checks a new commit is planned anew)

    def _entries(self, table: Table, manifest: Any) -> tuple[ManifestContent, tuple[Any, ...]]:
        cached = self._manifests.get(manifest.manifest_path)
        if cached is not None:
            return cached
        files = tuple(e.data_file for e in manifest.fetch_manifest_entry(table.io, discard_deleted=True))
        result = (manifest.content, files)
        self._manifests.put(manifest.manifest_path, result)
        return result

    def _plan(self, table: Table, snapshot_id: int) -> _Plan | None:
        key = (table.metadata.table_uuid.hex, snapshot_id)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        snapshot = table.snapshot_by_id(snapshot_id)
        if snapshot is None:
            return None
        schemas = table.schemas()
        schema = (
            schemas.get(snapshot.schema_id, table.schema())
            if snapshot.schema_id is not None
            else table.schema()
        )
        files: list[PlannedFile] = []
        direct = True
        for manifest in snapshot.manifests(table.io):
            content, entries = self._entries(table, manifest)
            if content != ManifestContent.DATA:
                direct = direct and not entries
                continue
            files.extend(_file_facts(table, f, schema) for f in entries)
        plan = _Plan(tuple(files), direct, schema, len(schemas) > 1)
        self._plans.put(key, plan)
        with self._lock:
            self.plans_built += 1
        return plan

    def _footer(self, table: Table, path: str) -> dict[str, int | None]:
        """Top-level column name -> Iceberg field id as written in the file's Parquet footer (cached per path)."""
        cached = self._footers.get(path)
        if cached is not None:
            return cached
        with table.io.new_input(path).open() as stream:
            schema = pq.read_schema(stream)
        columns: dict[str, int | None] = {}
        for field in schema:
            raw = (field.metadata or {}).get(b"PARQUET:field_id")
            columns[field.name] = int(raw) if raw is not None else None
        self._footers.put(path, columns)
        return columns

    def planned(self, table: Table, snapshot_id: int) -> tuple[PlannedFile, ...] | None:
        """Every live data file of ``snapshot_id`` with its partition values and bounds (planned once);
        None when the snapshot is unknown or has live delete files (read it through ``iceberg_scan``)."""
        plan = self._plan(table, snapshot_id)
        return plan.files if plan is not None and plan.direct else None

    def files(self, table: Table, snapshot_id: int, prune: Prune) -> tuple[list[str], Schema] | None:
        """The data files of ``snapshot_id`` that may hold rows of ``prune`` and the snapshot's schema;
        None when the snapshot must be read through ``iceberg_scan`` (see the module's hazards)."""
        plan = self._plan(table, snapshot_id)
        if plan is None or not plan.direct:
            return None
        kept = [f.path for f in plan.files if _keep(f, prune)]
        if plan.evolved:
            for path in kept:
                footer = self._footer(table, path)
                for field in plan.schema.fields:
                    if footer.get(field.name, -1) not in (field.field_id, None):
                        return None
        return kept, plan.schema
