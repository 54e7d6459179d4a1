"""DuckDB connections with K2's extensions loaded offline from their PyPI packages.

The ``duckdb-extension-*`` packages ship the binaries for DuckDB's exact version; K2 ``LOAD``s them by
path, so nothing is downloaded and no extension directory in ``$HOME`` is needed.

Loading the three extensions into a new in-memory database costs ~0.4 s of CPU (most of it on DuckDB's own
threads). :func:`connect` pays it for every call; :func:`shared_cursor` pays it once per process and key, and
hands out cursors: separate connections to one shared database (each has its own transaction, session
settings and registered Arrow tables, runs in parallel with the others and can be ``interrupt()``-ed alone).

Hazards of a shared database (why it is keyed, and why not everything uses it):

- Anything database-wide is shared by every cursor: secrets, views and tables in ``main``, GLOBAL settings
  (``threads``, ``memory_limit``, ``enable_external_access``, ``lock_configuration``, ``allowed_directories``)
  and the file caches. Code that changes any of these on its connections needs :func:`connect` (its own
  database), not a cursor. Session settings (``SET TimeZone``, ``SET parquet_metadata_cache``) and
  ``register()``-ed Arrow tables stay on the cursor.
- The database is kept until the process exits (at most :data:`SHARED_DATABASES` keys; evicting a key only
  forgets it: cursors still open keep their database alive, nothing they run breaks).
- Fork: a database created before ``fork()`` is never used in the child (its worker threads did not survive);
  the cache is keyed by process id, and the parent's databases are left untouched in the child.

Example:
    >>> con = connect(("avro",))
    >>> con.execute("SELECT count(*) FROM duckdb_extensions() WHERE extension_name = 'avro' AND loaded").fetchone()[0]
    1
"""

from __future__ import annotations

import importlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

import duckdb

# iceberg needs avro (manifests) and, for S3 warehouses, httpfs.
DEFAULT_EXTENSIONS = ("avro", "httpfs", "iceberg")

# How many shared databases a process keeps (one per distinct key, e.g. per S3 endpoint and credentials).
SHARED_DATABASES = 8

_shared_lock = threading.Lock()
# (process id, key) -> the root connection of that shared database, least recently used first.
_shared: OrderedDict[tuple[int, str], duckdb.DuckDBPyConnection] = OrderedDict()
# Databases inherited through fork(): kept referenced and never used, so the child never runs their destructor.
_inherited: list[duckdb.DuckDBPyConnection] = []
_opened = 0


def extension_path(name: str) -> Path:
    """Path of the ``name`` extension binary for the installed DuckDB version."""
    module = importlib.import_module(f"duckdb_extension_{name}")
    root = Path(next(iter(module.__path__))) / "extensions"
    version = duckdb.__version__ if duckdb.__version__.startswith("v") else f"v{duckdb.__version__}"
    path = root / version / f"{name}.duckdb_extension"
    if not path.exists():
        found = sorted(p.name for p in root.iterdir()) if root.exists() else []
        raise FileNotFoundError(
            f"expected DuckDB extension {name} for DuckDB {version} at {path}, found versions {found}; "
            f"install duckdb-extension-{name}=={duckdb.__version__}"
        )
    return path


def load_extensions(con: duckdb.DuckDBPyConnection, names: Iterable[str] = DEFAULT_EXTENSIONS) -> None:
    """Load extensions into ``con`` from their packages (never from the network)."""
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    for name in names:
        # A file path cannot be a bound parameter in LOAD; it comes from the installed package, not a user.
        con.execute(f"LOAD '{extension_path(name).as_posix()}'")


def connect(
    extensions: Iterable[str] = DEFAULT_EXTENSIONS, database: str = ":memory:"
) -> duckdb.DuckDBPyConnection:
    """A new DuckDB connection with ``extensions`` loaded offline."""
    global _opened
    con = duckdb.connect(database)
    load_extensions(con, extensions)
    with _shared_lock:
        _opened += 1
    return con


def databases_opened() -> int:
    """How many databases :func:`connect` opened in this process (each one loaded the extensions).

    >>> before = databases_opened()
    >>> _ = connect(("avro",))
    >>> databases_opened() - before
    1
    """
    return _opened


def shared_cursor(
    key: str, init: Callable[[duckdb.DuckDBPyConnection], None] | None = None
) -> duckdb.DuckDBPyConnection:
    """A new connection (a cursor) to this process's shared in-memory database for ``key``.

    The first call for a key (in this process) opens the database with :data:`DEFAULT_EXTENSIONS` loaded and
    runs ``init`` once on it (database-wide setup, e.g. a secret); ``key`` must identify everything ``init``
    does, since later calls with the same key reuse the database without running ``init``. Closing the
    cursor leaves the database open for the next one.

    >>> a, b = shared_cursor("doctest"), shared_cursor("doctest")
    >>> _ = a.execute("CREATE OR REPLACE TABLE doctest_shared AS SELECT 42 AS x")
    >>> b.execute("SELECT x FROM doctest_shared").fetchone()[0]
    42
    >>> _ = a.execute("DROP TABLE doctest_shared")
    >>> a.close(); b.close()
    """
    pid = os.getpid()
    with _shared_lock:
        inherited = [k for k in _shared if k[0] != pid]
        for k in inherited:
            _inherited.append(_shared.pop(k))
        root = _shared.get((pid, key))
        if root is not None:
            _shared.move_to_end((pid, key))
    if root is None:
        root = _open_shared(pid, key, init)
    with _shared_lock:
        # The root connection object is not thread-safe; cursors are made one at a time.
        return root.cursor()


def _open_shared(
    pid: int, key: str, init: Callable[[duckdb.DuckDBPyConnection], None] | None
) -> duckdb.DuckDBPyConnection:
    # Opened outside the lock (~0.4 s); two threads racing for a new key both open one, the first one kept.
    root = connect()
    if init is not None:
        init(root)
    with _shared_lock:
        kept = _shared.setdefault((pid, key), root)
        _shared.move_to_end((pid, key))
        while len(_shared) > SHARED_DATABASES:
            _shared.popitem(last=False)  # forgotten, not closed: open cursors keep their database alive
    if kept is not root:
        root.close()
    return kept
