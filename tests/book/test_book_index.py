"""Which stored book rows a read starts from (:mod:`k2.query.book_index`), on the real Binance capture.

The index answers what the per-read scan answered (the newest rows at or before a moment, through an
update id, of one exchange), from the files' footers and the few row groups they point at, and sees a new
``book_snapshots`` commit at once (the read's own snapshot plan names the files).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pyarrow.parquet as pq
import pytest

from k2.config import Settings
from k2.lake.book_snapshots import write_book_snapshots
from k2.lake.catalog import ensure_tables, load_catalog
from k2.lake.writer import append
from k2.model import BOOK_DELTA
from k2.model.arrow import records_to_arrow
from k2.model.values import micros_to_datetime
from k2.query import book_stored
from k2.query.book import planned_paths
from k2.query.client import Client
from tests.book.capture import capture_deltas

REFERENCE = (  # the scan the index replaced, per read
    "SELECT exchange, last_update_id AS u, exchange_ts AS ts, depth FROM iceberg_scan(?, version => ?) "
    "WHERE symbol = ? AND exchange_ts <= ? AND (? IS NULL OR last_update_id <= ?) "
    "ORDER BY last_update_id DESC LIMIT ?"
)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, list[dict[str, Any]]]]:
    """The capture's first 90 s landed in two commits, book_snapshots written after the first (a row every
    0.2 s: several 32-row groups, so a look-up has groups to skip)."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("index") / "k2",
        query_pool_size=1,
        book_snapshot_interval_seconds=0.2,
    )
    rows = capture_deltas(90)
    half = len(rows) // 2
    deltas = ensure_tables(load_catalog(settings), settings)["book_deltas"]
    append(deltas, records_to_arrow(BOOK_DELTA, rows[:half]), "book_deltas")
    write_book_snapshots(settings)
    yield settings, rows


def _reference(
    client: Client, snaps: Any, moment: Any, update_id: int | None, window: int
) -> list[dict[str, Any]]:
    version = str(snaps.snapshot_id)
    found = client._execute(
        REFERENCE, [snaps.location, version, "BTCUSDT", moment, update_id, update_id, window], query="book"
    )
    rows = found.to_pylist()
    return [r for r in rows if r["exchange"] == rows[0]["exchange"]] if rows else []


def test_the_index_answers_what_the_scan_answered(lake: tuple[Settings, list[dict[str, Any]]]) -> None:
    settings, rows = lake
    client = Client(settings)
    snaps = client._resolve("book_snapshots", None)
    rng = random.Random(5)
    landed = rows[: len(rows) // 2]
    moments = [micros_to_datetime(r["exchange_ts"]) for r in rng.sample(landed, 30)]
    moments.append(micros_to_datetime(landed[0]["exchange_ts"] - 1))  # before any stored row
    for moment in moments:
        for window in (1, 6, 60):
            bound = rng.choice([None, rng.choice(landed)["last_update_id"]])
            got = client._stored_rows.newest(client, snaps, "BTCUSDT", moment, None, bound, window)
            scalars = [{k: r[k] for k in ("exchange", "u", "ts", "depth")} for r in got]
            assert scalars == _reference(client, snaps, moment, bound, window), (moment, window, bound)
    assert client._stored_rows.newest(client, snaps, "BTCUSDT", moments[0], "coinbase", None, 6) == []
    client.close()


def test_a_look_up_reads_footers_once_and_only_the_groups_it_needs_and_a_new_commit_is_seen_at_once(
    lake: tuple[Settings, list[dict[str, Any]]],
) -> None:
    """Footers are parsed once per file, a look-up decodes the one or two row groups holding the newest
    rows (not the symbol's every group), and a new ``book_snapshots`` commit adds only its new file."""
    settings, rows = lake
    client = Client(settings)
    index = client._stored_rows
    late = micros_to_datetime(rows[-1]["exchange_ts"])
    before = client._resolve("book_snapshots", None)
    files_before = planned_paths(client, before, "BTCUSDT")
    assert files_before
    groups = sum(pq.ParquetFile(p.removeprefix("file://")).metadata.num_row_groups for p in files_before)
    assert groups > 4, f"expected a table of several row groups, found {groups}"
    first = [client.book("BTCUSDT", late, depth=5, include_recent=False) for _ in range(3)]
    assert index.footers_parsed == len(files_before)
    # book() asks for the newest 60 rows (its widest try): the two or three 32-row groups holding them.
    assert 1 <= index.groups_read <= 3, (
        f"expected the newest groups only, read {index.groups_read} of {groups}"
    )
    assert index.scans == 0
    newest_before = index.newest(client, before, "BTCUSDT", late, None, None, 1)[0]["u"]

    deltas = ensure_tables(load_catalog(settings), settings)["book_deltas"]
    append(deltas, records_to_arrow(BOOK_DELTA, rows[len(rows) // 2 :]), "book_deltas")
    write_book_snapshots(settings)
    after = client._resolve("book_snapshots", None)
    assert after.snapshot_id != before.snapshot_id
    new_files = set(planned_paths(client, after, "BTCUSDT") or []) - set(files_before)
    assert new_files
    newest_after = index.newest(client, after, "BTCUSDT", late, None, None, 1)[0]["u"]
    assert newest_after > newest_before  # the rows of the new commit, not the cached ones
    assert index.footers_parsed == len(files_before) + len(new_files)
    assert (
        client.book("BTCUSDT", late, depth=5, include_recent=False).last_update_id >= first[0].last_update_id
    )
    client.close()


def test_a_read_that_cannot_be_planned_scans_once_and_answers_the_same(
    lake: tuple[Settings, list[dict[str, Any]]],
) -> None:
    """Without the loaded table (no file plan) the look-up scans the symbol's scalars once per snapshot and
    gives the same rows, without file positions."""
    settings, rows = lake
    client = Client(settings)
    snaps = client._resolve("book_snapshots", None)
    unplanned = replace(snaps, table=None)
    rng = random.Random(11)
    for moment in [micros_to_datetime(r["exchange_ts"]) for r in rng.sample(rows[: len(rows) // 2], 10)]:
        for window in (1, 6, 60):
            planned = client._stored_rows.newest(client, snaps, "BTCUSDT", moment, None, None, window)
            scanned = client._stored_rows.newest(client, unplanned, "BTCUSDT", moment, None, None, window)
            assert [r["file"] for r in scanned] == [None] * len(scanned)
            assert [r["u"] for r in scanned] == [r["u"] for r in planned]
            assert [r["ts"] for r in scanned] == [r["ts"] for r in planned]
    assert client._stored_rows.scans == 1
    client.close()


def test_the_lists_are_read_from_the_rows_own_row_groups(lake: tuple[Settings, list[dict[str, Any]]]) -> None:
    """The stored lists of a window, read by pyarrow from the row groups holding its rows, equal DuckDB's
    read of the same rows; a row whose file is unknown sends the caller back to DuckDB."""
    settings, rows = lake
    client = Client(settings)
    snaps = client._resolve("book_snapshots", None)
    rng = random.Random(9)
    landed = rows[: len(rows) // 2]
    checked: list[dict[str, Any]] = []
    for moment in [micros_to_datetime(r["exchange_ts"]) for r in rng.sample(landed, 12)]:
        window = client._stored_rows.newest(
            client, snaps, "BTCUSDT", moment, None, None, rng.choice([1, 6, 60])
        )
        if not window:
            continue
        assert all(r["file"] is not None for r in window)
        got = client._stored_rows.lists(snaps.table.io, window)
        assert got is not None
        duck = book_stored._stored_levels(
            client, snaps, "BTCUSDT", "binance", window[-1]["u"], window[0]["u"]
        )
        assert duck is not None
        assert got.sort_by("u").to_pylist() == duck.sort_by("u").to_pylist()
        checked = window
    assert checked, "expected stored rows at some of the moments, found none"
    assert client._stored_rows.lists(snaps.table.io, [{**checked[0], "file": None}]) is None
    assert client._stored_rows.lists(snaps.table.io, [{**checked[0], "row": checked[0]["row"] + 1}]) is None
    client.close()
