"""Resolving what a query reads: the Iceberg tables (cached while they do not move), snapshots and ``as_of``.

The first room of the query client (:class:`k2.query.client.Client` = resolving + SQL building + analytics).
``_resolve(short, as_of)`` turns a table name and an optional pin (snapshot id of any of K2's tables, or a
time) into a :class:`_Read`: the exact metadata JSON and snapshot id every scan of that query uses.

Hazard: a parsed table is reused while the SQL catalog reports the same metadata location; another catalog
type is asked every time.

Example::

    client._resolve("trades", as_of="2024-08-09T00:00:00Z").snapshot_id
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table

from k2.config import Settings
from k2.lake.catalog import TABLES, load_catalog, metadata_location
from k2.lake.compat import metadata_location_from_sql_catalog
from k2.lake.summary import OFFSETS_KEY, RANGES_KEY, offsets_from_summary
from k2.lake.tags import TAG_PREFIX, list_tags, resolve_tag
from k2.query.engine import ConnectionPool
from k2.query.errors import (
    InvalidRangeError,
    QueryError,
)
from k2.query.files import FilePlanner
from k2.query.params import parse_time
from k2.query.result import QueryResult

AsOf = int | datetime | str


def _tag_name(as_of: object) -> str | None:
    """``NAME`` for ``as_of="tag:NAME"``, else None."""
    if isinstance(as_of, str) and as_of.strip().startswith(TAG_PREFIX):
        return as_of.strip()[len(TAG_PREFIX) :]
    return None


def _missing(table: Table, snap: Any, short: str) -> tuple[str, ...]:
    """The message columns absent from the schema ``snap`` was written with (none for the current schema)."""
    schema_id = getattr(snap, "schema_id", None)
    if schema_id is None or schema_id == table.metadata.current_schema_id:
        return ()
    schema = table.schemas().get(schema_id)
    if schema is None:
        return ()
    present = {f.name for f in schema.fields}
    return tuple(f.name for f in TABLES[short].record.fields if f.name not in present)


@dataclass(frozen=True)
class _Read:
    """What one table read resolves to: the metadata JSON and the snapshot id (None: no data then)."""

    short: str
    location: str | None
    snapshot_id: int | None
    summary: dict[str, str]
    pinned: bool
    # The loaded table the snapshot belongs to (its data files are planned from it); not part of equality.
    table: Table | None = field(default=None, compare=False, repr=False)
    # Message columns the snapshot's schema lacks (a snapshot from before a schema upgrade): read as NULL.
    missing: tuple[str, ...] = ()


class ClientState:
    """What every room of the client shares; :class:`k2.query.client.Client` sets it up (a pinned client
    shares its parent's pools, catalog and caches)."""

    settings: Settings
    _pool: ConnectionPool
    _catalog: Catalog | None
    _catalog_lock: threading.Lock
    _symbols_cache: dict[tuple[Any, ...], pa.Table]
    _tables: dict[str, Table]
    _sql_pool: ConnectionPool
    _sql_views: dict[int, dict[str, tuple[str | None, int | None]]]
    _pin: int | datetime | None
    _recent_warned: set[str]
    _owns_pool: bool
    _files: FilePlanner


class Resolver(ClientState):
    """Tables, snapshots and ``as_of`` (see :mod:`k2.query` for the contract)."""

    # -- snapshots ---------------------------------------------------------------------------------
    def _current_location(self, short: str) -> str | None:
        """The table's metadata location straight from a SQL catalog's table (None: ask the catalog API)."""
        namespace, name = TABLES[short].identifier
        return metadata_location_from_sql_catalog(self._catalog, self.settings.catalog_name, namespace, name)

    def _load(self, short: str) -> Table | None:
        with self._catalog_lock:
            if self._catalog is None:
                self._catalog = load_catalog(self.settings)
            # Parsing the metadata JSON costs milliseconds per query; a SQL catalog tells in ~0.2 ms whether
            # the table moved, so the parsed table is reused until it does.
            cached = self._tables.get(short)
            if cached is not None and self._current_location(short) == cached.metadata_location:
                return cached
            try:
                table = self._catalog.load_table(TABLES[short].identifier)
            except NoSuchTableError:
                return None
            self._tables[short] = table
            return table

    def _normalise_as_of(self, as_of: AsOf | None) -> int | datetime | None:
        if as_of is None:
            return None
        if isinstance(as_of, bool):
            raise QueryError(
                f"as_of: expected a snapshot id, a tag:NAME or a timezone-aware time, found {as_of!r}"
            )
        if isinstance(as_of, int):
            return as_of
        tag = _tag_name(as_of)
        if tag is not None:
            return self._tagged_snapshot(tag)
        if isinstance(as_of, str) and as_of.strip().lstrip("-").isdigit():
            return int(as_of.strip())
        try:
            return parse_time(as_of, "as_of")
        except InvalidRangeError as exc:
            raise InvalidRangeError(f"{exc} (or a snapshot id, or tag:NAME)") from None

    def _tagged_snapshot(self, tag: str, short: str | None = None) -> int:
        """The snapshot a tag names: on table ``short`` when it holds the tag, else on the first table that does.

        A snapshot of another table then pins this one by commit time, as a snapshot id does.
        """
        order = ([short] if short else []) + [t for t in TABLES if t != short]
        for name in order:
            table = self._load(name)
            if table is not None and tag in {t.name for t in list_tags(table)}:
                return resolve_tag(table, tag)
        raise QueryError(
            f"as_of: expected a tag {tag!r} on one of K2's tables, found none (k2 tag list shows them)"
        )

    def _snapshot_owner_time(self, snapshot_id: int) -> datetime:
        for short in TABLES:
            table = self._load(short)
            if table is not None and table.snapshot_by_id(snapshot_id) is not None:
                snap = table.snapshot_by_id(snapshot_id)
                assert snap is not None
                return datetime.fromtimestamp(snap.timestamp_ms / 1000, tz=UTC)
        raise QueryError(
            f"as_of: expected a snapshot id of one of K2's tables, found unknown snapshot {snapshot_id}"
        )

    def _resolve(self, short: str, as_of: AsOf | None = None) -> _Read:
        tag = _tag_name(as_of)
        pin = self._tagged_snapshot(tag, short) if tag is not None else self._normalise_as_of(as_of)
        if pin is None:
            pin = self._pin
        table = self._load(short)
        if table is None:
            return _Read(short, None, None, {}, pin is not None)
        if pin is None:
            snap = table.current_snapshot()
        elif isinstance(pin, int):
            snap = table.snapshot_by_id(pin)
            if snap is None:
                moment = self._snapshot_owner_time(pin)
                snap = table.snapshot_as_of_timestamp(int(moment.timestamp() * 1000))
        else:
            snap = table.snapshot_as_of_timestamp(int(pin.timestamp() * 1000))
        if snap is None:
            return _Read(short, metadata_location(table), None, {}, pin is not None, table)
        summary = dict(snap.summary.additional_properties) if snap.summary is not None else {}
        location = metadata_location(table)
        missing = _missing(table, snap, short)
        return _Read(short, location, int(snap.snapshot_id), summary, pin is not None, table, missing)

    def snapshot_id(self, table: str = "trades", as_of: AsOf | None = None) -> int | None:
        """The snapshot id a query on ``table`` reads now (or at ``as_of``); None when the table is empty.

        Pass it as ``as_of=`` to later queries to see exactly the same data (pagination).

        Example::

            sid = client.snapshot_id("trades")
            page2 = client.trades("BTCUSDT", start, end, as_of=sid)
        """
        self._check_table(table)
        return self._resolve(table, as_of).snapshot_id

    @staticmethod
    def _check_table(table: str) -> None:
        if table not in TABLES:
            raise QueryError(f"expected a table among {sorted(TABLES)}, found {table!r}")

    def snapshots(self, table: str = "trades") -> QueryResult:
        """The table's commits, oldest first: id, parent, time, operation, rows added, total rows, Kafka offsets,
        and the tags (``k2 tag``, end-of-day tags) that name each snapshot.

        Example::

            client.snapshots("trades").to_pylist()[-1]["kafka_offsets"]
        """
        self._check_table(table)
        loaded = self._load(table)
        rows: dict[str, list[Any]] = {
            k: []
            for k in (
                "snapshot_id",
                "parent_id",
                "committed_at",
                "operation",
                "added_rows",
                "total_rows",
                "kafka_offsets",
                "kafka_ranges",
                "summary",
                "tags",
            )
        }
        latest: int | None = None
        if loaded is not None:
            tags: dict[int, list[str]] = {}
            for tag in list_tags(loaded):
                tags.setdefault(tag.snapshot_id, []).append(tag.name)
            limit_ms = None
            if self._pin is not None:
                pinned = self._resolve(table)
                latest = pinned.snapshot_id
                snap = loaded.snapshot_by_id(latest) if latest is not None else None
                limit_ms = snap.timestamp_ms if snap is not None else -1
            else:
                current = loaded.current_snapshot()
                latest = int(current.snapshot_id) if current is not None else None
            for snap in sorted(
                loaded.metadata.snapshots, key=lambda s: (s.timestamp_ms, s.sequence_number or 0)
            ):
                if limit_ms is not None and snap.timestamp_ms > limit_ms:
                    continue
                props = dict(snap.summary.additional_properties) if snap.summary is not None else {}
                rows["snapshot_id"].append(int(snap.snapshot_id))
                rows["parent_id"].append(snap.parent_snapshot_id)
                rows["committed_at"].append(datetime.fromtimestamp(snap.timestamp_ms / 1000, tz=UTC))
                rows["operation"].append(snap.summary.operation.value if snap.summary is not None else None)
                rows["added_rows"].append(int(props.get("added-records", 0)))
                rows["total_rows"].append(int(props.get("total-records", 0)))
                rows["kafka_offsets"].append(
                    json.dumps(offsets_from_summary(props)) if OFFSETS_KEY in props else None
                )
                rows["kafka_ranges"].append(props.get(RANGES_KEY))
                rows["summary"].append(json.dumps(props, sort_keys=True))
                rows["tags"].append(sorted(tags.get(int(snap.snapshot_id), [])))
        schema = pa.schema(
            [
                ("snapshot_id", pa.int64()),
                ("parent_id", pa.int64()),
                ("committed_at", pa.timestamp("us", tz="UTC")),
                ("operation", pa.string()),
                ("added_rows", pa.int64()),
                ("total_rows", pa.int64()),
                ("kafka_offsets", pa.string()),
                ("kafka_ranges", pa.string()),
                ("summary", pa.string()),
                ("tags", pa.list_(pa.string())),
            ]
        )
        return QueryResult(pa.table(rows, schema=schema), {table: latest})
