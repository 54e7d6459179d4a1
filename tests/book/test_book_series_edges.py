"""``book_series`` edges the vectorised replay must get right, each against the plain step-by-step replay.

A small synthetic book (shaped like the capture's rows: a template row of the real BTCUSDT capture with
its ids, times, sides, prices and sizes replaced), one event per line below, stepped every second:

- a level removed and re-added inside one step, and one added and removed inside one step (a step's rows
  for one level are no longer reduced to the last: the replay assigns them in id order);
- a step without changes (the last update id carries over);
- hundreds of distinct prices added and removed far from the top (a sparse price grid: the best-level
  scan must widen, then narrow again);
- the ask side emptied (metrics None), then asks re-added below the best bid (a crossed book; an odd
  bid + ask total whose half is odd, then even: mid rounds half-even), and a market order walking more
  levels than the metrics use;
- a snapshot restart inside the range, with a row of the same step before it (superseded) and after it.

The same rows are committed in three layouts: in id order, newest file first (non-overlapping sorted runs
concatenated), and interleaved files (overlapping runs: the stable sort).
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
from tests.book.capture import capture_deltas, reference_row

SECOND = 1_000_000
E8 = 100_000_000


def _events(t0: int) -> list[tuple[int, bool, list[tuple[str, int, int]]]]:
    """(exchange time, is snapshot, [(side, unscaled price, unscaled size)]) per event, in id order."""
    bids = [("BID", (10_000 - i) * 1_000_000, (i + 1) * E8) for i in range(15)]  # 100.00, 99.99, ...
    asks = [("ASK", (10_001 + i) * 1_000_000, E8) for i in range(15)]  # 100.01, 100.02, ... size 1 each
    far = [("ASK", (20_000 + 7 * i) * 1_000_000, 3 * E8) for i in range(700)]
    return [
        (t0, True, bids + asks),  # the venue snapshot, before the range
        (t0 + 1 * SECOND + 100, False, [("ASK", 10_001 * 1_000_000, 0)]),  # step 1: removed ...
        (t0 + 1 * SECOND + 200, False, [("ASK", 10_001 * 1_000_000, 5 * E8)]),  # ... and re-added
        (t0 + 2 * SECOND + 100, False, [("BID", 10_000 * 1_000_000 + 500_000, E8)]),  # step 2: added ...
        (t0 + 2 * SECOND + 300, False, [("BID", 10_000 * 1_000_000 + 500_000, 0)]),  # ... and removed
        # step 3: nothing
        (t0 + 4 * SECOND + 100, False, far),  # step 4: a sparse grid
        (t0 + 5 * SECOND + 100, False, [(side, price, 0) for side, price, _ in far]),
        (t0 + 5 * SECOND + 200, False, [(side, price, 0) for side, price, _ in asks[1:]]),
        (t0 + 6 * SECOND + 100, False, [("ASK", 10_001 * 1_000_000, 0)]),  # step 6: no asks
        (t0 + 7 * SECOND + 100, False, [("ASK", 9_995 * 1_000_000 + 3, 2 * E8)]),  # step 7: crossed, odd
        (t0 + 7 * SECOND + 200, False, [("ASK", (9_996 + i) * 1_000_000 + 1, E8) for i in range(14)]),
        (t0 + 8 * SECOND + 100, False, [("ASK", 9_995 * 1_000_000 + 1, E8)]),  # odd total, even half
        (t0 + 9 * SECOND + 100, False, [("BID", 9_990 * 1_000_000, 7 * E8)]),  # step 9: superseded
        (t0 + 9 * SECOND + 200, True, bids[:3] + asks[:2]),  # ... by this restart (same step)
        (t0 + 9 * SECOND + 300, False, [("ASK", 10_001 * 1_000_000, 0)]),  # after it
        (t0 + 10 * SECOND + 100, False, [("ASK", 10_005 * 1_000_000, 0)]),  # a level the restart dropped
    ]


def _rows(template: dict[str, Any]) -> list[dict[str, Any]]:
    t0, rows = template["exchange_ts"], []
    for n, (ts, snapshot, levels) in enumerate(_events(template["exchange_ts"])):
        u = 1_000 + 10 * n
        for i, (side, price, size) in enumerate(levels):
            rows.append(
                {
                    **template,
                    "exchange_ts": ts,
                    "receipt_ts": ts + 5_000,
                    "ingest_ts": ts + 5_000,
                    "first_update_id": u if snapshot else u - 9,
                    "last_update_id": u,
                    "side": side,
                    "price": price,  # wire form: unscaled integers
                    "size": size,
                    "is_snapshot": snapshot,
                    "is_event_end": i == len(levels) - 1,
                }
            )
    assert rows[0]["exchange_ts"] == t0
    return rows


def _split(rows: list[dict[str, Any]], layout: str) -> list[list[dict[str, Any]]]:
    if layout == "in order":
        return [rows]
    half = len(rows) // 2
    if layout == "newest file first":
        return [rows[half:], rows[:half]]
    ids = sorted({r["last_update_id"] for r in rows})  # interleaved: each file sorted, their ids overlap
    return [[r for r in rows if ids.index(r["last_update_id"]) % 2 == parity] for parity in (1, 0)]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    row = capture_deltas(1)[0]
    return {**row, "exchange_ts": row["exchange_ts"] - row["exchange_ts"] % SECOND}


@pytest.mark.parametrize("layout", ["in order", "newest file first", "interleaved files"])
def test_book_series_edges_equal_the_step_by_step_replay(
    template: dict[str, Any], tmp_path: Path, layout: str
) -> None:
    rows = _rows(template)
    settings = Settings(data_dir=tmp_path / "k2", query_pool_size=1)
    table = ensure_tables(load_catalog(settings), settings)["book_deltas"]
    for part in _split(rows, layout):
        append(table, records_to_arrow(BOOK_DELTA, part), "book_deltas")
    t0, quantity = template["exchange_ts"], Decimal("11.5")
    start, end = micros_to_datetime(t0 + SECOND // 2), micros_to_datetime(t0 + 12 * SECOND)
    with Client(settings) as client:
        series = client.book_series("BTCUSDT", start, end, "500ms", depth=3, quantity=quantity).to_pylist()
    assert len(series) == 23
    for row in series:
        expected = reference_row(rows, datetime_to_micros(row["ts"]), 3, quantity)
        assert {name: row[name] for name in expected} == expected, row["ts"]
    by_step = {datetime_to_micros(r["ts"]) - t0: r for r in series}
    assert by_step[1_500_000]["ask_sizes"][0] == Decimal(5)  # removed and re-added in one step
    assert by_step[6_500_000]["ask_prices"] == [] and by_step[6_500_000]["mid"] is None  # no asks
    assert by_step[7_500_000]["spread"] < 0 and by_step[7_500_000]["buy_fill_price"] is not None  # crossed
    assert by_step[3_500_000]["last_update_id"] == by_step[2_500_000]["last_update_id"]  # empty step
    assert len(by_step[9_500_000]["bid_prices"]) == 3  # the restart's three bids
