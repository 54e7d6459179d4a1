"""``k2 import binance-capture`` with bad depth input (DLQ with a reason, a depth gap row) and re-imports
(landed exactly once), on a slice of the real capture plus crafted lines."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pyarrow as pa

from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.landing.consumer import LandingConsumer
from k2.landing.dlq import read_dead_letters
from k2.sources.binance_capture import import_binance_capture
from tests.sources.helpers import BINANCE_CAPTURES
from tests.support.landing import land_messages


def _slice(lines: int) -> list[bytes]:
    with gzip.open(BINANCE_CAPTURES[0], "rb") as handle:
        return [next(handle).rstrip(b"\n") for _ in range(lines)]


def _corrupt_depth_line(lines: list[bytes], after: int) -> tuple[int, int, int]:
    """Make the first depth event after line ``after`` carry a non-numeric price; return (index, U, u)."""
    for index in range(after, len(lines)):
        ns, raw = lines[index].split(b" ", 1)
        obj = orjson.loads(raw)
        if obj.get("stream", "").endswith("@depth@100ms") and obj["data"]["b"]:
            obj["data"]["b"][0][0] = "abc"
            lines[index] = ns + b" " + orjson.dumps(obj)
            return index, obj["data"]["U"], obj["data"]["u"]
    raise AssertionError("no depth event to corrupt")


def test_bad_depth_goes_to_the_dlq_with_a_reason_and_breaks_the_chain_visibly(
    private_settings: Settings, tmp_path: Path
) -> None:
    lines = _slice(400)
    _, first, last = _corrupt_depth_line(lines, 100)
    stranger = (
        b'1723161254000000000 {"stream":"ethusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161255208,'
        b'"s":"ETHUSDT","U":1,"u":2,"b":[["2500.1","1.0"]],"a":[]}}'
    )
    path = tmp_path / "capture.txt"
    path.write_bytes(b"\n".join([*lines, stranger]) + b"\n")

    report = import_binance_capture([path], private_settings)
    assert report.dead_lettered["bad_number"] == 1
    assert report.dead_lettered["no_snapshot"] >= 2  # ETHUSDT, and BTCUSDT events after the break
    assert [
        (g["data_type"], g["first_missing_id"], g["last_missing_id"], g["status"]) for g in report.gaps
    ] == [("depth", first, last, "lost")]
    letters = read_dead_letters(private_settings, "market.crypto.depth.binance.dlq")
    reasons = [d.reason for d in letters]
    assert (
        reasons.count("bad_number") == 1
        and reasons.count("no_snapshot") == report.dead_lettered["no_snapshot"]
    )
    bad = next(d for d in letters if d.reason == "bad_number")
    assert b'"abc"' in (bad.value or b"") and "expected" in bad.detail  # the original line, and why
    assert any(d.key == b"ETHUSDT" for d in letters)

    stats = land_messages(LandingConsumer(private_settings), sum(report.rows.values()))
    assert stats.dead_lettered == 0 and stats.per_table["book_deltas"] == report.rows["depth"]
    tables = ensure_tables(load_catalog(private_settings), private_settings)
    gaps = tables["gaps"].scan().to_arrow().to_pylist()
    assert [(g["data_type"], g["first_missing_id"], g["last_missing_id"]) for g in gaps] == [
        ("depth", first, last)
    ]
    landed = tables["book_deltas"].scan(selected_fields=("last_update_id",)).to_arrow()
    assert pa.compute.max(landed["last_update_id"]).as_py() < first  # nothing from the broken chain


def test_reimport_lands_every_book_delta_once(private_settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "capture.txt"
    path.write_bytes(b"\n".join(_slice(600)) + b"\n")
    first = import_binance_capture([path], private_settings)
    land_messages(LandingConsumer(private_settings), sum(first.rows.values()))
    again = import_binance_capture([path], private_settings)
    assert again.rows == first.rows
    stats = land_messages(LandingConsumer(private_settings), sum(again.rows.values()))
    assert stats.per_table["book_deltas"] == 0 and stats.duplicates >= first.rows["depth"]
    table = ensure_tables(load_catalog(private_settings), private_settings)["book_deltas"]
    keys = table.scan(selected_fields=("exchange", "symbol", "last_update_id", "side", "price")).to_arrow()
    assert keys.num_rows == first.rows["depth"]
    assert (
        keys.group_by(["exchange", "symbol", "last_update_id", "side", "price"]).aggregate([]).num_rows
        == keys.num_rows
    )


def test_replay_of_book_deltas_in_exchange_time_order_rebuilds_the_same_book(
    private_settings: Settings, tmp_path: Path
) -> None:
    from datetime import UTC, datetime

    from k2.model import BOOK_DELTA
    from k2.model.book import OrderBook
    from k2.sources.replay import replay
    from tests.sources.helpers import consume

    path = tmp_path / "capture.txt"
    path.write_bytes(b"\n".join(_slice(600)) + b"\n")
    report = import_binance_capture([path], private_settings)
    land_messages(LandingConsumer(private_settings), sum(report.rows.values()))
    stats = replay(
        private_settings,
        ["BTCUSDT"],
        datetime(2024, 8, 8, tzinfo=UTC),
        datetime(2024, 8, 10, tzinfo=UTC),
        "backtest.depth",
        table="book_deltas",
    )
    assert stats.rows == report.rows["depth"]
    replayed = consume(private_settings, "backtest.depth", BOOK_DELTA, expected=stats.rows)
    rows = replayed.to_pylist()
    times = [r["exchange_ts"] for r in rows]
    assert times == sorted(times)
    ends = [i for i, r in enumerate(rows) if r["is_event_end"]]
    assert all(
        rows[i + 1]["last_update_id"] != rows[i]["last_update_id"] for i in ends if i + 1 < len(rows)
    )  # end row last
    stored = ensure_tables(load_catalog(private_settings), private_settings)["book_deltas"].scan().to_arrow()
    books = []
    for table in (replayed, stored.sort_by([("last_update_id", "ascending")])):
        book = OrderBook()
        for r in table.to_pylist():
            book.apply_row({**r, "price": int(r["price"] * 10**8), "size": int(r["size"] * 10**8)})
        books.append((book.bids, book.asks, book.last_update_id))
    assert books[0] == books[1]
