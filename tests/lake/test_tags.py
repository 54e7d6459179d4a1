"""Tags keep history: a tagged state survives expiry, compaction and orphan removal bit-exact."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pyiceberg.table import Table
from typer.testing import CliRunner

from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.lake.maintenance import maintain_table, referenced_files
from k2.lake.summary import OFFSETS_KEY
from k2.lake.tags import create_tag, drop_tag, eod_tag_name, list_tags, make_eod_tags, resolve_tag
from k2.lake.writer import append
from tests.support.factories import DAY_US, row_set, trade_batch

TOPIC = "market.crypto.trades.binance"


def _props(next_offset: int) -> dict[str, str]:
    return {OFFSETS_KEY: json.dumps({TOPIC: {"0": next_offset}})}


@pytest.fixture
def lake(tmp_path: Path) -> tuple[Settings, Table]:
    settings = Settings(data_dir=tmp_path / "k2")
    return settings, ensure_tables(load_catalog(settings), settings)["trades"]


def test_tagged_days_read_bit_exact_after_expiry_compaction_and_orphan_removal(
    lake: tuple[Settings, Table],
) -> None:
    settings, table = lake
    offset = 0
    tagged: dict[str, list[tuple[str, ...]]] = {}
    for day in range(3):  # three exchange days, each landed in several small commits, then tagged
        for part in range(4):
            offset += 1
            append(
                table,
                trade_batch(day * 1000 + part * 10, 10, start_us=trade_batch_day(day) + part * 10_000),
                "trades",
                _props(offset),
            )
        info = create_tag(table, f"day-{day}")
        tagged[info.name] = row_set(table.scan(snapshot_id=info.snapshot_id).to_arrow())
    for extra in range(3):  # untagged commits after the last tag
        offset += 1
        append(table, trade_batch(9000 + extra * 10, 10), "trades", _props(offset))
    table.refresh()
    before = len(table.metadata.snapshots)

    # Expire everything expirable, compact, and remove every unreferenced file at once.
    cfg = settings.model_copy(
        update={
            "maintenance_snapshots_keep": 1,
            "maintenance_snapshot_max_age_hours": 0.0,
            "maintenance_orphan_min_age_hours": 0.0,
            "maintenance_min_input_files": 2,
        }
    )
    report = maintain_table(table, cfg, "trades", now=datetime.now(UTC) + timedelta(hours=1))
    table.refresh()
    assert report.snapshots_expired > 0 and report.partitions_compacted > 0
    kept = {s.snapshot_id for s in table.metadata.snapshots}
    assert len(kept) < before
    assert {t.name for t in list_tags(table)} == set(tagged)
    for name, rows in tagged.items():
        sid = resolve_tag(table, name)
        assert sid in kept
        assert row_set(table.scan(snapshot_id=sid).to_arrow()) == rows  # bit-exact, every column
    remaining = {str(p) for p in Path(table.location().removeprefix("file://")).rglob("*") if p.is_file()}
    assert remaining == referenced_files(table)

    # Dropping a tag lets its snapshot expire like any other.
    sid0 = resolve_tag(table, "day-0")
    drop_tag(table, "day-0")
    maintain_table(table, cfg, "trades", actions=("expire",), now=datetime.now(UTC) + timedelta(hours=1))
    table.refresh()
    assert table.metadata.snapshot_by_id(sid0) is None
    with pytest.raises(LookupError, match="expected a tag 'day-0'.*found none \\(tags: day-1, day-2\\)"):
        resolve_tag(table, "day-0")


def trade_batch_day(day: int) -> int:
    return 1_723_075_200_000_000 + day * DAY_US  # 2024-08-08T00:00Z + day


def test_retention_drops_the_tag_and_eod_tags_are_made_once(lake: tuple[Settings, Table]) -> None:
    settings, table = lake
    append(table, trade_batch(1, 5), "trades", _props(1))
    short = create_tag(table, "short-lived", retain_days=1)
    forever = create_tag(table, "kept")
    assert short.expires_at is not None and forever.expires_at is None
    cfg = settings.model_copy(
        update={"maintenance_snapshots_keep": 1, "maintenance_snapshot_max_age_hours": 0.0}
    )
    report = maintain_table(
        table, cfg, "trades", actions=("expire",), now=datetime.now(UTC) + timedelta(days=2)
    )
    assert [t.name for t in list_tags(table)] == ["kept"]
    assert any("short-lived" in note for note in report.notes)

    # End-of-day tags: every ended UTC day since the first commit, the last snapshot before midnight.
    current = table.current_snapshot()
    assert current is not None
    later = datetime.now(UTC) + timedelta(days=2)
    made = make_eod_tags(table, later)
    today = datetime.now(UTC)
    assert made == [eod_tag_name(today), eod_tag_name(today + timedelta(days=1))]
    assert resolve_tag(table, eod_tag_name(today)) == current.snapshot_id
    assert make_eod_tags(table, later) == []  # idempotent


def test_tag_errors_say_what_was_expected(lake: tuple[Settings, Table]) -> None:
    _, table = lake
    with pytest.raises(LookupError, match="found an empty table"):
        create_tag(table, "x")
    append(table, trade_batch(1, 5), "trades", _props(1))
    create_tag(table, "x")
    with pytest.raises(ValueError, match="already on"):
        create_tag(table, "x")
    with pytest.raises(ValueError, match="expected a tag name"):
        create_tag(table, "no spaces")
    with pytest.raises(LookupError, match="expected snapshot 42"):
        create_tag(table, "y", snapshot_id=42)
    with pytest.raises(ValueError, match="naive|timezone-aware"):
        create_tag(table, "y", at=datetime(2024, 1, 1))  # noqa: DTZ001 - the error under test


def test_cli_create_list_drop(lake: tuple[Settings, Table], monkeypatch: pytest.MonkeyPatch) -> None:
    from k2.cli import app

    settings, table = lake
    append(table, trade_batch(1, 5), "trades", _props(1))
    monkeypatch.setenv("K2_DATA_DIR", str(settings.data_dir))
    runner = CliRunner()
    made = runner.invoke(app, ["tag", "create", "audit-1", "--table", "trades"])
    assert made.exit_code == 0, made.output
    listed = runner.invoke(app, ["tag", "list", "--json"])
    rows = [json.loads(line) for line in listed.output.splitlines()]
    assert [(r["table"], r["name"]) for r in rows] == [("trades", "audit-1")]
    again = runner.invoke(app, ["tag", "create", "audit-1", "--table", "trades"])
    assert again.exit_code == 2 and "already on" in again.output
    dropped = runner.invoke(app, ["tag", "drop", "audit-1"])
    assert dropped.exit_code == 0 and "dropped audit-1 from 1 table" in dropped.output
    missing = runner.invoke(app, ["tag", "drop", "audit-1"])
    assert missing.exit_code == 2


def test_every_query_reads_as_of_a_tag(lake: tuple[Settings, Table]) -> None:
    import k2
    from k2.query.errors import QueryError

    settings, table = lake
    append(table, trade_batch(1, 10), "trades", _props(1))
    create_tag(table, "before-more")
    append(table, trade_batch(11, 10), "trades", _props(2))
    client = k2.connect(data_dir=settings.data_dir)
    try:
        tagged = client.trades("BTCUSDT", as_of="tag:before-more", include_recent=False)
        assert tagged.num_rows == 10
        assert client.trades("BTCUSDT", include_recent=False).num_rows == 20
        assert (
            client.bars("BTCUSDT", "1m", as_of="tag:before-more", include_recent=False).to_pylist()[0][
                "trade_count"
            ]
            == 10
        )
        assert client.as_of("tag:before-more").trades("BTCUSDT", include_recent=False).num_rows == 10
        with pytest.raises(QueryError, match="expected a tag 'nope' on one of K2's tables, found none"):
            client.trades("BTCUSDT", as_of="tag:nope", include_recent=False)
    finally:
        client.close()


def test_landing_schedule_tags_every_table_once_per_ended_day(lake: tuple[Settings, Table]) -> None:
    from k2.lake.tags import make_eod_tags_everywhere, start_eod_tagger

    settings, table = lake
    append(table, trade_batch(1, 5), "trades", _props(1))
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    made = make_eod_tags_everywhere(settings, tomorrow)
    assert made == {"trades": [eod_tag_name(datetime.now(UTC))]}  # the other tables are empty: nothing to tag
    assert make_eod_tags_everywhere(settings, tomorrow) == {}
    # The landing service's thread runs the same check at start and stops promptly.
    tagger = start_eod_tagger(settings.model_copy(update={"eod_tag_check_seconds": 0.05}))
    assert tagger is not None
    tagger.stop(timeout=10)
    assert start_eod_tagger(settings.model_copy(update={"eod_tags": False})) is None


def test_snapshots_list_their_tags(lake: tuple[Settings, Table]) -> None:
    import k2

    settings, table = lake
    append(table, trade_batch(1, 5), "trades", _props(1))
    tagged = create_tag(table, "audit")
    append(table, trade_batch(6, 5), "trades", _props(2))
    client = k2.connect(data_dir=settings.data_dir)
    try:
        rows = client.snapshots("trades").to_pylist()
    finally:
        client.close()
    assert [(r["snapshot_id"], r["tags"]) for r in rows] == [
        (tagged.snapshot_id, ["audit"]),
        (rows[1]["snapshot_id"], []),
    ]
