"""The issue's "done when": the real Binance capture through the fake exchange with 20 forced disconnects.

Every one of the capture's 19,904 trades must reach Kafka exactly once (source-side dedup, gaps
backfilled from the fake REST API), with prices and quantities equal to the capture's strings, and the
gap ledger must hold no open or lost gap. The trades are then landed into Iceberg by the landing
consumer and counted there too. The feed uses the real topic names on a broker of its own.
"""

from __future__ import annotations

import time
from collections import Counter
from decimal import Decimal

import orjson

from k2.bus import dlq_topic, topic_name
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.landing import LandingConsumer
from k2.landing.dlq import read_dead_letters
from k2.landing.ledger import current_gaps
from k2.model import QUOTE, TRADE
from k2.sources.binance import BinanceFeed
from k2.sources.coinbase import CoinbaseFeed
from k2.sources.fake_exchange import CaptureMessage, FakeExchange, Faults, load_coinbase
from k2.sources.gaps import GapLedger
from tests.sources.helpers import (
    COINBASE_CAPTURE,
    FIRST_ID,
    LAST_ID,
    consume,
    live_settings,
    run_feed,
    stop_at_trade,
)
from tests.support.landing import land_messages

TRADES_TOPIC = topic_name("crypto", "trades", "binance")
QUOTES_TOPIC = topic_name("crypto", "quotes", "binance")


def test_twenty_forced_disconnects_land_every_trade_exactly_once(
    private_settings: Settings, binance_messages: list[CaptureMessage]
) -> None:
    settings = live_settings(private_settings, source_stall_seconds=1.0)
    ledger = GapLedger.for_settings(settings)
    faults = Faults(
        drop_every=4_000,
        max_drops=20,
        reconnect_advance=40,  # 40 messages "happen" during each reconnect
        skip_every=3_001,
        skip_count=4,  # and the venue loses some on open connections
        malformed_every=4_999,
        stall_at=frozenset({50_000}),
        stall_seconds=3.0,
    )
    started = time.monotonic()
    with FakeExchange("binance", faults=faults, messages=binance_messages) as fake:
        feed = BinanceFeed(["BTCUSDT"], ws_url=fake.ws_url, rest_url=fake.rest_url)
        runner = run_feed(
            feed, settings, topics={}, ledger=ledger, stop_when=stop_at_trade("BTCUSDT", LAST_ID)
        )
    streamed = time.monotonic() - started

    # The faults really happened, and the client recovered from each of them.
    assert fake.stats.drops == 20
    assert fake.stats.stalls == 1
    assert fake.stats.advanced > 0 and len(fake.stats.skipped_trade_ids) > 0
    assert fake.stats.sent_trade_ids < 19_904  # some trades can only have come from REST
    # Each forced drop is seen as a close, unless the client had already left that link because it saw
    # no message for source_stall_seconds (the stall fault does that once; a starved machine can add more).
    closed = runner.stats.reconnects.get("closed", 0) + runner.stats.reconnects.get("error", 0)
    stalls = runner.stats.reconnects.get("stall", 0)
    assert stalls >= 1 and 20 - (stalls - 1) <= closed <= 20, runner.stats.reconnects
    assert fake.stats.rest_requests > 0 and fake.stats.rest_418 == 0
    # Every trade sent once (live or from REST). Trades seen twice are dropped by the source's dedup:
    # usually none, but one fresh-clone run at high load (2026-12-08) saw 621 after the stall reconnect,
    # all dropped (every id below still arrives exactly once). Counted, not required to be zero.
    assert runner.stats.trades + runner.stats.backfilled_trades == 19_904, runner.stats

    # Kafka: every trade id exactly once, values equal the capture's strings.
    trades = consume(settings, TRADES_TOPIC, TRADE, expected=19_904)
    ids = trades["trade_id"].to_pylist()
    assert len(ids) == 19_904
    assert Counter(ids).most_common(1)[0][1] == 1
    assert set(ids) == set(range(FIRST_ID, LAST_ID + 1))
    source = {m.trade_id: m.payload for m in binance_messages if m.trade_id is not None}
    mismatches = [
        i
        for i, p, q in zip(ids, trades["price"].to_pylist(), trades["quantity"].to_pylist(), strict=True)
        if (f"{p:.8f}", f"{q:.8f}") != (source[i]["p"], source[i]["q"])  # type: ignore[index]
    ]
    assert mismatches == []

    # Quotes: each update id once.
    quotes = consume(settings, QUOTES_TOPIC, QUOTE, expected=runner.stats.quotes)
    assert quotes.num_rows == runner.stats.quotes == len(set(quotes["update_id"].to_pylist()))

    # The gap ledger: every gap backfilled, none open or lost; together they cover every REST trade.
    gaps = current_gaps(ledger.table)  # type: ignore[arg-type]
    statuses = Counter(gaps["status"].to_pylist())
    assert statuses["backfilled"] >= 20 and statuses["open"] == 0 and statuses["lost"] == 0, statuses
    assert sum(gaps["missing_count"].to_pylist()) == runner.stats.backfilled_trades
    assert set(gaps["source"].to_pylist()) == {"live", "reconnect"}

    # Malformed frames went to the DLQs byte for byte and did not stop the feed.
    letters = read_dead_letters(settings, dlq_topic(TRADES_TOPIC), idle_seconds=1.5) + read_dead_letters(
        settings, dlq_topic(QUOTES_TOPIC), idle_seconds=1.5
    )
    injected = [f if isinstance(f, bytes) else f.encode() for f in fake.stats.malformed]
    assert len(injected) >= 15 and runner.stats.malformed == len(injected)
    assert sorted(d.value or b"" for d in letters) == sorted(injected)
    assert {d.reason for d in letters} == {"bad_json", "missing_field", "bad_number"}

    # Landing into Iceberg: the same 19,904 trades, and the landing consumer sees no gap either.
    consumer = LandingConsumer(settings, topics=[TRADES_TOPIC])
    landing = land_messages(consumer, 19_904)
    assert (landing.landed, landing.duplicates, landing.dead_lettered, landing.gaps) == (19_904, 0, 0, 0)
    table = consumer.tables["trades"]
    table.refresh()
    landed = table.scan(
        row_filter="exchange == 'binance' and symbol == 'BTCUSDT'",
        selected_fields=("trade_id", "price", "quantity"),
    ).to_arrow()
    landed_ids = landed["trade_id"].to_pylist()
    assert len(landed_ids) == 19_904 == len(set(landed_ids)) and set(landed_ids) == set(
        range(FIRST_ID, LAST_ID + 1)
    )
    assert [
        i
        for i, p, q in zip(
            landed_ids, landed["price"].to_pylist(), landed["quantity"].to_pylist(), strict=True
        )
        if (f"{p:.8f}", f"{q:.8f}") != (source[i]["p"], source[i]["q"])  # type: ignore[index]
    ] == []
    # The gap ledger holds nothing unresolved: no open or lost gap, and none found at landing.
    ledger_now = current_gaps(consumer.tables["gaps"])
    assert set(ledger_now["status"].to_pylist()) == {"backfilled"} and "landing" not in set(
        ledger_now["source"].to_pylist()
    )
    print(
        f"streamed {fake.stats.sent:,} frames ({fake.stats.sent_trade_ids:,} trades) with {fake.stats.drops} drops in {streamed:.1f}s; "
        f"{runner.stats.backfilled_trades:,} trades backfilled in {len(gaps)} gaps; {fake.stats.rest_requests} REST calls"
    )


def test_coinbase_capture_streams_end_to_end(private_settings: Settings) -> None:
    """The Coinbase capture (matches and ticker, 10 products) through the fake exchange, Kafka and landing into Iceberg."""
    settings = live_settings(private_settings, source_stall_seconds=1.0)
    ledger = GapLedger.for_settings(settings)
    messages = load_coinbase(COINBASE_CAPTURE)
    trades = {
        (m.symbol, m.trade_id): m.payload
        for m in messages
        if m.trade_id is not None and m.payload is not None
    }
    tickers = {
        (m.symbol, orjson.loads(m.text)["sequence"]): orjson.loads(m.text)
        for m in messages
        if m.kind == "ticker"
    }
    last_ids: dict[str, int] = {}
    for symbol, ident in trades:
        last_ids[symbol] = max(last_ids.get(symbol, 0), ident)
    faults = Faults(drop_every=30, max_drops=3, reconnect_advance=20, skip_at=frozenset({100}), skip_count=3)
    with FakeExchange("coinbase", faults=faults, messages=messages) as fake:
        feed = CoinbaseFeed(sorted(last_ids), ws_url=fake.ws_url, rest_url=fake.rest_url)
        runner = run_feed(
            feed,
            settings,
            topics={},
            ledger=ledger,
            stop_when=lambda r: all(r.last_trade.get(p) == i for p, i in last_ids.items()),
        )
    assert fake.stats.drops == 3 and runner.stats.backfilled_trades > 0

    topics = [topic_name("crypto", "trades", "coinbase"), topic_name("crypto", "quotes", "coinbase")]
    landing = LandingConsumer(settings, topics=topics).run(idle_exit_seconds=3)
    assert (landing.dead_lettered, landing.gaps) == (0, 0)
    tables = ensure_tables(load_catalog(settings), settings)
    landed = tables["trades"].scan(row_filter="exchange == 'coinbase'").to_arrow().to_pylist()
    assert sorted((r["symbol"], r["trade_id"]) for r in landed) == sorted(
        trades
    )  # every trade once, drops backfilled
    for row in landed:
        raw = trades[(row["symbol"], row["trade_id"])]
        assert (row["price"], row["quantity"]) == (
            Decimal(raw["price"]),
            Decimal(raw["size"]),
        )  # exact: Decimal equality
        assert (
            row["side"] == {"buy": "SELL", "sell": "BUY"}[raw["side"]] and row["instrument"] == row["symbol"]
        )
    quotes = tables["quotes"].scan(row_filter="exchange == 'coinbase'").to_arrow().to_pylist()
    assert len(quotes) == runner.stats.quotes > 50  # tickers are not backfilled: those sent while connected
    for quote in quotes:
        raw = tickers[(quote["symbol"], quote["update_id"])]
        assert quote["bid_price"] == Decimal(raw["best_bid"]) and quote["ask_price"] == Decimal(
            raw["best_ask"]
        )
    assert set(current_gaps(ledger.table)["status"].to_pylist()) == {"backfilled"}  # type: ignore[arg-type]
