"""The query engine: a bounded, thread-safe pool of DuckDB connections reading Iceberg through ``iceberg_scan``.

Each connection has the iceberg/avro/httpfs extensions loaded offline (:mod:`k2.duck`), the UTC time
zone (timestamps come back as ``timestamp[us, tz=UTC]``) and, for S3 warehouses, a DuckDB secret built from
the ``s3_*`` settings. At most ``query_pool_size`` connections exist; callers beyond that wait for one.

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
    con.execute("SET TimeZone = 'UTC'")
    # Keep Parquet footers between queries (book reads open the same files again and again: ~40% of a
    # stored-snapshot read). Safe for Iceberg: data files are never rewritten in place.
    con.execute("SET parquet_metadata_cache = true")
    secret = s3_secret_sql(settings)
    if secret is not None:
        con.execute(secret)
    return con


class ConnectionPool:
    """At most ``settings.query_pool_size`` DuckDB connections, created lazily, shared by threads.

    ``setup`` runs once on each new connection (the read-only SQL pool locks its connections down).
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
                con = new_connection(self.settings)
                if self._setup is not None:
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
