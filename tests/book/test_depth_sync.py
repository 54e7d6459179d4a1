"""Binance depth parsing and the documented local-book sync, on the real capture and on crafted breaks."""

from __future__ import annotations

import orjson
import pytest

from k2.model import BOOK_DELTA
from k2.model.arrow import records_to_arrow
from k2.model.validate import validate
from k2.sources.binance import USDM, iter_capture_lines
from k2.sources.binance_depth import DepthSnapshot, DepthSync, parse_depth_snapshot, parse_depth_update
from k2.sources.live import MalformedMessage
from tests.book.truth import book_tickers, check_rows
from tests.sources.helpers import BINANCE_CAPTURES


def test_pure_rebuild_matches_every_shared_book_ticker() -> None:
    """Snapshot + diffs of the whole BTCUSDT capture equal the bookTicker at all 1,072 shared ids."""
    rows, gaps = [], []
    sync = DepthSync("BTCUSDT")
    for ns, raw in iter_capture_lines(BINANCE_CAPTURES):
        obj = orjson.loads(raw)
        stream = obj.get("stream")
        if stream is None:
            out = sync.on_snapshot(parse_depth_snapshot(obj, "BTCUSDT", ns // 1000))
        elif stream.endswith("@depth@100ms"):
            out = sync.on_event(parse_depth_update(obj["data"], ns // 1000))
        else:
            continue
        rows.extend(out.rows)
        gaps.extend(out.gaps)
    verdict = check_rows(rows, book_tickers(BINANCE_CAPTURES))
    assert gaps == []
    assert verdict.moments == 1072
    assert verdict.differences == []
    assert verdict.crossed == []
    assert sum(r["is_snapshot"] for r in rows) == 2000  # the REST snapshot: 1000 levels a side


def _event(first: int, last: int, prev: int | None = None, bid: str = "1") -> dict[str, object]:
    data: dict[str, object] = {
        "e": "depthUpdate",
        "E": 1_723_161_255_000 + last,
        "s": "BTCUSDT",
        "U": first,
        "u": last,
        "b": [[bid, "2"]],
        "a": [["3", "4"]],
    }
    if prev is not None:
        data["pu"] = prev
    return data


def test_spot_break_reports_lost_ids_and_waits_for_a_fresh_snapshot() -> None:
    sync = DepthSync("BTCUSDT")
    sync.on_event(parse_depth_update(_event(8, 12), 0))
    out = sync.on_snapshot(DepthSnapshot("BTCUSDT", 10, [(100, 1)], [(300, 1)], 0))
    assert [r["last_update_id"] for r in out.rows] == [10, 10, 12, 12]
    assert sync.on_event(parse_depth_update(_event(13, 15), 0)).gaps == []
    broken = sync.on_event(parse_depth_update(_event(19, 20), 0))  # ids 16..18 never arrived
    assert [g[:2] for g in broken.gaps] == [(16, 18)]
    assert broken.rows == [] and sync.needs_snapshot
    assert sync.on_event(parse_depth_update(_event(21, 22), 0)).rows == []  # nothing from a broken chain
    out = sync.on_snapshot(DepthSnapshot("BTCUSDT", 20, [(100, 1)], [(300, 1)], 0))
    assert [(r["is_snapshot"], r["last_update_id"]) for r in out.rows][-2:] == [(False, 22), (False, 22)]
    assert out.rows[0]["is_snapshot"] and out.rows[0]["last_update_id"] == 20


def test_stale_snapshot_is_refused() -> None:
    sync = DepthSync("BTCUSDT")
    sync.on_event(parse_depth_update(_event(30, 31), 0))
    out = sync.on_snapshot(DepthSnapshot("BTCUSDT", 10, [], [], 0))  # older than the buffer's start
    assert out.rows == [] and sync.needs_snapshot


def test_usdm_chains_with_pu() -> None:
    sync = DepthSync("BTCUSDT", USDM)
    sync.on_event(parse_depth_update(_event(5, 12, prev=4), 0))
    out = sync.on_snapshot(DepthSnapshot("BTCUSDT", 10, [], [], 0))
    assert out.rows[-1]["last_update_id"] == 12 and out.rows[-1]["exchange"] == "binance-futures"
    assert sync.on_event(parse_depth_update(_event(20, 25, prev=12), 0)).gaps == []  # U jumps; pu chains
    broken = sync.on_event(parse_depth_update(_event(40, 41, prev=30), 0))
    assert [g[:2] for g in broken.gaps] == [(26, 30)]


@pytest.mark.parametrize(
    ("bids", "reason"),
    [([["abc", "1"]], "bad_number"), ([["1", "-2"]], "negative_size"), ([["0", "1"]], "non_positive_price")],
)
def test_bad_levels_are_refused_with_a_reason(bids: list[list[str]], reason: str) -> None:
    with pytest.raises(MalformedMessage) as info:
        parse_depth_update({**_event(1, 2), "b": bids}, 0)
    assert info.value.reason == reason


def test_validation_rules_of_book_deltas() -> None:
    sync = DepthSync("BTCUSDT")
    sync.on_event(parse_depth_update(_event(10, 11), 0))
    rows = sync.on_snapshot(DepthSnapshot("BTCUSDT", 10, [(100, 1)], [], 0)).rows
    rows[0] = {**rows[0], "side": "BUY"}
    rows[1] = {**rows[1], "size": -1}
    problems = validate(
        BOOK_DELTA, records_to_arrow(BOOK_DELTA, rows), now_us=1_800_000_000_000_000, max_future_us=10**9
    )
    assert [(i, reason) for i, reason, _ in problems] == [(0, "unknown_side"), (1, "negative_size")]
    assert "expected BID or ASK, found 'BUY'" in problems[0][2]
