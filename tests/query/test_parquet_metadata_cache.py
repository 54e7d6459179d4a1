"""Every query connection keeps Parquet footers between queries (set once at connection setup, not per book call)."""

from __future__ import annotations

from pathlib import Path

from k2.config import Settings
from k2.query.engine import ConnectionPool


def test_pool_connections_cache_parquet_metadata(tmp_path: Path) -> None:
    pool = ConnectionPool(Settings(data_dir=tmp_path / "k2"))
    try:
        with pool.connection() as con:
            row = con.execute("SELECT current_setting('parquet_metadata_cache')").fetchone()
        assert row is not None and row[0] is True
    finally:
        pool.close()
