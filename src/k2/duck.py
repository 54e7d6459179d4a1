"""DuckDB connections with K2's extensions loaded offline from their PyPI packages.

The ``duckdb-extension-*`` packages ship the binaries for DuckDB's exact version; K2 ``LOAD``s them by
path, so nothing is downloaded and no extension directory in ``$HOME`` is needed.

Example:
    >>> con = connect(("avro",))
    >>> con.execute("SELECT count(*) FROM duckdb_extensions() WHERE extension_name = 'avro' AND loaded").fetchone()[0]
    1
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path

import duckdb

# iceberg needs avro (manifests) and, for S3 warehouses, httpfs.
DEFAULT_EXTENSIONS = ("avro", "httpfs", "iceberg")


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
    con = duckdb.connect(database)
    load_extensions(con, extensions)
    return con
