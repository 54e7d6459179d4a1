"""Coinbase live depth (issue 14 item 2): the fake exchange serves the real capture's level2 channel
(and a fresh ``snapshot`` per product on every (re)subscription, as Coinbase does); ``k2 stream
coinbase``'s feed (depth on by default) -> Kafka -> landing -> Iceberg. Every product's book starts from
a snapshot, restarts from one after each reconnect, is never crossed, and ends equal to the capture."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from k2.bus.topics import topic_name
from k2.config import Settings
from k2.landing.consumer import LandingConsumer
from k2.model.book import OrderBook
from k2.query.client import Client
from k2.sources.coinbase import CoinbaseFeed, iter_capture_lines, parse_time
from k2.sources.coinbase_depth import CoinbaseBooks
from k2.sources.fake_exchange import FakeExchange, Faults, load_coinbase
from k2.sources.live import Event
from tests.sources.helpers import live_settings, run_feed

CAPTURE = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "data"
    / "coinbase"
    / "cryptofeed-coinbase-2021-04-17.raw.txt"
)


def _capture_books() -> dict[str, OrderBook]:
    books, coinbase = {}, CoinbaseBooks()
    for ns, raw in iter_capture_lines(CAPTURE):
        for row in coinbase.on_message(orjson.loads(raw), ns // 1000):
            book = books.setdefault(str(row["symbol"]), OrderBook())
            book.apply_row(row)
    return books


class _Watched(CoinbaseFeed):
    """The feed, noting the exchange time of the last level2 update applied per product."""

    def on_depth(self, event: Event) -> Any:
        step = super().on_depth(event)
        for row in step.rows:
            if not row["is_snapshot"]:
                self.seen[row["symbol"]] = row["exchange_ts"]
        return step

    seen: dict[str, int] = {}


def _units(value: Decimal) -> int:
    return int(value.scaleb(8))  # exact (decimal(18,8)); small sizes print as 1.4E-7


def _landed(settings: Settings) -> list[dict[str, object]]:
    with Client(settings) as client:
        read = client._resolve("book_deltas")
        sql = (
            "SELECT symbol, side, price, size, last_update_id, is_snapshot, is_event_end "
            "FROM iceberg_scan(?, snapshot_from_id => ?) WHERE exchange = 'coinbase' "
            "ORDER BY symbol, last_update_id"
        )
        table = client._execute(sql, [read.location, read.snapshot_id], query="test")
    return [{**r, "price": _units(r["price"]), "size": _units(r["size"])} for r in table.to_pylist()]


def test_coinbase_level2_through_the_live_path_restarts_from_snapshots_and_never_crosses(
    private_settings: Settings,
) -> None:
    settings = live_settings(private_settings, source_stall_seconds=1.0)
    messages = load_coinbase(CAPTURE)
    products = sorted({m.symbol for m in messages if m.kind == "snapshot"})
    first_update = min(i for i, m in enumerate(messages) if m.kind == "l2update")
    last = {m.symbol: parse_time(orjson.loads(m.text)["time"])[0] for m in messages if m.kind == "l2update"}
    faults = Faults(drop_every=400, max_drops=2, reconnect_advance=25)
    with FakeExchange("coinbase", faults=faults, messages=messages) as fake:
        feed = _Watched(products, ws_url=fake.ws_url, rest_url=fake.rest_url)
        assert "level2" in feed.channels  # depth is on by default
        runner = run_feed(feed, settings, topics={}, timeout=240, stop_when=lambda r: feed.seen == last)
    assert fake.stats.drops == 2 and first_update < len(messages)
    landing = LandingConsumer(settings, topics=[topic_name("crypto", "depth", "coinbase")]).run(
        idle_exit_seconds=3
    )
    assert landing.dead_lettered == 0
    rows = _landed(settings)
    assert {r["symbol"] for r in rows} == set(products)

    books: dict[str, OrderBook] = {}
    restarts: dict[str, set[int]] = {}
    loaded: int | None = None
    for row in rows:
        product = str(row["symbol"])
        if product not in books:
            assert row["is_snapshot"], f"{product} starts without a snapshot"
            books[product] = OrderBook()
        book = books[product]
        u = int(row["last_update_id"])  # type: ignore[call-overload]
        if row["is_snapshot"] and loaded != u:
            book.clear()
            restarts.setdefault(product, set()).add(u)
        loaded = u if row["is_snapshot"] else None
        book.apply(str(row["side"]), int(row["price"]), int(row["size"]))  # type: ignore[call-overload]
        book.last_update_id = u
        if row["is_event_end"] and not row["is_snapshot"]:
            assert not book.crossed(), (product, u)
    # Each reconnect resubscribes: a fresh snapshot restarts every product whose book had begun.
    assert max(len(ids) for ids in restarts.values()) >= 2
    assert runner.stats.total_reconnects >= 2
    expected = _capture_books()
    with Client(settings) as client:
        for product in products:  # the end state equals the capture's (messages lost in reconnects resynced)
            assert books[product].top("BID", 50) == expected[product].top("BID", 50), product
            assert books[product].top("ASK", 50) == expected[product].top("ASK", 50), product
            read = client.book(product, depth=10, exchange="coinbase", include_recent=False)
            assert [(_units(p), _units(q)) for p, q in read.side("BID")] == expected[product].top("BID", 10)
