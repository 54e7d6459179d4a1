"""The query engine: a bounded, thread-safe pool of DuckDB connections reading Iceberg through ``iceberg_scan``.

Each connection has the iceberg/avro/httpfs extensions loaded offline (:mod:`k2.duck`), the UTC time
zone (timestamps come back as ``timestamp[us, tz=UTC]``) and, for S3 warehouses, a DuckDB secret built from
the ``s3_*`` settings. At most ``query_pool_size`` connections exist; callers beyond that wait for one.

A pool without ``setup`` hands out cursors of one database shared by the whole process per S3 configuration
(:func:`shared_connection`): the extensions load once per process instead of once per connection (~0.4 s of
CPU each). The database is keyed by the secret statement, so two settings with different endpoints or
credentials never read through each other's secret. A pool with ``setup`` (the read-only SQL pool, which
changes GLOBAL settings and creates views in ``main``) gets a private database per connection instead.

Example:
    >>> from k2.config import Settings
    >>> pool = ConnectionPool(Settings(query_pool_size=2))
    >>> with pool.connection() as con:
    ...     con.execute("SELECT 1 + 1").fetchone()[0]
    2
    >>> pool.close()
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlparse

import duckdb

from k2.config import Settings
from k2.duck import connect as duck_connect
from k2.duck import shared_cursor


def _literal(value: str) -> str:
    # DDL like CREATE SECRET takes no bound parameters; values come from settings, quoted safely.
    return "'" + value.replace("'", "''") + "'"


def s3_secret_sql(settings: Settings, name: str = "k2_s3") -> str | None:
    """The ``CREATE SECRET`` statement for the S3 settings, or None when the warehouse is not on S3.

    >>> from k2.config import Settings
    >>> print(s3_secret_sql(Settings(warehouse="s3://b/w", s3_endpoint="http://127.0.0.1:8333", s3_access_key_id="k", s3_secret_access_key="s")))
    CREATE OR REPLACE SECRET k2_s3 (TYPE s3, REGION 'us-east-1', KEY_ID 'k', SECRET 's', ENDPOINT '127.0.0.1:8333', URL_STYLE 'path', USE_SSL false)
    """
    if not (settings.warehouse_location.startswith("s3://") or settings.s3_endpoint):
        return None
    parts = ["TYPE s3", f"REGION {_literal(settings.s3_region)}"]
    if settings.s3_access_key_id:
        parts.append(f"KEY_ID {_literal(settings.s3_access_key_id)}")
    if settings.s3_secret_access_key:
        parts.append(f"SECRET {_literal(settings.s3_secret_access_key.get_secret_value())}")
    if settings.s3_endpoint:
        endpoint = urlparse(
            settings.s3_endpoint if "://" in settings.s3_endpoint else f"https://{settings.s3_endpoint}"
        )
        parts.append(f"ENDPOINT {_literal(endpoint.netloc)}")
        parts.append("URL_STYLE 'path'")
        parts.append(f"USE_SSL {'true' if endpoint.scheme == 'https' else 'false'}")
    return f"CREATE OR REPLACE SECRET {name} ({', '.join(parts)})"


def new_connection(settings: Settings) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection ready to read K2's tables (extensions, UTC, Parquet footer cache, S3 secret).

    Example:
        >>> from k2.config import Settings
        >>> new_connection(Settings()).execute("SELECT current_setting('TimeZone')").fetchone()[0]
        'UTC'
    """
    con = duck_connect()
    _session(con)
    secret = s3_secret_sql(settings)
    if secret is not None:
        con.execute(secret)
    return con


def shared_connection(settings: Settings) -> duckdb.DuckDBPyConnection:
    """Like :func:`new_connection`, but a cursor of the process's database for these S3 settings.

    The secret is created once, when that database opens; everything database-wide (secrets, views,
    GLOBAL settings) is seen by every other cursor with the same settings, so callers must change only
    session state (``SET``, ``register()``). Closing the cursor leaves the database open.

    Example:
        >>> from k2.config import Settings
        >>> con = shared_connection(Settings())
        >>> con.execute("SELECT current_setting('TimeZone')").fetchone()[0]
        'UTC'
        >>> con.close()
    """
    secret = s3_secret_sql(settings)

    def create_secret(root: duckdb.DuckDBPyConnection) -> None:
        if secret is not None:
            root.execute(secret)

    # The key is everything database-wide that differs between settings: the secret (endpoint, keys, region).
    con = shared_cursor(f"k2.query.engine\n{secret or ''}", create_secret)
    _session(con)
    return con


def _session(con: duckdb.DuckDBPyConnection) -> None:
    # Both are session settings in DuckDB 1.5 (a cursor does not inherit them from another connection).
    con.execute("SET TimeZone = 'UTC'")
    # Keep Parquet footers between queries (book reads open the same files again and again: ~40% of a
    # stored-snapshot read). Safe for Iceberg: data files are never rewritten in place.
    con.execute("SET parquet_metadata_cache = true")


class ConnectionPool:
    """At most ``settings.query_pool_size`` DuckDB connections, created lazily, shared by threads.

    Without ``setup`` the connections are cursors of the process's shared database
    (:func:`shared_connection`). With ``setup`` each connection is a new private database
    (:func:`new_connection`) and ``setup`` runs once on it: the read-only SQL pool locks its connections
    down with GLOBAL settings, which would otherwise reach every pool of the process.
    """

    def __init__(
        self, settings: Settings, setup: Callable[[duckdb.DuckDBPyConnection], None] | None = None
    ) -> None:
        self.settings = settings
        self._setup = setup
        self.size = settings.query_pool_size
        self._idle: queue.LifoQueue[duckdb.DuckDBPyConnection] = queue.LifoQueue()
        self._created = 0
        self._lock = threading.Lock()
        self._closed = False
        self._all: list[duckdb.DuckDBPyConnection] = []

    @property
    def created(self) -> int:
        """How many connections exist (never more than ``size``).

        >>> from k2.config import Settings
        >>> ConnectionPool(Settings()).created
        0
        """
        return self._created

    def _take(self) -> duckdb.DuckDBPyConnection:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._closed:
                raise RuntimeError("expected an open query pool, found it closed")
            create = self._created < self.size
            if create:
                self._created += 1
        if create:
            try:
                if self._setup is None:
                    con = shared_connection(self.settings)
                else:
                    con = new_connection(self.settings)
                    self._setup(con)
            except BaseException:
                with self._lock:
                    self._created -= 1
                raise
            with self._lock:
                self._all.append(con)
            return con
        return self._idle.get()

    @contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Borrow a connection for one query (blocks while all ``size`` connections are busy).

        Example::

            with pool.connection() as con:
                con.execute("SELECT 1").fetchone()
        """
        con = self._take()
        try:
            yield con
        finally:
            if self._closed:
                con.close()
            else:
                self._idle.put(con)

    def close(self) -> None:
        """Close every idle connection; busy ones close when returned.

        >>> from k2.config import Settings
        >>> ConnectionPool(Settings()).close()
        """
        with self._lock:
            self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                break
