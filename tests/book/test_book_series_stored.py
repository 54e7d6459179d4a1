"""``book_series`` started from the stored ``book_snapshots`` rows (:mod:`k2.query.book_checkpoint`) equals
the book replayed step by step, on the real BTCUSDT capture with a resync in the middle; a stored depth too
small for the walks makes it fall back to every delta since the restart, with the same answer."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from k2.config import Settings
from k2.lake.book_snapshots import write_book_snapshots
from k2.lake.catalog import ensure_tables, load_catalog
from k2.lake.writer import append
from k2.model import BOOK_DELTA
from k2.model.arrow import records_to_arrow
from k2.model.book import OrderBook
from k2.model.values import datetime_to_micros, micros_to_datetime
from k2.query import book_checkpoint
from k2.query.client import Client
from tests.book.capture import capture_deltas, reference_row, with_resync


def _lake(root: Path, stored_depth: int) -> tuple[Settings, list[dict[str, Any]]]:
    settings = Settings(data_dir=root / "k2", query_pool_size=1, book_snapshot_depth=stored_depth)
    rows = capture_deltas(150)
    ends = [i for i, r in enumerate(rows) if r["is_event_end"] and not r["is_snapshot"]]
    rows = with_resync(rows, ends[2 * len(ends) // 3], 200)
    table = ensure_tables(load_catalog(settings), settings)["book_deltas"]
    append(table, records_to_arrow(BOOK_DELTA, rows), "book_deltas")
    write_book_snapshots(settings)
    return settings, rows


@pytest.fixture(scope="module")
def deep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, list[dict[str, Any]]]:
    return _lake(tmp_path_factory.mktemp("deep"), 500)


def _assert_series_equal_replay(
    client: Client,
    rows: list[dict[str, Any]],
    start_us: int,
    end_us: int,
    every: str,
    columns: tuple[str, ...] | None = None,
    **kwargs: Any,
) -> int:
    """Every step equals the replay (``columns`` only, when given: the reference's metrics use bps 10 and
    10 levels)."""
    kwargs.setdefault("quantity", Decimal(1))
    series = client.book_series(
        "BTCUSDT", micros_to_datetime(start_us), micros_to_datetime(end_us), every, depth=10, **kwargs
    ).to_pylist()
    quantity = kwargs["quantity"]
    for row in series:
        expected = reference_row(rows, datetime_to_micros(row["ts"]), 10, quantity)
        names = columns or tuple(expected)
        assert {name: row[name] for name in names} == {name: expected[name] for name in names}, row["ts"]
    return len(series)


@pytest.mark.parametrize(("every", "quantity"), [("1s", Decimal("2.5")), ("250ms", Decimal("0.00000001"))])
def test_a_series_started_from_stored_rows_equals_the_replay(
    deep: tuple[Settings, list[dict[str, Any]]], every: str, quantity: Decimal
) -> None:
    settings, rows = deep
    first = rows[0]["exchange_ts"]
    start, end = first + 35_000_000 + 123, rows[-1]["exchange_ts"] - 1_000_000  # spans the resync
    with Client(settings) as client:
        steps = _assert_series_equal_replay(client, rows, start, end, every, quantity=quantity)
        assert client._book_series_starts == {"stored": 1, "deltas": 0}
    assert steps > 100


def test_stored_rows_too_shallow_for_the_walks_fall_back_to_the_deltas(tmp_path: Path) -> None:
    settings, rows = _lake(tmp_path, 3)  # 3 levels a side: a 10-level walk leaves them at once
    first = rows[0]["exchange_ts"]
    with Client(settings) as client:
        _assert_series_equal_replay(client, rows, first + 35_000_000, first + 60_000_000, "1s")
        assert client._book_series_starts == {"stored": 0, "deltas": 1}


def test_later_stored_rows_extend_what_is_known_as_the_book_moves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With stored rows of 40 levels the book moves past the first row's levels within the range; the
    later rows (one every 10 s here) make those prices known, so the stored start still answers."""
    monkeypatch.setattr(book_checkpoint, "_CORRECTION_SPACING_US", 10_000_000)
    settings, rows = _lake(tmp_path, 40)
    first = rows[0]["exchange_ts"]
    start, end = first + 12_000_000, first + 90_000_000  # before the resync
    with Client(settings) as client:
        levels = ("last_update_id", "bid_prices", "bid_sizes", "ask_prices", "ask_sizes", "mid", "spread")
        fills = ("buy_fill_price", "sell_fill_price")
        _assert_series_equal_replay(client, rows, start, end, "1s", levels + fills, bps=0, metrics_levels=1)
        read = client._resolve("book_deltas", None)
        cp = book_checkpoint.checkpoint(
            client, read, "BTCUSDT", "binance", 0, micros_to_datetime(start), micros_to_datetime(end), None
        )
        assert client._book_series_starts == {"stored": 1, "deltas": 0}
    assert cp is not None and cp.later
    series_bids = [
        r for r in rows if start < r["exchange_ts"] <= end and r["side"] == "BID" and r["size"] > 0
    ]
    assert min(r["price"] for r in series_bids) < cp.first.bid_edge or any(
        r["price"] > cp.first.ask_edge for r in rows if start < r["exchange_ts"] <= end and r["side"] == "ASK"
    ), "expected the book to move past the first stored row's levels"


def test_stored_rows_after_a_restart_sharing_the_previous_events_id_are_the_restarted_book(
    deep: tuple[Settings, list[dict[str, Any]]],
) -> None:
    """The resync here shares its update id with the event before it (a venue snapshot taken right after
    it). The stored rows written after it list the restarted book (200 levels a side, then what the deltas
    add), not the levels the restart removed."""
    settings, rows = deep
    restart = max(r["last_update_id"] for r in rows if r["is_snapshot"])
    stored = ensure_tables(load_catalog(settings), settings)["book_snapshots"].scan().to_arrow()
    after = [r for r in stored.to_pylist() if r["last_update_id"] >= restart]
    assert after, "expected stored rows after the restart"
    for row in after:
        book = OrderBook()
        book.apply_rows(
            sorted(
                (r for r in rows if r["last_update_id"] <= row["last_update_id"]),
                key=lambda r: r["last_update_id"],
            )
        )
        for side, name in (("BID", "bid"), ("ASK", "ask")):
            expected = book.top(side, row["depth"])
            assert [int(p.scaleb(8)) for p in row[f"{name}_prices"]] == [p for p, _ in expected], row[
                "last_update_id"
            ]
            assert [int(s.scaleb(8)) for s in row[f"{name}_sizes"]] == [s for _, s in expected]
