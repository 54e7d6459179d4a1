"""API keys: created and revoked with ``k2 keys``, stored hashed in a SQL database.

A key looks like ``k2_<id>_<secret>``: ``id`` (12 hex characters) is the row's primary key, ``secret``
32 random bytes (URL-safe base64). Only ``sha256(salt || secret)`` with a random per-key salt is stored;
the full key is shown once, by ``k2 keys create``. The secret has 256 bits of entropy, so a fast salted
hash is enough (no password stretching is needed and verification stays cheap per request). Comparison
is constant-time.

Scopes: ``read`` (data endpoints) and ``admin`` (everything, including ``/v1/dlq`` and ``/v1/keys``).

The same database holds the server secret that signs pagination cursors (``api_secrets``), generated
at first use, so no secret is compiled into the code and every API process shares it.

Example:
    >>> store = KeyStore("sqlite://")
    >>> key, info = store.create("alice", "read")
    >>> store.verify(key).scope
    'read'
    >>> store.verify(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    True
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool

from k2.config import Settings

Scope = Literal["read", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "admin")
_KEY_RE = re.compile(r"^k2_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")

_META = sa.MetaData()
API_KEYS = sa.Table(
    "api_keys",
    _META,
    sa.Column("key_id", sa.String(12), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("salt", sa.String(64), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)
API_SECRETS = sa.Table(
    "api_secrets",
    _META,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(128), nullable=False),
)

API_RATE_BUCKETS = sa.Table(
    "api_rate_buckets",
    _META,
    sa.Column("key_id", sa.String(80), primary_key=True),
    sa.Column("tokens", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),  # seconds since the epoch
)


class KeyStoreError(ValueError):
    """A key-store operation failed (unknown key, bad scope); the message says what was expected."""


@dataclass(frozen=True)
class KeyInfo:
    """A stored key, without its secret."""

    key_id: str
    name: str
    scope: Scope
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def keys_database_url(settings: Settings) -> str:
    """SQLAlchemy URL of the key store (``api_keys_database_url`` or SQLite under ``data_dir``).

    Example:
        >>> keys_database_url(Settings(data_dir="/tmp/k2x")).endswith("/tmp/k2x/api_keys.db")
        True
    """
    if settings.api_keys_database_url:
        return settings.api_keys_database_url
    return f"sqlite:///{(settings.data_dir.resolve() / 'api_keys.db').as_posix()}"


def _hash(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def _row_info(row: sa.Row[tuple[object, ...]]) -> KeyInfo:
    m = row._mapping
    return KeyInfo(
        key_id=str(m["key_id"]),
        name=str(m["name"]),
        scope=m["scope"],
        created_at=_aware(m["created_at"]),
        revoked_at=_aware(m["revoked_at"]) if m["revoked_at"] is not None else None,
    )


def _aware(value: datetime) -> datetime:
    # SQLite drops the zone: values are written in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _owner_only(path: Path) -> None:
    """Create the SQLite key store file readable and writable by its owner only (0600), and tighten an existing one.

    The file holds the key hashes and the cursor-signing secret. SQLite creates its journal and WAL files
    with the database file's permissions, so they are owner-only too.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for candidate in (path, *(path.with_name(path.name + suffix) for suffix in ("-journal", "-wal", "-shm"))):
        if candidate.exists() and stat.S_IMODE(candidate.stat().st_mode) != 0o600:
            candidate.chmod(0o600)


class KeyStore:
    """Hashed API keys and the cursor-signing secret in a SQL database."""

    def __init__(self, url: str) -> None:
        kwargs: dict[str, object] = {}
        if url.startswith("sqlite"):
            path = url.removeprefix("sqlite:///")
            if url in ("sqlite://", "sqlite:///:memory:"):
                kwargs["poolclass"] = StaticPool
            elif path:
                _owner_only(Path(path))
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine = sa.create_engine(url, **kwargs)
        _META.create_all(self.engine)

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyStore:
        """The key store the settings name."""
        return cls(keys_database_url(settings))

    def create(self, name: str, scope: str) -> tuple[str, KeyInfo]:
        """Create a key; returns (the full key -- shown once, never stored --, its info)."""
        if scope not in SCOPES:
            raise KeyStoreError(f"scope: expected one of {list(SCOPES)}, found {scope!r}")
        if not name.strip():
            raise KeyStoreError("name: expected a non-empty name, found an empty one")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_hex(16)
        now = datetime.now(UTC)
        with self.engine.begin() as con:
            con.execute(
                API_KEYS.insert().values(
                    key_id=key_id,
                    name=name,
                    scope=scope,
                    salt=salt,
                    secret_hash=_hash(salt, secret),
                    created_at=now,
                    revoked_at=None,
                )
            )
        return f"k2_{key_id}_{secret}", KeyInfo(key_id, name, scope, now, None)

    def list_keys(self) -> list[KeyInfo]:
        """Every key (active and revoked), oldest first."""
        with self.engine.connect() as con:
            rows = con.execute(
                sa.select(API_KEYS).order_by(API_KEYS.c.created_at, API_KEYS.c.key_id)
            ).fetchall()
        return [_row_info(r) for r in rows]

    def revoke(self, key_id_or_name: str) -> list[KeyInfo]:
        """Revoke the key with this id, or every active key with this name; returns the revoked keys."""
        now = datetime.now(UTC)
        with self.engine.begin() as con:
            cond = sa.and_(
                sa.or_(API_KEYS.c.key_id == key_id_or_name, API_KEYS.c.name == key_id_or_name),
                API_KEYS.c.revoked_at.is_(None),
            )
            rows = con.execute(sa.select(API_KEYS).where(cond)).fetchall()
            if not rows:
                raise KeyStoreError(f"expected the id or name of an active key, found {key_id_or_name!r}")
            con.execute(API_KEYS.update().where(cond).values(revoked_at=now))
        return [KeyInfo(i.key_id, i.name, i.scope, i.created_at, now) for i in map(_row_info, rows)]

    def verify(self, key: str) -> KeyInfo | None:
        """The active key matching ``key``, or None (malformed, unknown, wrong secret or revoked)."""
        match = _KEY_RE.match(key)
        if match is None:
            return None
        key_id, secret = match.groups()
        with self.engine.connect() as con:
            row = con.execute(sa.select(API_KEYS).where(API_KEYS.c.key_id == key_id)).fetchone()
        if row is None:
            return None
        m = row._mapping
        if not hmac.compare_digest(_hash(str(m["salt"]), secret), str(m["secret_hash"])):
            return None
        info = _row_info(row)
        return info if info.active else None

    def secret(self, name: str) -> bytes:
        """A random server secret called ``name``, created on first use and shared by all processes."""
        with self.engine.connect() as con:
            value = con.execute(sa.select(API_SECRETS.c.value).where(API_SECRETS.c.name == name)).scalar()
        if value is None:
            try:
                with self.engine.begin() as con:
                    con.execute(API_SECRETS.insert().values(name=name, value=secrets.token_hex(32)))
            except IntegrityError:  # another process created it first
                pass
            with self.engine.connect() as con:
                value = con.execute(
                    sa.select(API_SECRETS.c.value).where(API_SECRETS.c.name == name)
                ).scalar_one()
        return bytes.fromhex(str(value))
