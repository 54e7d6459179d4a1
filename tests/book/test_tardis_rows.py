"""The two Tardis depth layouts land the same rows for the same book: one row builder
(:func:`k2.sources.tardis_depth.book_row`) serves ``incremental_book_L2`` and ``book_snapshot_N``."""

from __future__ import annotations

from typing import Any

from k2.sources.tardis_book import TardisL2Reader
from k2.sources.tardis_book_snapshot import SnapshotReader
from k2.sources.tardis_depth import book_row, depth_source

T0, LOCAL = 1723161255408000, 1723161254137307
BOOK = [("ASK", "61837.64", "1.6052"), ("BID", "61837.63", "3.78826"), ("ASK", "61837.65", "0.00843")]


def _l2_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    reader = TardisL2Reader(rows.append, lambda *reject: None)
    for side, price, amount in BOOK:
        cells = ["binance", "BTCUSDT", str(T0), str(LOCAL), "true", side.lower(), price, amount]
        reader.feed(
            dict(
                zip(
                    [
                        "exchange",
                        "symbol",
                        "timestamp",
                        "local_timestamp",
                        "is_snapshot",
                        "side",
                        "price",
                        "amount",
                    ],
                    cells,
                    strict=True,
                )
            ),
            b"",
        )
    reader.finish()
    return rows


def _snapshot_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    reader = SnapshotReader(rows.append, lambda *reject: None, 2)
    cells = [
        "binance",
        "BTCUSDT",
        str(T0),
        str(LOCAL),
        "61837.64",
        "1.6052",
        "61837.63",
        "3.78826",
        "61837.65",
        "0.00843",
        "",
        "",
    ]
    reader.feed(cells, b"")
    return rows


def _by_level(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["side"], r["price"]): {k: v for k, v in r.items() if k != "is_event_end"} for r in rows}


def test_both_layouts_build_the_same_row_for_the_same_level() -> None:
    l2, snapshot = _l2_rows(), _snapshot_rows()
    assert _by_level(l2) == _by_level(snapshot) and len(l2) == len(snapshot) == 3
    expected = book_row(
        "binance",
        "BTCUSDT",
        exchange_ts=T0,
        receipt_ts=LOCAL,
        side="BID",
        price=6183763000000,
        size=378826000,
        is_snapshot=True,
        update_id=T0 * 1000,
        is_event_end=False,
    )
    assert _by_level(l2)[("BID", 6183763000000)] == {k: v for k, v in expected.items() if k != "is_event_end"}
    assert [r["is_event_end"] for r in l2] == [r["is_event_end"] for r in snapshot] == [False, False, True]
    assert depth_source("") == depth_source("tardis") == "market.crypto.depth.tardis"
    assert depth_source("binance-futures").endswith(".depth.binance-futures")
