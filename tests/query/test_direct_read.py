"""Point queries read the snapshot's pruned data files with ``read_parquet`` and answer exactly what ``iceberg_scan`` does.

Real Binance trades (the first minute of 2021-01-03) copied to four symbols and three days, appended in
several commits to a real SQLite-catalog lake; every answer is compared with DuckDB's own ``iceberg_scan``
of the same snapshot.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from pyiceberg.types import StringType

from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog, metadata_location
from k2.lake.maintenance import MaintenanceReport, compact, expire_snapshots
from k2.lake.writer import append
from k2.model import TRADE
from k2.query.client import Client
from k2.query.engine import new_connection
from k2.query.errors import QueryError
from tests.query.helpers import csv_rows, csv_trades, lake_settings

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
DAY0 = datetime(2021, 1, 3, tzinfo=UTC)
COLUMNS = ", ".join(f.name for f in TRADE.fields)


def day_trades(raw: list[dict[str, str]], day: int, symbols: tuple[str, ...] = SYMBOLS) -> pa.Table:
    """The real first-minute trades moved ``day`` days on, once per symbol."""
    shifted = [{**r, "time": str(int(r["time"]) + day * 86_400_000)} for r in raw]
    return pa.concat_tables([csv_trades(shifted, symbol=s) for s in symbols])


def raw_scan(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    snapshot_id: int,
    symbol: str,
    start: datetime,
    end: datetime,
) -> list[Any]:
    """The rows DuckDB's iceberg_scan gives for the same filters, in the client's order (on ``con``, a
    connection of its own, not the client's)."""
    table = load_catalog(settings).load_table(("market_data", "trades"))
    rows = con.execute(
        f"SELECT {COLUMNS} FROM iceberg_scan(?, snapshot_from_id => ?) WHERE symbol = ? AND exchange_ts >= ? "
        "AND exchange_ts < ? ORDER BY exchange_ts, exchange, symbol, trade_id",
        [metadata_location(table), snapshot_id, symbol, start, end],
    ).to_arrow_table()
    return rows.to_pylist()


def picks() -> list[tuple[str, datetime, datetime]]:
    """Symbol-windows: inside one day, across the day boundary, a whole day, and an empty window."""
    return [
        ("BTCUSDT", DAY0, DAY0 + timedelta(hours=1)),
        ("ETHUSDT", DAY0 + timedelta(days=1), DAY0 + timedelta(days=1, seconds=20)),
        ("SOLUSDT", DAY0 + timedelta(hours=12), DAY0 + timedelta(days=1, hours=12)),
        ("XRPUSDT", DAY0 + timedelta(days=2), DAY0 + timedelta(days=3)),
        ("BTCUSDT", DAY0 + timedelta(hours=5), DAY0 + timedelta(hours=6)),
    ]


@pytest.fixture(scope="module")
def raw() -> list[dict[str, str]]:
    return csv_rows()[:400]


def make_lake(root: Path, raw: list[dict[str, str]], **overrides: Any) -> tuple[Settings, Any]:
    settings = lake_settings(root, query_max_range_days=5, **overrides)
    table = ensure_tables(load_catalog(settings), settings)["trades"]
    for day in range(3):
        # Two commits per day (two symbols each): several small files per partition.
        append(table, day_trades(raw, day, SYMBOLS[:2]), "trades")
        append(table, day_trades(raw, day, SYMBOLS[2:]), "trades")
    return settings, table


def assert_same_as_iceberg_scan(client: Client, settings: Settings, as_of: int | None = None) -> None:
    # One reference connection for the five picks (each new one LOADs DuckDB's extensions: ~0.4 s CPU).
    con = new_connection(settings)
    try:
        for symbol, start, end in picks():
            got = client.trades(symbol, start, end, include_recent=False, as_of=as_of)
            sid = got.snapshot_ids["trades"]
            assert sid is not None
            want = raw_scan(con, settings, sid, symbol, start, end)
            assert got.table.to_pylist() == want, (symbol, start, end)
    finally:
        con.close()


def test_point_query_reads_only_its_pruned_files_directly(tmp_path: Path, raw: list[dict[str, str]]) -> None:
    settings, table = make_lake(tmp_path, raw)
    total_files = len(table.inspect.files())
    with Client(settings) as client:
        start, end = DAY0, DAY0 + timedelta(hours=1)
        source = client._source("trades", "BTCUSDT", None, start, end, None, False)
        assert "read_parquet" in source.sql and "iceberg_scan" not in source.sql
        paths = source.params[0]
        # One day of one symbol's bucket: the files of the two commits of day 0 that hold BTCUSDT's bucket.
        assert 1 <= len(paths) < total_files
        assert all("exchange_ts_day=2021-01-03" in p for p in paths)
        assert_same_as_iceberg_scan(client, settings)
        # Bars and VWAP go through the same source and keep their exact answers.
        bars = client.bars("ETHUSDT", "1m", DAY0, DAY0 + timedelta(days=1), include_recent=False)
        assert sum(bars.table["trade_count"].to_pylist()) == len(raw)


def test_a_new_commit_is_planned_anew_and_old_snapshots_still_read(
    tmp_path: Path, raw: list[dict[str, str]]
) -> None:
    settings, table = make_lake(tmp_path, raw)
    with Client(settings) as client:
        window = ("BTCUSDT", DAY0 + timedelta(days=3), DAY0 + timedelta(days=4))
        before = client.trades(*window, include_recent=False, limit=10_000)
        assert before.num_rows == 0
        old_sid = before.snapshot_ids["trades"]
        built = client._files.plans_built
        append(table, day_trades(raw, 3, ("BTCUSDT",)), "trades")
        after = client.trades(*window, include_recent=False)
        assert after.num_rows == len(raw)
        assert after.snapshot_ids["trades"] != old_sid
        assert client._files.plans_built == built + 1  # the new snapshot was planned, not served stale
        # The pinned old snapshot is still read from its own (cached) plan: no day-3 rows then.
        pinned = client.trades(*window, include_recent=False, as_of=old_sid, limit=10_000)
        assert pinned.num_rows == 0
        assert client._files.plans_built == built + 1
        assert_same_as_iceberg_scan(client, settings)
        assert_same_as_iceberg_scan(client, settings, as_of=old_sid)


def test_direct_read_equals_iceberg_scan_after_compaction_and_expiry(
    tmp_path: Path, raw: list[dict[str, str]]
) -> None:
    settings, table = make_lake(tmp_path, raw, maintenance_min_input_files=2, maintenance_snapshots_keep=1)
    with Client(settings) as client:
        assert_same_as_iceberg_scan(client, settings)
        first = client.snapshot_id("trades")
        report = MaintenanceReport("trades")
        compact(table, settings, report, "trades")
        assert report.files_rewritten > report.files_written > 0
        compacted = client.snapshot_id("trades")
        assert compacted != first
        assert_same_as_iceberg_scan(client, settings)
        assert_same_as_iceberg_scan(client, settings, as_of=first)  # time travel to before the rewrite
        expire_snapshots(
            table, settings.model_copy(update={"maintenance_snapshot_max_age_hours": 0.0}), report
        )
        assert report.snapshots_expired > 0
        assert_same_as_iceberg_scan(client, settings)
        source = client._source("trades", "BTCUSDT", None, DAY0, DAY0 + timedelta(days=1), None, False)
        assert "read_parquet" in source.sql


def test_an_evolved_schema_with_older_files_falls_back_to_iceberg_scan(
    tmp_path: Path, raw: list[dict[str, str]]
) -> None:
    settings, table = make_lake(tmp_path, raw)
    with table.update_schema() as update:
        update.add_column("note", StringType())
    table = load_catalog(settings).load_table(("market_data", "trades"))
    extra = day_trades(raw, 0, ("BTCUSDT",))
    append(table, extra.append_column("note", pa.array(["x"] * extra.num_rows)), "trades")
    with Client(settings) as client:
        # Day 0 holds files written before the column existed: their footers lack it.
        source = client._source("trades", "BTCUSDT", None, DAY0, DAY0 + timedelta(hours=1), None, False)
        assert "iceberg_scan" in source.sql
        got = client.trades("BTCUSDT", DAY0, DAY0 + timedelta(hours=1), include_recent=False)
        assert got.num_rows == 2 * len(raw)
        assert_same_as_iceberg_scan(client, settings)


def test_a_missing_manifest_is_a_query_error_as_with_iceberg_scan(
    tmp_path: Path, raw: list[dict[str, str]]
) -> None:
    settings, table = make_lake(tmp_path, raw)
    snapshot = table.current_snapshot()
    assert snapshot is not None
    manifest = snapshot.manifests(table.io)[0].manifest_path
    Path(manifest.removeprefix("file://")).unlink()
    with (
        Client(settings) as client,
        pytest.raises(QueryError, match="expected the metadata of snapshot .* to be readable"),
    ):
        client.trades("BTCUSDT", DAY0, DAY0 + timedelta(hours=1), include_recent=False)
