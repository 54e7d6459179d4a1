"""``book()`` from stored ``book_snapshots`` rows (:mod:`k2.query.book_stored`) at its edges: always equal to
the delta-only read (the answer of the rows themselves), on the real Binance capture.

Edges: a moment right at a stored row and just before it, before any stored row, a level removed after the
stored row, a depth larger than the stored one, a book restart between the stored row and the moment, and
reads that must combine older rows (the price moved past the newest row's levels). Also: the table is
written in small row groups, so a read decodes the lists of a few rows, not of a whole file.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from k2.config import Settings
from k2.lake.book_snapshots import write_book_snapshots
from k2.lake.catalog import TABLES, ensure_tables, load_catalog, table_layout
from k2.lake.writer import append
from k2.model import BOOK_DELTA
from k2.model.arrow import records_to_arrow
from k2.model.values import datetime_to_micros, micros_to_datetime, to_unscaled
from k2.query import book as book_module
from k2.query import book_stored
from k2.query.client import Client
from k2.query.errors import UnknownSymbolError
from tests.book.capture import capture_deltas, restart_snapshot

STORED_DEPTH = 30  # shallow on purpose: the price often moves past it, so older rows must be combined


def _stored(settings: Settings) -> list[dict[str, Any]]:
    table = ensure_tables(load_catalog(settings), settings)["book_snapshots"]
    table.refresh()
    return table.scan().to_arrow().sort_by("last_update_id").to_pylist()


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, list[dict[str, Any]]]]:
    """Two minutes of the capture landed and its book_snapshots written (10 s cadence, 30 levels)."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("stored") / "k2", query_pool_size=1, book_snapshot_depth=STORED_DEPTH
    )
    rows = capture_deltas(120)
    append(
        ensure_tables(load_catalog(settings), settings)["book_deltas"],
        records_to_arrow(BOOK_DELTA, rows),
        "book_deltas",
    )
    write_book_snapshots(settings)
    yield settings, rows


def _delta_read(client: Client, **kwargs: Any) -> Any:
    """The same read with the stored rows switched off (the delta-only answer)."""
    original = book_module._from_stored_snapshot
    book_module._from_stored_snapshot = lambda *args, **kw: None  # type: ignore[assignment]
    try:
        return client.book("BTCUSDT", include_recent=False, **kwargs)
    finally:
        book_module._from_stored_snapshot = original


def _same(client: Client, **kwargs: Any) -> Any:
    fast = client.book("BTCUSDT", include_recent=False, **kwargs)
    slow = _delta_read(client, **kwargs)
    assert fast.levels.to_pylist() == slow.levels.to_pylist(), kwargs
    assert (fast.last_update_id, fast.exchange_ts, fast.exchange) == (
        slow.last_update_id,
        slow.exchange_ts,
        slow.exchange,
    ), kwargs
    assert fast.levels.schema == slow.levels.schema == book_module.LEVELS_SCHEMA
    return fast


def test_at_a_stored_row_just_before_it_and_before_any_row(
    lake: tuple[Settings, list[dict[str, Any]]],
) -> None:
    settings, rows = lake
    stored = _stored(settings)
    assert len(stored) >= 10
    with Client(settings) as client:
        for row in stored[:: max(1, len(stored) // 6)]:
            at = row["exchange_ts"]
            for depth in (1, 25, STORED_DEPTH):
                book = _same(client, at=at, depth=depth)
                assert book.read_from == "book_snapshots"
                assert book.last_update_id >= row["last_update_id"]
                by_id = _same(client, at="2030-01-01T00:00:00Z", depth=depth, update_id=row["last_update_id"])
                assert by_id.read_from == "book_snapshots"
                assert by_id.last_update_id == row["last_update_id"]
                bids = [(to_unscaled(p), to_unscaled(s)) for p, s in by_id.side("BID")]
                listed = [
                    (to_unscaled(p), to_unscaled(s))
                    for p, s in zip(row["bid_prices"], row["bid_sizes"], strict=True)
                ]
                assert bids[: min(depth, len(listed))] == listed[:depth]
            if row is not stored[0]:  # just before it: the row before (before the first: no book, below)
                _same(client, at=micros_to_datetime(datetime_to_micros(at) - 1), depth=25)
        first_ts = min(int(r["exchange_ts"]) for r in rows)
        for kwargs in (
            {"at": micros_to_datetime(first_ts - 1_000)},
            {"at": "2030-01-01T00:00:00Z", "update_id": stored[0]["last_update_id"] - 1},
        ):
            with pytest.raises(UnknownSymbolError, match="expected a book snapshot of 'BTCUSDT'"):
                client.book("BTCUSDT", depth=25, include_recent=False, **kwargs)


def test_a_level_removed_after_the_stored_row(lake: tuple[Settings, list[dict[str, Any]]]) -> None:
    settings, rows = lake
    stored = _stored(settings)
    row = stored[len(stored) // 2]
    listed = {to_unscaled(p) for p in row["bid_prices"][:5]}
    removal = next(
        r
        for r in rows
        if int(r["last_update_id"]) > row["last_update_id"]
        and r["side"] == "BID"
        and int(r["size"]) == 0
        and int(r["price"]) in listed
    )
    price, u = int(removal["price"]), int(removal["last_update_id"])
    with Client(settings) as client:
        before = _same(client, at="2030-01-01T00:00:00Z", depth=25, update_id=u - 1)
        after = _same(client, at="2030-01-01T00:00:00Z", depth=25, update_id=u)
    assert after.read_from == "book_snapshots"
    prices = lambda book: {to_unscaled(p) for p, _ in book.side("BID")}  # noqa: E731
    assert price in prices(before) or before.last_update_id < u  # listed until the removal...
    assert price not in prices(after)  # ...and gone after it


def test_depth_larger_than_the_stored_depth_reads_the_deltas(
    lake: tuple[Settings, list[dict[str, Any]]],
) -> None:
    settings, _ = lake
    row = _stored(settings)[3]
    with Client(settings) as client:
        deep = _same(client, at=row["exchange_ts"], depth=STORED_DEPTH + 10)
        assert deep.read_from == "deltas"
        assert len(deep.side("BID")) == STORED_DEPTH + 10


def test_older_rows_are_combined_when_the_price_moved_past_the_newest(
    lake: tuple[Settings, list[dict[str, Any]]],
) -> None:
    """Random moments: every answer equals the delta read, and some needed more than the newest row."""
    settings, rows = lake
    first, last = min(int(r["exchange_ts"]) for r in rows), max(int(r["exchange_ts"]) for r in rows)
    rng = random.Random(14)
    windows: list[int] = []
    original = book_stored.combine

    def counted(*args: Any, **kwargs: Any) -> Any:
        windows.append(len(args[4]))
        return original(*args, **kwargs)

    book_stored.combine = counted  # type: ignore[assignment]
    try:
        with Client(settings) as client:
            answers = [
                _same(client, at=micros_to_datetime(rng.randint(first, last)), depth=25) for _ in range(40)
            ]
    finally:
        book_stored.combine = original  # type: ignore[assignment]
    assert sum(b.read_from == "book_snapshots" for b in answers) >= 20
    assert max(windows) > 1, windows


def test_a_restart_between_the_stored_row_and_the_moment(tmp_path: Path) -> None:
    """A resync after the newest stored row (its own stored row not written yet): not combined across."""
    settings = Settings(data_dir=tmp_path / "k2", query_pool_size=1, book_snapshot_depth=STORED_DEPTH)
    rows = capture_deltas(30)
    ids = sorted({int(r["last_update_id"]) for r in rows})
    k = len(ids) * 2 // 3
    before = [r for r in rows if int(r["last_update_id"]) <= ids[k]]
    deltas = ensure_tables(load_catalog(settings), settings)["book_deltas"]
    append(deltas, records_to_arrow(BOOK_DELTA, before), "book_deltas")
    write_book_snapshots(settings)
    restart_u = ids[k] + 1
    snapshot, best_bid = restart_snapshot(before, restart_u)
    after = [r for r in rows if int(r["last_update_id"]) > ids[k]][:50]
    append(deltas, records_to_arrow(BOOK_DELTA, snapshot + after), "book_deltas")
    at = "2030-01-01T00:00:00Z"
    with Client(settings) as client:
        for u in (restart_u, int(after[-1]["last_update_id"])):
            answer = _same(client, at=at, depth=25, update_id=u)
            assert answer.read_from == "deltas"  # the stored rows are from before the restart
        assert best_bid not in {
            to_unscaled(p) for p, _ in _same(client, at=at, depth=25, update_id=restart_u).side("BID")
        }
    write_book_snapshots(settings)  # now the restart has its stored row
    with Client(settings) as client:
        assert _same(client, at=at, depth=25, update_id=restart_u).read_from == "book_snapshots"


def test_book_snapshots_are_written_in_small_row_groups(tmp_path: Path) -> None:
    """A read needs one stored row: row groups of a few rows, so its lists are decoded, not a whole file's."""
    settings = Settings(data_dir=tmp_path / "k2", query_pool_size=1, book_snapshot_interval_seconds=1.0)
    tables = ensure_tables(load_catalog(settings), settings)
    append(tables["book_deltas"], records_to_arrow(BOOK_DELTA, capture_deltas(90)), "book_deltas")
    write_book_snapshots(settings)
    snaps = ensure_tables(load_catalog(settings), settings)["book_snapshots"]
    limit = int(table_layout("book_snapshots")["write.parquet.row-group-limit"])
    assert limit <= 64
    sizes = []
    for path in snaps.inspect.files()["file_path"].to_pylist():
        with snaps.io.new_input(path).open() as stream:
            meta = pq.ParquetFile(stream).metadata
        sizes += [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sum(sizes) >= 2 * limit and max(sizes) <= limit, sizes


def test_an_older_book_snapshots_table_gets_the_small_row_groups(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "k2")
    catalog = load_catalog(settings)
    catalog.create_namespace("market_data")
    tdef = TABLES["book_snapshots"]
    old = {"write.parquet.row-group-limit": "65536", "commit.retry.num-retries": "0", "format-version": "2"}
    catalog.create_table(tdef.identifier, schema=tdef.record.iceberg_schema(), properties=old)
    table = ensure_tables(catalog, settings)["book_snapshots"]
    assert int(table.properties["write.parquet.row-group-limit"]) <= 64  # was the generic 65,536
    assert (
        ensure_tables(catalog, settings)["book_deltas"].properties["write.parquet.row-group-limit"] == "65536"
    )
