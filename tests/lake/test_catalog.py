"""Catalog set-up against a real SQLite catalog: idempotent, and safe when processes race to create it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from k2.config import Settings
from k2.lake.catalog import PARQUET_LAYOUT, TABLES, ensure_tables, load_catalog
from k2.lake.writer import append

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


def _trades(n: int) -> Any:
    """``n`` trades of one symbol on one day (one partition), in time order."""
    import pyarrow as pa

    from k2.model import TRADE
    from k2.model.arrow import records_to_arrow

    start = 1_725_148_800_000_000  # 2024-09-01T00:00:00Z in microseconds
    rows = [
        {
            "exchange": "binance",
            "symbol": "BTCUSDT",
            "instrument": "BTC-USDT",
            "asset_class": "crypto",
            "trade_id": i,
            "price": 5_800_000_000_000 + i % 977,
            "quantity": 1_000 + i % 31,
            "quote_quantity": None,
            "side": "BUY" if i % 3 else "SELL",
            "exchange_ts": start + i * 500_000,
            "receipt_ts": start + i * 500_000 + 900,
            "ingest_ts": start + i * 500_000 + 2_000,
            "source_sequence": None,
            "conditions": [],
            "vendor": {},
        }
        for i in range(n)
    ]
    table: pa.Table = records_to_arrow(TRADE, rows)
    return table


def test_data_files_are_written_in_row_groups_a_symbol_filter_can_skip(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    settings = Settings(data_dir=tmp_path / "k2")
    table = ensure_tables(load_catalog(settings), settings)["trades"]
    append(table, _trades(150_000), "trades")
    (path,) = table.inspect.files()["file_path"].to_pylist()
    with table.io.new_input(path).open() as stream:
        meta = pq.ParquetFile(stream).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sum(sizes) == 150_000
    assert max(sizes) <= int(PARQUET_LAYOUT["write.parquet.row-group-limit"]), sizes
    assert len(sizes) >= 3


def test_tables_created_by_an_older_k2_get_the_parquet_layout(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "k2")
    catalog = load_catalog(settings)
    catalog.create_namespace("market_data")
    tdef = TABLES["trades"]
    old = {"write.parquet.compression-codec": "zstd", "format-version": "2", "commit.retry.num-retries": "0"}
    catalog.create_table(tdef.identifier, schema=tdef.record.iceberg_schema(), properties=old)
    table = ensure_tables(catalog, settings)["trades"]
    for key, value in PARQUET_LAYOUT.items():
        assert table.properties.get(key) == value
