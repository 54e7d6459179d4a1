"""Coinbase level2 on the real capture: every product's book starts from its ``snapshot``, is rebuilt from
the ``l2update``s and is never crossed - replayed in memory and read back through Iceberg with ``book()``."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.lake.writer import append
from k2.model import BOOK_DELTA
from k2.model.arrow import records_to_arrow
from k2.model.book import OrderBook
from k2.model.values import to_unscaled
from k2.query.client import Client
from k2.sources.coinbase import iter_capture_lines
from k2.sources.coinbase_depth import CoinbaseBooks
from k2.sources.live import MalformedMessage

CAPTURE = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "data"
    / "coinbase"
    / "cryptofeed-coinbase-2021-04-17.raw.txt"
)


def _rows() -> list[dict[str, object]]:
    books, rows = CoinbaseBooks(), []
    for ns, raw in iter_capture_lines(CAPTURE):
        rows.extend(books.on_message(orjson.loads(raw), ns // 1000))
    return rows


def test_coinbase_books_start_from_snapshots_and_never_cross(tmp_path: Path) -> None:
    rows = _rows()
    products = sorted({str(r["symbol"]) for r in rows})
    assert len(products) == 10
    books: dict[str, OrderBook] = {}
    updates = 0
    for row in rows:
        product = str(row["symbol"])
        if product not in books:
            assert row["is_snapshot"], f"{product} starts without a snapshot"
            books[product] = OrderBook()
        books[product].apply_row(row)
        if row["is_event_end"] and not row["is_snapshot"]:
            updates += 1
            assert not books[product].crossed(), (product, row["last_update_id"])
    assert updates > 1000
    ids = [(r["symbol"], r["last_update_id"]) for r in rows]
    for product in products:  # synthetic update ids increase per product
        mine = [u for p, u in ids if p == product]
        assert mine == sorted(mine)

    settings = Settings(data_dir=tmp_path / "k2")
    table = ensure_tables(load_catalog(settings), settings)["book_deltas"]
    append(
        table,
        records_to_arrow(BOOK_DELTA, [{**r, "ingest_ts": r["receipt_ts"]} for r in rows]),
        "book_deltas",
    )
    with Client(settings) as client:
        for product in products:
            book = client.book(product, "2030-01-01T00:00:00Z", depth=5, exchange="coinbase")
            bids, asks = book.side("BID"), book.side("ASK")
            expected = books[product]
            assert (to_unscaled(bids[0][0]), to_unscaled(bids[0][1])) == expected.best_bid()
            assert (to_unscaled(asks[0][0]), to_unscaled(asks[0][1])) == expected.best_ask()
            assert bids[0][0] < asks[0][0]


def test_bad_coinbase_level2_input_is_refused_with_a_reason() -> None:
    books = CoinbaseBooks()
    with pytest.raises(MalformedMessage, match="no_snapshot"):
        books.on_message(
            {
                "type": "l2update",
                "product_id": "BTC-USD",
                "changes": [["buy", "1", "1"]],
                "time": "2021-04-17T16:43:37Z",
            },
            0,
        )
    books.on_message({"type": "snapshot", "product_id": "BTC-USD", "bids": [], "asks": []}, 0)
    for change, reason in (
        (["hold", "1", "1"], "unknown_side"),
        (["buy", "x", "1"], "bad_number"),
        (["buy", "1", "-1"], "negative_size"),
    ):
        with pytest.raises(MalformedMessage) as info:
            books.on_message(
                {
                    "type": "l2update",
                    "product_id": "BTC-USD",
                    "changes": [change],
                    "time": "2021-04-17T16:43:37Z",
                },
                0,
            )
        assert info.value.reason == reason
