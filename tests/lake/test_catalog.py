"""Catalog set-up against a real SQLite catalog: idempotent, and safe when processes race to create it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from k2.config import Settings
from k2.lake.catalog import TABLES, ensure_tables, load_catalog

_SCRIPT = """
import sys
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
settings = Settings(data_dir=sys.argv[1])
tables = ensure_tables(load_catalog(settings), settings)
print(sorted(tables))
"""


def test_processes_racing_to_create_the_tables_all_succeed(tmp_path: Path) -> None:
    data_dir = tmp_path / "k2"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SCRIPT, str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-3000:]
        assert out.strip() == str(sorted(TABLES))
    settings = Settings(data_dir=data_dir)
    catalog = load_catalog(settings)
    for tdef in TABLES.values():
        table = catalog.load_table(tdef.identifier)
        assert table.current_snapshot() is None  # created once, nothing written


def test_ensure_tables_is_idempotent_and_keeps_the_same_tables(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "k2")
    first = ensure_tables(load_catalog(settings), settings)
    second = ensure_tables(load_catalog(settings), settings)
    assert {k: t.metadata.table_uuid for k, t in first.items()} == {
        k: t.metadata.table_uuid for k, t in second.items()
    }
    assert (
        first["trades"].spec().fields
        and first["trades"].properties["write.parquet.compression-codec"] == "zstd"
    )
