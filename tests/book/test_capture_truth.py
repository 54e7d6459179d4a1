"""Issue 14's truth test on real data: the whole BTCUSDT capture through ``k2 import binance-capture`` ->
Kafka -> the landing consumer -> Iceberg -> ``Client.book()``, against the capture's own bookTicker."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow as pa

from k2.config import Settings
from k2.lake.book_snapshots import write_book_snapshots
from k2.landing.consumer import LandingConsumer
from k2.model.values import to_unscaled
from k2.query.client import Client
from k2.sources.binance_capture import import_binance_capture
from tests.book.truth import book_tickers, check_rows
from tests.sources.helpers import BINANCE_CAPTURES
from tests.support.landing import land_messages

EXPECTED_MOMENTS = 1072


def _land(settings: Settings, messages: int) -> None:
    stats = land_messages(LandingConsumer(settings), messages)
    assert stats.dead_lettered == 0


def test_capture_import_lands_a_book_equal_to_every_book_ticker(private_settings: Settings) -> None:
    settings = private_settings
    report = import_binance_capture(BINANCE_CAPTURES, settings)
    assert report.rows["trades"] == 19_904 and report.snapshots == 1
    assert report.gaps == [] and not report.dead_lettered
    _land(settings, sum(report.rows.values()))

    with Client(settings) as client:
        read = client._resolve("book_deltas")
        sql = (
            "SELECT * FROM iceberg_scan(?, snapshot_from_id => ?) WHERE symbol = ? "
            "ORDER BY last_update_id, side, price"
        )
        table = client._execute(sql, [read.location, read.snapshot_id, "BTCUSDT"], query="test")
        assert table.num_rows == report.rows["depth"]  # every row landed exactly once
        rows = [
            {**r, "price": to_unscaled(r["price"]), "size": to_unscaled(r["size"])}
            for r in table.select(
                ["side", "price", "size", "last_update_id", "exchange_ts", "is_snapshot", "is_event_end"]
            ).to_pylist()
        ]
        tickers = book_tickers(BINANCE_CAPTURES)
        verdict = check_rows(rows, tickers)
        # the pure rebuild over what Iceberg holds
        assert (verdict.moments, verdict.differences, verdict.crossed) == (EXPECTED_MOMENTS, [], [])

        # K2's own book() query at the shared update ids: best bid/size and ask/size equal the bookTicker.
        ends = pa.compute.unique(table.filter(table["is_event_end"])["last_update_id"]).to_pylist()
        moments = [u for u in ends if u in tickers]
        assert len(moments) == EXPECTED_MOMENTS
        # The delta-only read replays every row since the REST snapshot, so each call grows with the
        # capture: every 8th moment on that path, then all of them on the landing service's path
        # (stored book_snapshots plus the deltas after them).
        assert set(_check_books(client, moments[::8], tickers)) == {"deltas"}
        assert write_book_snapshots(settings)
        paths = _check_books(client, moments, tickers)
        # book() falls back to the deltas wherever it cannot prove the stored rows exact (43 of 1,072
        # moments when this was written); both paths must give the bookTicker's values.
        assert sum(paths.values()) == len(moments) and paths["book_snapshots"] >= 0.9 * len(moments), paths


def _check_books(client: Client, moments: list[int], tickers: dict[int, Any]) -> Counter[str]:
    """Check the book at each update id against the bookTicker; returns how many were read each way."""
    paths: Counter[str] = Counter()
    for u in moments:
        # Everything is landed: read Iceberg only (a future `at` would add a Kafka read per call).
        book = client.book("BTCUSDT", at="2030-01-01T00:00:00Z", depth=1, update_id=u, include_recent=False)
        (bid, bid_size), (ask, ask_size) = book.side("BID")[0], book.side("ASK")[0]
        expected = tickers[u]
        assert book.last_update_id == u
        paths[book.read_from] += 1
        assert (to_unscaled(bid), to_unscaled(bid_size)) == expected[0], u
        assert (to_unscaled(ask), to_unscaled(ask_size)) == expected[1], u
        assert bid < ask
    return paths
