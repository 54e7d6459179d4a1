"""Table maintenance on real Iceberg tables (SQLite catalog, local warehouse): nothing mocked.

The main test lands 1,000 small batches (each its own data file; the first 50 through
``k2.lake.writer.append`` one commit each, the rest 25 batches per commit because 1,000 single-batch
pyiceberg commits take ~4 minutes on the shared machine; ``benchmarks/maintenance_bench.py`` runs the
1,000-commit shape), then compacts while another thread keeps appending to the same partitions.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from typer.testing import CliRunner

from k2 import duck
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog, metadata_location
from k2.lake.compat import data_files_from_arrow
from k2.lake.maintenance import (
    MAINTENANCE_WRITER,
    MaintenanceReport,
    _compact_partition,
    maintain_table,
    plan_compaction,
    referenced_files,
    start_scheduler,
)
from k2.lake.summary import OFFSETS_KEY, RANGES_KEY, offsets_from_summary, table_offsets
from k2.lake.writer import append, conform, sort_for_table
from k2.landing.consumer import LAST_KEY
from k2.model import TRADE
from tests.support.factories import trade_batch
from tests.support.landing import land_messages

BASE_TS = 1_723_161_255_342_000  # 2024-08-08T23:54:15.342Z
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT")
TOPIC = "market.crypto.trades.binance"
ROWS_PER_BATCH = 3


def make_batch(i: int) -> pa.Table:
    """Batch ``i``: a few trades of one symbol (symbols rotate, so every partition gets many small files)."""
    first = i * ROWS_PER_BATCH
    start = BASE_TS + first * 1_000 - (i % 7) * 3_000_000  # out of order across batches: the sort matters
    return trade_batch(first, ROWS_PER_BATCH, symbol=SYMBOLS[i % len(SYMBOLS)], start_us=start)


def landing_props(next_offset: int) -> dict[str, str]:
    """Summary properties shaped like the landing consumer's."""
    return {
        OFFSETS_KEY: json.dumps({TOPIC: {"0": next_offset}}, sort_keys=True),
        RANGES_KEY: json.dumps({TOPIC: {"0": [next_offset - 1, next_offset - 1]}}),
        LAST_KEY: json.dumps({TOPIC: {"0": f"{next_offset - 1}:12345"}}),
        "k2.writer": "test-landing",
    }


def append_retrying(table: Table, batch: pa.Table, next_offset: int) -> None:
    """Append like the landing consumer: on a concurrent commit, refresh and try again."""
    for _ in range(200):
        table.refresh()
        try:
            append(table, batch, "trades", landing_props(next_offset))
            return
        except CommitFailedException:
            time.sleep(0.01)
    raise AssertionError("append kept conflicting")


def append_files(table: Table, batches: list[pa.Table], next_offset: int) -> None:
    """One commit adding one data file per batch (as separate landing batches would)."""
    files = []
    for batch in batches:
        files += list(
            data_files_from_arrow(
                table.metadata, sort_for_table(conform(batch, "trades"), "trades"), table.io
            )
        )
    with (
        table.transaction() as tx,
        tx.update_snapshot(snapshot_properties=landing_props(next_offset)).fast_append() as fast,
    ):
        for f in files:
            fast.append_data_file(f)


def row_set(data: pa.Table) -> list[tuple[str, ...]]:
    """Every row, all message columns, as sortable strings (duplicates kept). The table's lineage
    columns (table-side, NULL for these batches written without an origin) are left out."""
    columns = [c for c in data.column_names if not c.startswith("lineage_")]
    return sorted(tuple(str(row[c]) for c in columns) for row in data.to_pylist())


def live_files(table: Table) -> list[str]:
    table.refresh()
    return [str(p) for p in table.inspect.files()["file_path"].to_pylist()]


@pytest.fixture
def lake(tmp_path: Path) -> tuple[Settings, Table]:
    settings = Settings(data_dir=tmp_path / "k2")
    table = ensure_tables(load_catalog(settings), settings)["trades"]
    return settings, table


def test_compaction_after_1000_batches_keeps_rows_time_travel_offsets_and_concurrent_appends(
    lake: tuple[Settings, Table],
) -> None:
    settings, table = lake
    for i in range(50):
        append(table, make_batch(i), "trades", landing_props(i + 1))
    middle = table.current_snapshot()
    assert middle is not None
    for first in range(50, 1000, 25):
        append_files(table, [make_batch(i) for i in range(first, first + 25)], first + 25)
    table.refresh()
    before = table.current_snapshot()
    assert before is not None
    files_before = live_files(table)
    assert len(files_before) == 1000
    manifests_before = len(before.manifests(table.io))
    rows_middle = row_set(table.scan(snapshot_id=middle.snapshot_id).to_arrow())
    rows_before = row_set(table.scan().to_arrow())
    assert len(rows_middle) == 50 * ROWS_PER_BATCH and len(rows_before) == 1000 * ROWS_PER_BATCH
    location_before = metadata_location(table)

    # Another writer keeps landing into the same partitions while compaction runs.
    appended: list[int] = []
    stop = threading.Event()
    writer_table = load_catalog(settings).load_table(("market_data", "trades"))

    def landing() -> None:
        i = 1000
        while not stop.is_set() or len(appended) < 5:
            append_retrying(writer_table, make_batch(i), i + 1)
            appended.append(i)
            i += 1
            time.sleep(0.3)  # a landing commit cadence (K2 commits every landing_commit_interval_seconds)

    thread = threading.Thread(target=landing)
    thread.start()
    try:
        report = maintain_table(table, settings, "trades")
    finally:
        stop.set()
        thread.join(120)
    assert not thread.is_alive()

    # Same rows: everything that was there, plus every concurrently appended batch, nothing else.
    table.refresh()
    expected = sorted(rows_before + [r for i in appended for r in row_set(make_batch(i))])
    assert row_set(table.scan().to_arrow()) == expected
    # Far fewer files and manifests.
    after = live_files(table)
    assert len(after) < 0.05 * len(files_before), (
        len(after),
        report.partitions_skipped,
        report.notes,
        report,
    )
    assert report.files_rewritten >= 1000 and report.partitions_compacted == len(SYMBOLS)
    assert len(table.current_snapshot().manifests(table.io)) < manifests_before  # type: ignore[union-attr]
    # Compacted files are sorted by (symbol, exchange_ts, trade_id).
    compacted = [p for p in after if p not in set(files_before)]
    biggest = max(compacted, key=lambda p: os.path.getsize(p.removeprefix("file://")))
    data = pq.read_table(biggest.removeprefix("file://"))
    assert data.num_rows > 200
    keys = list(
        zip(
            data["symbol"].to_pylist(),
            data["exchange_ts"].to_pylist(),
            data["trade_id"].to_pylist(),
            strict=True,
        )
    )
    assert keys == sorted(keys)

    # Time travel to pre-compaction snapshots still returns their old results: pyiceberg and DuckDB.
    assert row_set(table.scan(snapshot_id=middle.snapshot_id).to_arrow()) == rows_middle
    assert row_set(table.scan(snapshot_id=before.snapshot_id).to_arrow()) == rows_before
    con = duck.connect()
    sql = "SELECT symbol, trade_id, exchange_ts FROM iceberg_scan(?, snapshot_from_id => ?) ORDER BY ALL"
    for snap, rows in ((middle, rows_middle), (before, rows_before)):
        got = con.execute(sql, [metadata_location(table), snap.snapshot_id]).fetchall()
        assert len(got) == len(rows)
        assert sorted(r[1] for r in got) == sorted(int(r[4]) for r in rows)  # column 4 is trade_id
    now_count = con.execute("SELECT count(*) FROM iceberg_scan(?)", [metadata_location(table)]).fetchone()
    assert now_count is not None and now_count[0] == len(expected)
    assert metadata_location(table) != location_before

    # Kafka offsets carried forward: the landing consumer resumes from the current snapshot's summary.
    last_landing = max(appended)
    current = table.current_snapshot()
    assert current is not None
    assert table_offsets(table) == {TOPIC: {"0": last_landing + 1}}
    by_id = {s.snapshot_id: s for s in table.metadata.snapshots}
    maintenance_snaps = [
        s
        for s in table.metadata.snapshots
        if s.summary is not None and s.summary.get("k2.writer") == MAINTENANCE_WRITER
    ]
    assert len(maintenance_snaps) >= len(SYMBOLS)
    for snap in maintenance_snaps:
        parent = by_id[snap.parent_snapshot_id]  # type: ignore[index]
        assert snap.summary is not None and parent.summary is not None
        assert snap.summary.operation.value == "replace"
        assert offsets_from_summary(snap.summary) == offsets_from_summary(parent.summary) != {}
        assert snap.summary.get(LAST_KEY) == parent.summary.get(LAST_KEY) is not None
        assert snap.summary.get(RANGES_KEY) is None  # describes one landing commit: not carried
        assert snap.summary.get("total-records") == parent.summary.get("total-records")


def test_expiry_and_orphan_removal_on_real_files(lake: tuple[Settings, Table]) -> None:
    settings, table = lake
    for i in range(24):
        append(table, make_batch(i), "trades", landing_props(i + 1))
    rows = row_set(table.scan().to_arrow())
    data_dir = Path(table.location().removeprefix("file://")) / "data"
    old_orphan = data_dir / "crashed-writer-old.parquet"
    fresh_orphan = data_dir / "in-flight-writer.parquet"
    for path in (old_orphan, fresh_orphan):
        pq.write_table(make_batch(0), path)
    two_days_ago = time.time() - 2 * 86_400
    os.utime(old_orphan, (two_days_ago, two_days_ago))
    small_files = [p.removeprefix("file://") for p in live_files(table)]

    # Keep only the 3 newest snapshots, whatever their age; never delete files younger than 1 hour.
    cfg = settings.model_copy(
        update={
            "maintenance_snapshots_keep": 3,
            "maintenance_snapshot_max_age_hours": 0.0,
            "maintenance_orphan_min_age_hours": 1.0,
        }
    )
    report = maintain_table(table, cfg, "trades")
    table.refresh()
    snaps = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms)
    assert len(snaps) == 3
    assert (
        report.snapshots_expired == report.snapshots_before + report.partitions_compacted + 2 - 3
    )  # +2: two manifest rewrites
    assert (
        table.current_snapshot() is not None and table.current_snapshot().snapshot_id == snaps[-1].snapshot_id
    )  # type: ignore[union-attr]
    assert not old_orphan.exists() and fresh_orphan.exists()
    assert report.orphans_removed >= 1
    # The compacted-away small files are young: kept for now although unreferenced.
    assert all(Path(p).exists() for p in small_files)

    # Two hours later they are old enough to go; everything referenced stays and reads back.
    later = maintain_table(
        table, cfg, "trades", actions=("orphans",), now=datetime.now(UTC) + timedelta(hours=2)
    )
    table.refresh()
    still_needed = referenced_files(table)  # the 3 kept snapshots may still reference some small files
    gone = [p for p in small_files if p not in still_needed]
    assert len(gone) >= len(small_files) // 2
    assert all(not Path(p).exists() for p in gone) and all(
        Path(p).exists() for p in small_files if p in still_needed
    )
    assert not fresh_orphan.exists()
    assert later.orphans_removed >= len(gone) + 1
    for ref in referenced_files(table):
        assert Path(ref).exists(), ref
    assert row_set(table.scan().to_arrow()) == rows
    for snap in table.metadata.snapshots:
        assert len(row_set(table.scan(snapshot_id=snap.snapshot_id).to_arrow())) == len(rows)
    remaining = {str(p) for p in Path(table.location().removeprefix("file://")).rglob("*") if p.is_file()}
    assert remaining == referenced_files(table)


def test_dry_run_changes_nothing(lake: tuple[Settings, Table]) -> None:
    settings, table = lake
    for i in range(12):
        append(table, make_batch(i), "trades", landing_props(i + 1))
    location = metadata_location(table)
    cfg = settings.model_copy(
        update={
            "maintenance_snapshots_keep": 2,
            "maintenance_snapshot_max_age_hours": 0.0,
            "maintenance_min_input_files": 2,
        }
    )
    report = maintain_table(table, cfg, "trades", dry_run=True)
    table.refresh()
    assert metadata_location(table) == location
    assert report.dry_run and report.files_before == 12 and report.files_rewritten == 12
    assert report.files_after == len(SYMBOLS)  # one output file per partition planned
    assert report.snapshots_expired == 12 - 2 and len(table.metadata.snapshots) == 12


def test_stale_plan_is_abandoned_and_leaves_no_files(lake: tuple[Settings, Table]) -> None:
    settings, table = lake
    for i in range(20):
        append(table, make_batch(i), "trades", landing_props(i + 1))
    plan = plan_compaction(table, settings)
    assert len(plan) == len(SYMBOLS) and all(len(files) == 5 for files in plan.values())
    maintain_table(table, settings, "trades", actions=("compact",))  # another run gets there first
    table.refresh()
    rows = row_set(table.scan().to_arrow())
    on_disk_before = {p for p in Path(table.location().removeprefix("file://"), "data").rglob("*.parquet")}
    report = MaintenanceReport("trades")
    (key, files), *_ = plan.items()
    assert not _compact_partition(table, "trades", settings, files, "p", report)
    assert report.partitions_skipped and report.partitions_compacted == 0
    table.refresh()
    assert row_set(table.scan().to_arrow()) == rows
    assert {
        p for p in Path(table.location().removeprefix("file://"), "data").rglob("*.parquet")
    } == on_disk_before


def test_scheduler_compacts_in_background(lake: tuple[Settings, Table]) -> None:
    settings, table = lake
    for i in range(8):
        append(table, make_batch(i), "trades", landing_props(i + 1))
    cfg = settings.model_copy(update={"maintenance_interval_seconds": 0.2, "maintenance_min_input_files": 2})
    scheduler = start_scheduler(cfg)
    assert scheduler is not None
    try:
        deadline = time.monotonic() + 60
        while scheduler.runs == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        scheduler.stop()
    assert scheduler.runs >= 1
    assert len(live_files(table)) == len(SYMBOLS)
    assert table_offsets(table) == {TOPIC: {"0": 8}}


def test_cli_maintain(lake: tuple[Settings, Table], monkeypatch: pytest.MonkeyPatch) -> None:
    settings, table = lake
    for i in range(10):
        append(table, make_batch(i), "trades", landing_props(i + 1))
    monkeypatch.setenv("K2_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("K2_MAINTENANCE_MIN_INPUT_FILES", "2")
    from k2.cli import app

    runner = CliRunner()
    dry = runner.invoke(app, ["maintain", "--table", "trades", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    parsed: list[dict[str, Any]] = json.loads(dry.stdout)
    assert (
        parsed[0]["table"] == "trades" and parsed[0]["dry_run"] is True and parsed[0]["files_rewritten"] == 10
    )
    assert len(live_files(table)) == 10
    done = runner.invoke(app, ["maintain", "--table", "trades"])
    assert done.exit_code == 0, done.output
    assert "trades" in done.output and "10" in done.output
    assert len(live_files(table)) == len(SYMBOLS)
    bad = runner.invoke(app, ["maintain", "--table", "nope"])
    assert bad.exit_code != 0 and "expected tables among" in bad.output


def test_landing_consumer_resumes_after_maintenance_snapshots(settings: Settings, unique: str) -> None:
    """Real broker, registry and landing consumer: after compaction the table's offsets still resume landing."""
    from k2.bus import MarketDataProducer, topic_name
    from k2.landing import LandingConsumer
    from tests.landing.helpers import make_trades, table_keys

    settings = settings.model_copy(
        update={
            "consumer_group": f"g-{unique}",
            "consumer_session_timeout_ms": 1000,
            "landing_commit_rows": 50,
        }
    )
    exchange = f"m{unique}"
    topics = [topic_name("crypto", "trades", exchange)]
    first, second = (
        make_trades("BTCUSDT", 1, 1_000, exchange=exchange),
        make_trades("BTCUSDT", 1_001, 500, exchange=exchange),
    )
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, first)
    landed = LandingConsumer(settings, topics=topics)
    assert land_messages(landed, len(first)).commits >= 10
    table = landed.tables["trades"]
    offsets_before = table_offsets(table)
    report = maintain_table(table, settings, "trades")
    assert report.partitions_compacted >= 1 and report.files_after < report.files_before
    table.refresh()
    assert table.current_snapshot().summary.get("k2.writer") == MAINTENANCE_WRITER  # type: ignore[union-attr]
    assert table_offsets(table) == offsets_before
    other = settings.model_copy(
        update={"consumer_group": f"other-{unique}"}
    )  # no group offsets: the table decides
    with MarketDataProducer(other) as producer:
        producer.send_many(TRADE, second)
    consumer = LandingConsumer(other, topics=topics)
    stats = land_messages(consumer, len(second))
    assert stats.consumed == len(second) and stats.duplicates == 0 and stats.resets == 0
    keys = [k for k in table_keys(consumer.tables["trades"]) if k[0] == exchange]
    assert keys == [(exchange, "BTCUSDT", i) for i in range(1, 1_501)]


def test_orphan_removal_on_an_s3_warehouse(tmp_path: Path) -> None:
    """The same maintenance on an S3 warehouse (moto's S3 server over HTTP on loopback)."""
    import boto3
    from moto.server import ThreadedMotoServer

    from k2.telemetry.procs import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="k",
            aws_secret_access_key="s",
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket="lake")
        settings = Settings(
            data_dir=tmp_path / "k2",
            warehouse="s3://lake/wh",
            s3_endpoint=endpoint,
            s3_access_key_id="k",
            s3_secret_access_key="s",
            maintenance_snapshots_keep=1,
            maintenance_snapshot_max_age_hours=0.0,
            maintenance_min_input_files=2,
        )
        table = ensure_tables(load_catalog(settings), settings)["trades"]
        for i in range(12):
            append(table, make_batch(i), "trades", landing_props(i + 1))
        rows = row_set(table.scan().to_arrow())
        prefix = table.location().removeprefix("s3://lake/")
        s3.put_object(Bucket="lake", Key=f"{prefix}/data/crashed-writer.parquet", Body=b"not committed")
        report = maintain_table(table, settings, "trades", now=datetime.now(UTC) + timedelta(hours=48))
        table.refresh()
        objects = {
            "lake/" + o["Key"]
            for o in s3.list_objects_v2(Bucket="lake", Prefix=prefix + "/")["Contents"]
            if not o["Key"].endswith("/")
        }
        assert objects == referenced_files(
            table
        )  # orphans (old small files, the planted one) gone, nothing needed lost
        assert (
            report.files_after == len(SYMBOLS)
            and report.orphans_removed > 12
            and len(table.metadata.snapshots) == 1
        )
        assert row_set(table.scan().to_arrow()) == rows
    finally:
        server.stop()
