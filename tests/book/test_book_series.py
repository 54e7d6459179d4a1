"""``book_series`` equals the book replayed step by step (issue 14 item 5), on the real BTCUSDT capture.

The lake holds the capture's first two minutes of book deltas (parsed by the import's own reader) plus a
resync in the middle, shaped as Binance's: a snapshot that restarts the book with only the best 200 levels
per side of the rebuilt book (a REST snapshot is limited in depth, so deeper levels disappear). The
reference is the plain replay: every row with ``exchange_ts <=`` the step applied in update-id order with
:class:`k2.model.book.OrderBook`, then :func:`k2.query.book.book_metrics` over the whole sides.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.lake.writer import append
from k2.model import BOOK_DELTA
from k2.model.arrow import records_to_arrow
from k2.model.values import datetime_to_micros, micros_to_datetime
from k2.query.client import Client
from tests.book.capture import capture_deltas, reference_row, with_resync


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, list[dict[str, Any]]]:
    settings = Settings(data_dir=Path(tmp_path_factory.mktemp("series")) / "k2", query_pool_size=1)
    rows = capture_deltas(120)
    ends = [i for i, r in enumerate(rows) if r["is_event_end"] and not r["is_snapshot"]]
    rows = with_resync(rows, ends[len(ends) // 2], 200)
    table = ensure_tables(load_catalog(settings), settings)["book_deltas"]
    half = len(rows) // 2  # two commits: the range spans files
    append(table, records_to_arrow(BOOK_DELTA, rows[:half]), "book_deltas")
    append(table, records_to_arrow(BOOK_DELTA, rows[half:]), "book_deltas")
    return settings, rows


@pytest.mark.parametrize(("every", "quantity"), [("1s", Decimal("2.5")), ("250ms", Decimal("0.00000001"))])
def test_book_series_equals_the_step_by_step_replay(
    lake: tuple[Settings, list[dict[str, Any]]], every: str, quantity: Decimal
) -> None:
    settings, rows = lake
    first_update = next(i for i, r in enumerate(rows) if not r["is_snapshot"])
    restart = next(r for r in rows[first_update:] if r["is_snapshot"])["exchange_ts"]  # the injected resync
    start = micros_to_datetime(restart - 20_000_000 - 123)
    end = micros_to_datetime(restart + 20_000_000)
    with Client(settings) as client:
        series = client.book_series("BTCUSDT", start, end, every, depth=10, quantity=quantity).to_pylist()
    assert len(series) == (161 if every == "250ms" else 41)  # start + i * every < end
    for row in series:
        expected = reference_row(rows, datetime_to_micros(row["ts"]), 10, quantity)
        found = {name: row[name] for name in expected}
        assert found == expected, row["ts"]
    before = [r for r in series if datetime_to_micros(r["ts"]) < restart]
    after = [r for r in series if datetime_to_micros(r["ts"]) >= restart]
    assert before and after and all(r["exchange"] == "binance" for r in series)


def test_book_series_of_one_step_is_the_book_at_start(lake: tuple[Settings, list[dict[str, Any]]]) -> None:
    settings, rows = lake
    moment = rows[-1]["exchange_ts"] - 5_000_000
    with Client(settings) as client:
        series = client.book_series(
            "BTCUSDT", micros_to_datetime(moment), micros_to_datetime(moment + 1), "1s", depth=3
        ).to_pylist()
    assert len(series) == 1
    expected = reference_row(rows, moment, 3, Decimal(1))
    assert {name: series[0][name] for name in ("last_update_id", "bid_prices", "ask_sizes", "mid")} == {
        name: expected[name] for name in ("last_update_id", "bid_prices", "ask_sizes", "mid")
    }


def test_book_series_does_not_depend_on_the_order_the_files_hold_the_rows(
    lake: tuple[Settings, list[dict[str, Any]]], tmp_path: Path
) -> None:
    """The range is read without ORDER BY (a sort of the hour's rows in DuckDB cost more than the rest of
    the read); rows that come back out of update-id order are sorted in numpy. Here the later half of the
    deltas is committed first, so the files hold them newest first: the answer must not change."""
    settings, rows = lake
    reversed_settings = Settings(data_dir=tmp_path / "k2", query_pool_size=1)
    table = ensure_tables(load_catalog(reversed_settings), reversed_settings)["book_deltas"]
    half = len(rows) // 2
    append(table, records_to_arrow(BOOK_DELTA, rows[half:]), "book_deltas")
    append(table, records_to_arrow(BOOK_DELTA, rows[:half]), "book_deltas")
    start = micros_to_datetime(rows[0]["exchange_ts"] + 5_000_000)
    end = micros_to_datetime(rows[-1]["exchange_ts"] - 1_000_000)
    answers = []
    for each in (settings, reversed_settings):
        with Client(each) as client:
            answers.append(client.book_series("BTCUSDT", start, end, "500ms", 10, quantity=Decimal(1)))
    assert answers[0].num_rows > 200 and answers[0].to_pylist() == answers[1].to_pylist()
