"""The Iceberg catalog and K2's tables, from settings.

Catalog kinds: a SQL catalog on SQLite (default, under ``data_dir``) or PostgreSQL, or a REST catalog
(SeaweedFS, Polaris, Glue's REST endpoint, S3 Tables...). Warehouse on local disk (default) or S3.

Hazards: pyiceberg writes files in the order given (the table's sort order is metadata only), so K2
sorts every batch itself before appending (:mod:`k2.lake.writer`). pyiceberg writes no version-hint
file: readers (DuckDB) get the exact metadata JSON path from :func:`metadata_location`.

Example:
    >>> from k2.config import Settings
    >>> from k2.lake.catalog import TABLES
    >>> TABLES["trades"].identifier
    ('market_data', 'trades')
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.table import Table
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.transforms import BucketTransform, DayTransform, IdentityTransform

from k2.config import Settings
from k2.lake.encoding import delta_properties
from k2.lake.encoding import install as install_encodings
from k2.model import BOOK_DELTA, BOOK_SNAPSHOT, GAP, INSTRUMENT, KLINE, QUOTE, TRADE, RecordType
from k2.pacing import Backoff, retrying


@dataclass(frozen=True)
class TableDef:
    """One of K2's Iceberg tables: identifier, record type, partitioning and sort columns."""

    short_name: str
    namespace: str
    name: str
    record: RecordType
    partition_by_time: bool
    bucket_symbol: bool
    sort_columns: tuple[str, ...]

    @property
    def identifier(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def full_name(self) -> str:
        return f"{self.namespace}.{self.name}"

    def partition_spec(self, symbol_buckets: int) -> PartitionSpec:
        schema = self.record.iceberg_schema()
        fields = []
        next_id = 1000
        if self.partition_by_time and self.record.time_field:
            source = schema.find_field(self.record.time_field).field_id
            fields.append(PartitionField(source, next_id, DayTransform(), f"{self.record.time_field}_day"))
            next_id += 1
        if self.bucket_symbol:
            source = schema.find_field("symbol").field_id
            fields.append(PartitionField(source, next_id, BucketTransform(symbol_buckets), "symbol_bucket"))
        elif self.short_name == "instruments":
            source = schema.find_field("exchange").field_id
            fields.append(PartitionField(source, next_id, IdentityTransform(), "exchange"))
        return PartitionSpec(*fields)

    def sort_order(self) -> SortOrder:
        schema = self.record.iceberg_schema()
        return SortOrder(
            *[
                SortField(source_id=schema.find_field(c).field_id, transform=IdentityTransform())
                for c in self.sort_columns
            ]
        )


TABLES: dict[str, TableDef] = {
    "trades": TableDef(
        "trades", "market_data", "trades", TRADE, True, True, ("symbol", "exchange_ts", "trade_id")
    ),
    "quotes": TableDef(
        "quotes", "market_data", "quotes", QUOTE, True, True, ("symbol", "exchange_ts", "update_id")
    ),
    "instruments": TableDef(
        "instruments", "reference", "instruments", INSTRUMENT, False, False, ("exchange", "symbol")
    ),
    "gaps": TableDef(
        "gaps", "quality", "gaps", GAP, False, False, ("exchange", "symbol", "first_missing_id")
    ),
    "klines": TableDef(
        "klines", "market_data", "klines", KLINE, True, True, ("symbol", "interval", "open_time")
    ),
    # Book tables: day(exchange_ts) + bucket(symbol) like trades, rows sorted by (symbol, update id) so a
    # symbol-hour is a few row groups whose min/max on symbol, exchange_ts and last_update_id prune the rest.
    "book_deltas": TableDef(
        "book_deltas",
        "market_data",
        "book_deltas",
        BOOK_DELTA,
        True,
        True,
        ("symbol", "last_update_id", "side", "price"),
    ),
    "book_snapshots": TableDef(
        "book_snapshots",
        "market_data",
        "book_snapshots",
        BOOK_SNAPSHOT,
        True,
        True,
        ("symbol", "last_update_id"),
    ),
}


def s3_properties(settings: Settings) -> dict[str, str]:
    """pyiceberg FileIO properties for S3 from settings (empty when S3 is not configured)."""
    props: dict[str, str] = {}
    if settings.s3_endpoint:
        props["s3.endpoint"] = settings.s3_endpoint
        props["s3.path-style-access"] = "true"
    if settings.s3_access_key_id:
        props["s3.access-key-id"] = settings.s3_access_key_id
    if settings.s3_secret_access_key:
        props["s3.secret-access-key"] = settings.s3_secret_access_key.get_secret_value()
    if settings.s3_endpoint or settings.s3_access_key_id or settings.warehouse_location.startswith("s3://"):
        props["s3.region"] = settings.s3_region
    return props


def load_catalog(settings: Settings) -> Catalog:
    """Open the catalog the settings describe (creating K2's local directories for the default)."""
    install_encodings()  # delta-encoded lineage columns in every data file this process writes
    props: dict[str, Any] = {"warehouse": settings.warehouse_location, **s3_properties(settings)}
    if settings.catalog_properties:  # e.g. SigV4 signing for Glue's / S3 Tables' REST endpoints
        props.update(json.loads(settings.catalog_properties))
    if settings.catalog_type == "sql":
        from pyiceberg.catalog.sql import SqlCatalog

        if settings.catalog_uri is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        if settings.warehouse_location.startswith("file://"):
            Path(settings.warehouse_location.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        props["uri"] = settings.catalog_url
        props["init_catalog_tables"] = "true"
        return _open_sql_catalog(SqlCatalog, settings.catalog_name, props)
    from pyiceberg.catalog.rest import RestCatalog

    props["uri"] = settings.catalog_url
    if settings.catalog_credential:
        props["credential"] = settings.catalog_credential.get_secret_value()
    if settings.catalog_token:
        props["token"] = settings.catalog_token.get_secret_value()
    if settings.catalog_warehouse_name:
        props["warehouse"] = settings.catalog_warehouse_name
    return RestCatalog(settings.catalog_name, **props)


_CATALOG_CREATE_ATTEMPTS = 5


def _open_sql_catalog(catalog_class: Any, name: str, props: dict[str, Any]) -> Catalog:
    """Open a SQL catalog, surviving processes that race to create its own tables.

    Hazard: pyiceberg probes for ``iceberg_tables`` and then creates it, so two processes opening a new
    catalog at once can both see it absent; the loser gets "table ... already exists" (SQLite) or a
    duplicate-key error (PostgreSQL). The winner has created the tables by then, so opening again works.
    """
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    def lost_race(exc: BaseException) -> bool:
        return "already exists" in str(exc) or "duplicate key" in str(exc)

    for attempt in retrying(
        (OperationalError, IntegrityError, ProgrammingError),
        attempts=_CATALOG_CREATE_ATTEMPTS,
        backoff=Backoff(0.05, 1.0),
        when=lost_race,
    ):
        with attempt:
            return catalog_class(name, **props)
    raise AssertionError("unreachable")


# Parquet layout (benchmarks/storage_bench.py, docs/performance.md): pyiceberg's defaults write one row group
# of up to 1M rows per file, so a symbol filter decodes a whole day-bucket file, and a 2 MB dictionary limit
# that dictionary-encodes high-cardinality columns (ids, times, quantities) in smaller groups, which zstd
# then compresses worse than plain values. 65,536-row groups let DuckDB skip by each group's min/max
# (files are sorted by symbol, time); a 64 KB dictionary limit keeps dictionaries for the low-cardinality
# columns only; zstd level 3 (zstd's own default) over level 1. Only files written after the change use it.
PARQUET_LAYOUT = {
    "write.parquet.row-group-limit": "65536",
    "write.parquet.dict-size-bytes": "65536",
    "write.parquet.compression-level": "3",
}
# Per-table changes to that layout. A book_snapshots row is wide (N levels x 4 decimal lists) and a book()
# read needs one or a few of them: groups of 32 rows let DuckDB decode only the group holding them (min/max
# on symbol and update id) instead of every list of a day's file (benchmarks/book_scale_bench.py,
# docs/performance.md); ~30% more bytes for that table than 128-row groups.
TABLE_LAYOUT: dict[str, dict[str, str]] = {"book_snapshots": {"write.parquet.row-group-limit": "32"}}


def table_layout(short: str | None) -> dict[str, str]:
    """The Parquet layout properties of table ``short`` (:data:`PARQUET_LAYOUT` with its own changes and its
    delta-encoded columns, :mod:`k2.lake.encoding`)."""
    return {**PARQUET_LAYOUT, **TABLE_LAYOUT.get(short or "", {}), **delta_properties(short)}


def _layout_missing(short: str, properties: dict[str, str]) -> dict[str, str]:
    """Layout properties a table lacks; a table's own change replaces the generic value an older K2 set.
    K2's own properties (``k2.*``, e.g. the delta-encoded columns) always take this K2's value: no one
    else sets them, and an older K2's value would keep new columns out."""
    return {
        k: v
        for k, v in table_layout(short).items()
        if properties.get(k) != v
        and (k.startswith("k2.") or properties.get(k) in (None, PARQUET_LAYOUT.get(k)))
    }


def table_properties(settings: Settings, short: str | None = None) -> dict[str, str]:
    return {
        **table_layout(short),
        "write.parquet.compression-codec": "zstd",
        "write.target-file-size-bytes": str(settings.target_file_size_bytes),
        "format-version": "2",
        # K2 writers recompute snapshot summaries (Kafka offsets) on conflict themselves; pyiceberg's
        # built-in retry would re-apply a stale summary on top of another writer's commit.
        "commit.retry.num-retries": "0",
    }


def ensure_tables(catalog: Catalog, settings: Settings) -> dict[str, Table]:
    """Create K2's namespaces and tables when missing (idempotent: ``k2 init``); return them by short name."""
    tables: dict[str, Table] = {}
    for namespace in sorted({t.namespace for t in TABLES.values()}):
        try:
            catalog.create_namespace(namespace)
        except NamespaceAlreadyExistsError:
            pass
        except Exception:
            # Two processes creating the namespace at once: SQLite reports the loser's insert as an
            # IntegrityError rather than NamespaceAlreadyExistsError. Fine if it exists now.
            if namespace not in {ns[0] for ns in catalog.list_namespaces()}:
                raise
    for short, tdef in TABLES.items():
        try:
            tables[short] = catalog.load_table(tdef.identifier)
            # Tables created by an older K2 get the retry guard and the Parquet layout (new files only).
            missing = _layout_missing(short, tables[short].properties)
            if tables[short].properties.get("commit.retry.num-retries") != "0" or missing:
                try:
                    with tables[short].transaction() as tx:
                        tx.set_properties({"commit.retry.num-retries": "0", **missing})
                except CommitFailedException:  # another process (or a landing commit) moved it first
                    tables[short] = catalog.load_table(tdef.identifier)
            try:
                evolve_schema(tables[short], tdef.record)  # a model upgrade added optional fields
            except CommitFailedException:  # another process evolved it at the same moment
                tables[short] = catalog.load_table(tdef.identifier)
        except NoSuchTableError:
            try:
                tables[short] = catalog.create_table(
                    tdef.identifier,
                    schema=tdef.record.iceberg_schema(),
                    partition_spec=tdef.partition_spec(settings.symbol_buckets),
                    sort_order=tdef.sort_order(),
                    properties=table_properties(settings, short),
                )
            except TableAlreadyExistsError:  # another process won the race
                tables[short] = catalog.load_table(tdef.identifier)
            except Exception as exc:
                # The same race as reported by the SQL catalog on SQLite (IntegrityError): the table
                # exists now; otherwise the error was real and is raised as it was.
                try:
                    tables[short] = catalog.load_table(tdef.identifier)
                except NoSuchTableError:
                    raise exc from None
    return tables


def evolve_schema(table: Table, record: RecordType) -> list[str]:
    """Add the model's columns that ``table`` lacks (after a model upgrade); return their names.

    Iceberg assigns the new columns fresh field ids; existing rows read them as null. Only optional
    columns can be added this way: a new required column is refused, naming it. Renames, removals and
    type changes are not automatic (see docs/upgrade.md).

    Example::

        evolve_schema(catalog.load_table(("market_data", "trades")), TRADE)   # [] when up to date
    """
    present = {f.name for f in table.schema().fields}
    missing = [f for f in record.iceberg_schema().fields if f.name not in present]
    if not missing:
        return []
    required = [f.name for f in missing if f.required]
    if required:
        raise ValueError(
            f"{'.'.join(table.name())}: expected new columns to be optional (existing rows have no value), "
            f"found required {required}"
        )
    with table.update_schema() as update:
        for field in missing:
            update.add_column(field.name, field.field_type, doc=field.doc)
    return [f.name for f in missing]


def load_table(catalog: Catalog, short_name: str) -> Table:
    """Load one of K2's tables by short name (trades, quotes, instruments, gaps)."""
    tdef = TABLES.get(short_name)
    if tdef is None:
        raise KeyError(f"expected one of {sorted(TABLES)}, found table {short_name!r}")
    return catalog.load_table(tdef.identifier)


def metadata_location(table: Table) -> str:
    """The exact metadata JSON path of the table's current state (what DuckDB's iceberg_scan needs)."""
    return str(table.metadata_location)
