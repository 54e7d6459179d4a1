"""SQL persistence and the registry's rules (ids, versions, soft/hard deletes, compatibility config).

Everything HTTP-free lives here so the rules can be read in one place; :mod:`.server` maps
:class:`RegistryError` to Confluent error bodies.

Example::

    store = RegistryStore("sqlite://", default_compatibility="BACKWARD")
    sid, version = store.register("t-value", '{"type": "string"}')
    assert (sid, version) == (1, 1)
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.pool import StaticPool

from k2.bus.registry.compat import COMPATIBILITY_LEVELS, check, parse_avro
from k2.pacing import Backoff, retrying

# Compatibility levels are stored per subject; the global row uses this key (no subject may be empty).
GLOBAL = ""

metadata = MetaData()
schemas = Table(
    "registry_schemas",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("guid", String(36), nullable=False, unique=True),
    Column("schema_type", String(16), nullable=False),
    # sha256 of type + compact schema text + references: one global id per distinct schema.
    Column("fingerprint", String(64), nullable=False, unique=True),
    Column("schema_text", Text, nullable=False),
    Column("references_json", Text, nullable=False, default="[]"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    sqlite_autoincrement=True,  # never reuse an id, even after the highest one is deleted
)
versions = Table(
    "registry_versions",
    metadata,
    Column("subject", String(512), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("schema_id", Integer, ForeignKey("registry_schemas.id"), nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
configs = Table(
    "registry_config",
    metadata,
    Column("subject", String(512), primary_key=True),
    Column("compatibility", String(32), nullable=False),
)


class RegistryError(Exception):
    """A request the registry refuses, with Confluent's HTTP status and error code."""

    def __init__(self, http_status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.error_code = error_code
        self.message = message


def _subject_not_found(subject: str) -> RegistryError:
    return RegistryError(404, 40401, f"Subject '{subject}' not found.")


def _version_not_found(subject: str, version: int | str) -> RegistryError:
    return RegistryError(404, 40402, f"Version {version} not found for subject '{subject}'.")


def _schema_not_found(detail: str = "Schema not found") -> RegistryError:
    return RegistryError(404, 40403, detail)


@dataclass(frozen=True)
class StoredSchema:
    """One schema text with its global id."""

    id: int
    guid: str
    schema_type: str
    text: str
    references: list[dict[str, Any]]

    def body(self) -> dict[str, Any]:
        """The Confluent JSON fields describing this schema (``schemaType`` omitted for AVRO, as Confluent does)."""
        out: dict[str, Any] = {"schema": self.text}
        if self.schema_type != "AVRO":
            out["schemaType"] = self.schema_type
        if self.references:
            out["references"] = self.references
        return out


@dataclass(frozen=True)
class SubjectVersion:
    """A schema registered under a subject at a version."""

    subject: str
    version: int
    deleted: bool
    schema: StoredSchema

    def body(self) -> dict[str, Any]:
        """The Confluent JSON body of ``GET /subjects/{s}/versions/{v}``."""
        return {
            "subject": self.subject,
            "version": self.version,
            "id": self.schema.id,
            "guid": self.schema.guid,
            **self.schema.body(),
        }


def compact(text: str) -> str:
    """The schema JSON without insignificant whitespace (attribute order kept), as Confluent stores it.

    Example:
        >>> compact('{ "type" : "string" }')
        '{"type":"string"}'
    """
    return json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)


def normalized(text: str) -> str:
    """The ``normalize=true`` form: Avro's own JSON rendering of the parsed schema with sorted keys.

    Unlike Avro's Parsing Canonical Form it keeps logical types, defaults and docs, so nothing the
    readers rely on (e.g. decimal scale) is lost.

    Example:
        >>> normalized('{"type": "string"}') == normalized('"string"')
        True
    """
    return json.dumps(parse_avro(text).to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _fingerprint(schema_type: str, text: str, references: list[dict[str, Any]]) -> str:
    payload = json.dumps([schema_type, text, references], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


class RegistryStore:
    """Schemas, subject versions and compatibility config in one SQL database (SQLite or PostgreSQL)."""

    def __init__(self, database_url: str, default_compatibility: str = "BACKWARD") -> None:
        level = default_compatibility.upper()
        if level not in COMPATIBILITY_LEVELS:
            raise ValueError(
                f"default compatibility: expected one of {', '.join(COMPATIBILITY_LEVELS)}, found {default_compatibility!r}"
            )
        self.default_compatibility = level
        self.engine = _engine(database_url)
        _create_tables(self.engine)
        # One writer at a time inside this process; the unique constraints + retry cover several processes.
        self._write_lock = threading.Lock()
        self.retries = 0  # write transactions lost to a concurrent writer and retried

    # -- transactions ---------------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._write_lock, self.engine.begin() as conn:
            yield conn

    def _retrying(self, attempt: Any) -> Any:
        """Run a write transaction, retrying when a concurrent writer (another process) won a race."""
        last: Exception | None = None
        for _ in range(8):
            try:
                with self._write() as conn:
                    return attempt(conn)
            except (IntegrityError, OperationalError) as exc:
                last = exc
                self.retries += 1
        raise RegistryError(500, 50001, f"Error in the backend data store: {last}")

    # -- reads ----------------------------------------------------------------------------------
    def _schema_row(self, conn: Connection, schema_id: int) -> StoredSchema | None:
        row = conn.execute(select(schemas).where(schemas.c.id == schema_id)).first()
        if row is None:
            return None
        return StoredSchema(
            row.id, row.guid, row.schema_type, row.schema_text, json.loads(row.references_json)
        )

    def _versions(self, conn: Connection, subject: str, include_deleted: bool) -> list[SubjectVersion]:
        query = (
            select(versions, schemas)
            .join(schemas, schemas.c.id == versions.c.schema_id)
            .where(versions.c.subject == subject)
            .order_by(versions.c.version)
        )
        if not include_deleted:
            query = query.where(versions.c.deleted.is_(False))
        return [
            SubjectVersion(
                r.subject,
                r.version,
                bool(r.deleted),
                StoredSchema(r.id, r.guid, r.schema_type, r.schema_text, json.loads(r.references_json)),
            )
            for r in conn.execute(query)
        ]

    def schema_by_id(self, schema_id: int) -> StoredSchema:
        """The schema with a global id (kept even after every version using it was deleted)."""
        with self.engine.connect() as conn:
            found = self._schema_row(conn, schema_id)
        if found is None:
            raise _schema_not_found(f"Schema {schema_id} not found")
        return found

    def schema_by_guid(self, guid: str) -> StoredSchema:
        """The schema with a guid."""
        with self.engine.connect() as conn:
            row = conn.execute(select(schemas.c.id).where(schemas.c.guid == guid)).first()
            found = self._schema_row(conn, row.id) if row is not None else None
        if found is None:
            raise _schema_not_found(f"Schema {guid} not found")
        return found

    def id_usages(self, schema_id: int, subject: str | None, include_deleted: bool) -> list[tuple[str, int]]:
        """(subject, version) pairs using a schema id."""
        self.schema_by_id(schema_id)
        query = select(versions.c.subject, versions.c.version).where(versions.c.schema_id == schema_id)
        if subject is not None:
            query = query.where(versions.c.subject == subject)
        if not include_deleted:
            query = query.where(versions.c.deleted.is_(False))
        with self.engine.connect() as conn:
            return [
                (r.subject, r.version)
                for r in conn.execute(query.order_by(versions.c.subject, versions.c.version))
            ]

    def subjects(self, prefix: str | None, include_deleted: bool, deleted_only: bool) -> list[str]:
        """Subject names with at least one (deleted / live) version, sorted."""
        query = select(
            versions.c.subject, func.min(versions.c.deleted.cast(Integer)).label("all_deleted")
        ).group_by(versions.c.subject)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        out = []
        for subject, all_deleted in rows:
            # all_deleted == 1: every version soft-deleted; 0: at least one live version
            if deleted_only and not all_deleted:
                continue
            if not deleted_only and not include_deleted and all_deleted:
                continue
            if prefix and not subject.startswith(prefix):
                continue
            out.append(subject)
        return sorted(out)

    def subject_versions(self, subject: str, include_deleted: bool) -> list[SubjectVersion]:
        """The versions of a subject; 40401 when it has none."""
        with self.engine.connect() as conn:
            found = self._versions(conn, subject, include_deleted)
        if not found:
            raise _subject_not_found(subject)
        return found

    def get_version(self, subject: str, version: int, include_deleted: bool = False) -> SubjectVersion:
        """One version (``-1`` = latest live one)."""
        with self.engine.connect() as conn:
            found = self._versions(conn, subject, include_deleted=True)
        if not found:
            raise _subject_not_found(subject)
        visible = [v for v in found if include_deleted or not v.deleted]
        if not visible:  # every version soft-deleted: the subject is gone, as in Confluent
            raise _subject_not_found(subject)
        if version == -1:
            return visible[-1]
        for item in visible:
            if item.version == version:
                return item
        raise _version_not_found(subject, version)

    def lookup(
        self,
        subject: str,
        text: str,
        schema_type: str,
        references: list[dict[str, Any]],
        normalize: bool,
        include_deleted: bool,
    ) -> SubjectVersion:
        """The version of ``subject`` holding this schema (40401 no subject, 40403 not under it)."""
        parsed = _validate(text, schema_type, references)
        with self.engine.connect() as conn:
            found = self._versions(conn, subject, include_deleted)
        if not found:
            raise _subject_not_found(subject)
        wanted = normalized(text) if normalize else parsed
        for item in reversed(found):
            if item.schema.schema_type != schema_type or item.schema.references != references:
                continue
            have = normalized(item.schema.text) if normalize else item.schema.text
            if have == wanted:
                return item
        raise _schema_not_found(f"Schema not found under subject '{subject}'")

    # -- config ---------------------------------------------------------------------------------
    def subject_compatibility(self, subject: str) -> str | None:
        """The level set for a subject (None when it inherits the global one)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(configs.c.compatibility).where(configs.c.subject == subject)).first()
        return row.compatibility if row is not None else None

    def global_compatibility(self) -> str:
        """The global level (the ``--default-compatibility`` until someone PUTs /config)."""
        return self.subject_compatibility(GLOBAL) or self.default_compatibility

    def effective_compatibility(self, subject: str) -> str:
        """The level that applies to a subject."""
        return self.subject_compatibility(subject) or self.global_compatibility()

    def set_compatibility(self, subject: str, level: str) -> str:
        """Set the level of a subject (or of everything when ``subject`` is GLOBAL)."""
        level = check_level(level)

        def attempt(conn: Connection) -> str:
            if (
                conn.execute(
                    update(configs).where(configs.c.subject == subject).values(compatibility=level)
                ).rowcount
                == 0
            ):
                conn.execute(insert(configs).values(subject=subject, compatibility=level))
            return level

        result: str = self._retrying(attempt)
        return result

    def delete_compatibility(self, subject: str) -> str:
        """Remove a level; returns the level that was in force."""
        previous = self.effective_compatibility(subject) if subject != GLOBAL else self.global_compatibility()
        with self._write() as conn:
            conn.execute(delete(configs).where(configs.c.subject == subject))
        return previous

    # -- compatibility --------------------------------------------------------------------------
    def check_against(
        self, subject: str, text: str, schema_type: str, references: list[dict[str, Any]], version: int | None
    ) -> list[str]:
        """Incompatibility messages of a candidate schema ([] = compatible) under the subject's level.

        ``version`` None: every version the level requires (latest, or all for *_TRANSITIVE);
        otherwise just that version (``-1`` = latest).
        """
        _validate(text, schema_type, references)
        level = self.effective_compatibility(subject)
        with self.engine.connect() as conn:
            live = self._versions(conn, subject, include_deleted=False)
        if version is None:
            targets = live
        else:
            if not live and version == -1:
                return []
            targets = [self.get_version(subject, version)]
        return check(compact(text), [t.schema.text for t in targets], level, by_level=version is None)

    # -- writes ---------------------------------------------------------------------------------
    def register(
        self,
        subject: str,
        text: str,
        schema_type: str = "AVRO",
        references: list[dict[str, Any]] | None = None,
        normalize: bool = False,
    ) -> tuple[int, int, str]:
        """Register a schema under a subject; returns (global id, version, guid).

        The same schema under the same subject returns the existing version; the same schema under
        another subject gets a new version there but the same global id. Raises 409 when the
        subject's compatibility level rejects it.
        """
        if not subject:
            raise RegistryError(422, 42208, "Subject name must not be empty")
        refs = references or []
        stored_text = _validate(text, schema_type, refs)
        if normalize:
            stored_text = normalized(text)
        fingerprint = _fingerprint(schema_type, stored_text, refs)
        level = self.effective_compatibility(subject)

        def attempt(conn: Connection) -> tuple[int, int, str]:
            existing = self._versions(conn, subject, include_deleted=True)
            for item in existing:
                if (
                    not item.deleted
                    and item.schema.schema_type == schema_type
                    and item.schema.text == stored_text
                    and item.schema.references == refs
                ):
                    return item.schema.id, item.version, item.schema.guid
            live = [item.schema.text for item in existing if not item.deleted]
            problems = check(stored_text, live, level)
            if problems:
                raise RegistryError(
                    409,
                    409,
                    f'Schema being registered is incompatible with an earlier schema for subject "{subject}" '
                    f"(compatibility {level}), details: {problems}",
                )
            row = conn.execute(
                select(schemas.c.id, schemas.c.guid).where(schemas.c.fingerprint == fingerprint)
            ).first()
            if row is None:
                guid = str(uuid.uuid4())
                inserted = conn.execute(
                    insert(schemas).values(
                        guid=guid,
                        schema_type=schema_type,
                        fingerprint=fingerprint,
                        schema_text=stored_text,
                        references_json=json.dumps(refs),
                        created_at=_now(),
                    )
                ).inserted_primary_key
                assert inserted is not None
                schema_id = inserted[0]
            else:
                schema_id, guid = row.id, row.guid
            version = max((item.version for item in existing), default=0) + 1
            conn.execute(
                insert(versions).values(
                    subject=subject, version=version, schema_id=schema_id, deleted=False, created_at=_now()
                )
            )
            return int(schema_id), version, guid

        result: tuple[int, int, str] = self._retrying(attempt)
        return result

    def delete_subject(self, subject: str, permanent: bool) -> list[int]:
        """Soft-delete a subject's live versions, or (``permanent``) remove its soft-deleted ones."""
        with self._write() as conn:
            found = self._versions(conn, subject, include_deleted=True)
            if not found:
                raise _subject_not_found(subject)
            live = [v.version for v in found if not v.deleted]
            if permanent:
                if live:
                    raise RegistryError(
                        404,
                        40405,
                        f"Subject '{subject}' was not deleted first before being permanently deleted",
                    )
                conn.execute(delete(versions).where(versions.c.subject == subject))
                conn.execute(delete(configs).where(configs.c.subject == subject))
                return [v.version for v in found]
            if not live:
                raise RegistryError(
                    404,
                    40404,
                    f"Subject '{subject}' was soft deleted. Set permanent=true to delete permanently",
                )
            conn.execute(update(versions).where(versions.c.subject == subject).values(deleted=True))
            return live

    def delete_version(self, subject: str, version: int, permanent: bool) -> int:
        """Soft-delete one version (``-1`` = latest), or (``permanent``) remove a soft-deleted one."""
        with self._write() as conn:
            found = self._versions(conn, subject, include_deleted=True)
            if not found:
                raise _subject_not_found(subject)
            if version == -1:
                candidates = [v for v in found if not v.deleted]
                if not candidates:
                    raise _version_not_found(subject, "latest")
                target = candidates[-1]
            else:
                matches = [v for v in found if v.version == version]
                if not matches:
                    raise _version_not_found(subject, version)
                target = matches[0]
            where = (versions.c.subject == subject) & (versions.c.version == target.version)
            if permanent:
                if not target.deleted:
                    raise RegistryError(
                        404,
                        40407,
                        f"Subject '{subject}' Version {target.version} was not deleted first before being permanently deleted",
                    )
                conn.execute(delete(versions).where(where))
            else:
                if target.deleted:
                    raise RegistryError(
                        404,
                        40406,
                        f"Subject '{subject}' Version {target.version} was soft deleted. Set permanent=true to delete permanently",
                    )
                conn.execute(update(versions).where(where).values(deleted=True))
            return target.version

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()


def check_level(level: object) -> str:
    """The compatibility level upper-cased, or 422/42203 naming the allowed ones.

    Example:
        >>> check_level("full_transitive")
        'FULL_TRANSITIVE'
    """
    if not isinstance(level, str) or level.upper() not in COMPATIBILITY_LEVELS:
        raise RegistryError(
            422,
            42203,
            f"Invalid compatibility level: expected one of {', '.join(COMPATIBILITY_LEVELS)}, found {level!r}",
        )
    return level.upper()


def _validate(text: object, schema_type: str, references: list[dict[str, Any]]) -> str:
    """Check a submitted schema; return its compact text (422/42201 when it is not valid Avro)."""
    if schema_type != "AVRO":
        raise RegistryError(
            422,
            42201,
            f"Invalid schema: schemaType {schema_type!r} is not supported by K2's registry (expected AVRO)",
        )
    if references:
        raise RegistryError(
            422, 42201, "Invalid schema: schema references are not supported by K2's registry"
        )
    if not isinstance(text, str) or not text.strip():
        raise RegistryError(
            422,
            42201,
            f"Invalid schema: expected the Avro schema as a JSON string in field 'schema', found {text!r}",
        )
    try:
        parse_avro(text)
        return compact(text)
    except Exception as exc:
        raise RegistryError(422, 42201, f"Invalid schema: {exc}") from None


def _create_tables(engine: Engine, attempts: int = 10) -> None:
    """Create the registry's tables; safe when several registries start on one fresh database.

    PostgreSQL reports the loser of two concurrent ``CREATE TABLE`` statements as a unique violation
    on its own catalog (``pg_class``/``pg_type``), not as "already exists": retry, and the second
    ``create_all`` sees the tables and does nothing.
    """
    for attempt in retrying((IntegrityError, ProgrammingError), attempts=attempts, backoff=Backoff(0.1, 1.0)):
        with attempt:
            metadata.create_all(engine)


def _engine(database_url: str) -> Engine:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            return create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        return create_engine(url, connect_args={"check_same_thread": False}, poolclass=StaticPool)
    if (
        url.drivername == "postgresql"
        and importlib.util.find_spec("psycopg") is None
        and importlib.util.find_spec("psycopg2") is not None
    ):
        # SQLAlchemy 2.1 maps bare postgresql:// to psycopg 3; K2 ships psycopg2.
        url = url.set(drivername="postgresql+psycopg2")
    return create_engine(url, pool_pre_ping=True)
