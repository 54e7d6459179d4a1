"""Live depth: the fake exchange serves the real capture's depth stream and REST snapshots (the book at
its replay cursor); ``BinanceFeed(depth=True)`` -> Kafka -> landing -> Iceberg, checked against the
capture's bookTicker - with a dropped depth event: one depth gap row naming the lost ids, a resync,
and the book exact again afterwards."""

from __future__ import annotations

import orjson

from k2.config import Settings
from k2.landing.consumer import LandingConsumer
from k2.model.values import to_unscaled
from k2.query.client import Client
from k2.sources.binance import BinanceFeed
from k2.sources.fake_exchange import (
    CaptureMessage,
    FakeExchange,
    Faults,
    load_binance,
    load_binance_depth_snapshots,
)
from k2.sources.live import LiveRunner
from tests.book.truth import book_tickers, check_rows
from tests.sources.helpers import BINANCE_CAPTURES, live_settings, run_feed

LAST_TRADE = 3_735_703_162


def _run(settings: Settings, messages: list[CaptureMessage], faults: Faults) -> LiveRunner:
    snapshots = load_binance_depth_snapshots(BINANCE_CAPTURES)
    with FakeExchange("binance", messages=messages, faults=faults, depth_snapshots=snapshots) as fake:
        feed = BinanceFeed(["BTCUSDT"], ws_url=fake.ws_url, rest_url=fake.rest_url, depth=True)
        return run_feed(
            feed,
            live_settings(settings),
            topics={},
            timeout=300,
            stop_when=lambda runner: runner.last_trade.get("BTCUSDT", -1) >= LAST_TRADE,
        )


def _landed_rows(settings: Settings) -> list[dict[str, object]]:
    LandingConsumer(settings).run(idle_exit_seconds=5)
    with Client(settings) as client:
        read = client._resolve("book_deltas")
        sql = (
            "SELECT side, price, size, last_update_id, exchange_ts, is_snapshot, is_event_end "
            "FROM iceberg_scan(?, snapshot_from_id => ?) ORDER BY last_update_id, is_snapshot DESC"
        )
        table = client._execute(sql, [read.location, read.snapshot_id], query="test")
    return [
        {**r, "price": to_unscaled(r["price"]), "size": to_unscaled(r["size"])} for r in table.to_pylist()
    ]


def test_live_depth_with_a_dropped_event_reports_a_gap_resyncs_and_stays_exact(
    private_settings: Settings,
) -> None:
    messages = load_binance(BINANCE_CAPTURES)
    dropped = next(i for i, m in enumerate(messages) if i > 20_000 and m.kind.startswith("depth"))
    lost = orjson.loads(messages[dropped].text)["data"]
    runner = _run(private_settings, messages, Faults(skip_at=frozenset({dropped})))

    gaps = [row for row in runner.ledger.history if row["data_type"] == "depth"]
    assert [(g["first_missing_id"], g["last_missing_id"]) for g in gaps] == [(lost["U"], lost["u"])]
    rows = _landed_rows(private_settings)
    restarts = sorted({int(r["last_update_id"]) for r in rows if r["is_snapshot"]})  # type: ignore[call-overload]
    assert len(restarts) == 2 and restarts[1] >= lost["u"]  # the start, and the resync after the gap
    assert not any(lost["u"] <= int(r["last_update_id"]) < restarts[1] for r in rows)  # type: ignore[call-overload]
    tickers = book_tickers(BINANCE_CAPTURES)
    verdict = check_rows(rows, tickers)
    assert verdict.moments > 300  # how many depends on where the run stops (at the capture's last trade)
    assert (verdict.differences, verdict.crossed) == ([], [])
    after = check_rows([r for r in rows if int(r["last_update_id"]) >= restarts[1]], tickers)  # type: ignore[call-overload]
    assert after.moments > 50 and after.differences == []  # exact again after the resync


def test_live_depth_with_a_reordered_pair_reports_the_late_event_as_lost_and_resyncs(
    private_settings: Settings,
) -> None:
    messages = load_binance(BINANCE_CAPTURES)
    held = next(
        i
        for i, m in enumerate(messages)
        if i > 20_000 and m.kind.startswith("depth") and messages[i + 1].kind.startswith("depth")
    )
    late = orjson.loads(messages[held].text)["data"]
    faults = Faults(reorder_at=frozenset({held}))
    runner = _run(private_settings, messages, faults)

    # The event after it arrives first: the chain breaks there; the late one is not applied on top.
    gaps = [row for row in runner.ledger.history if row["data_type"] == "depth"]
    assert [(g["first_missing_id"], g["last_missing_id"]) for g in gaps] == [(late["U"], late["u"])]
    rows = _landed_rows(private_settings)
    restarts = sorted({int(r["last_update_id"]) for r in rows if r["is_snapshot"]})  # type: ignore[call-overload]
    assert len(restarts) == 2 and restarts[1] >= late["u"]
    tickers = book_tickers(BINANCE_CAPTURES)
    verdict = check_rows(rows, tickers)
    assert (verdict.differences, verdict.crossed) == ([], [])
    after = check_rows([r for r in rows if int(r["last_update_id"]) >= restarts[1]], tickers)  # type: ignore[call-overload]
    assert after.moments > 50 and after.differences == []


def test_live_depth_refetches_a_stale_rest_snapshot_and_builds_nothing_on_it(
    private_settings: Settings,
) -> None:
    messages = load_binance(BINANCE_CAPTURES)
    dropped = next(i for i, m in enumerate(messages) if i > 20_000 and m.kind.startswith("depth"))
    lost = orjson.loads(messages[dropped].text)["data"]
    # The resync's first REST answer (the second answer of the run) is stale: older than the events buffered.
    faults = Faults(skip_at=frozenset({dropped}), stale_depth_snapshots=frozenset({1}))
    snapshots = load_binance_depth_snapshots(BINANCE_CAPTURES)
    with FakeExchange("binance", messages=messages, faults=faults, depth_snapshots=snapshots) as fake:
        feed = BinanceFeed(["BTCUSDT"], ws_url=fake.ws_url, rest_url=fake.rest_url, depth=True)
        runner = run_feed(
            feed,
            live_settings(private_settings),
            topics={},
            timeout=300,
            stop_when=lambda r: r.last_trade.get("BTCUSDT", -1) >= LAST_TRADE,
        )
    assert fake.stats.stale_depth_snapshots == 1
    gaps = [row for row in runner.ledger.history if row["data_type"] == "depth"]
    assert [(g["first_missing_id"], g["last_missing_id"]) for g in gaps] == [(lost["U"], lost["u"])]
    rows = _landed_rows(private_settings)
    restarts = sorted({int(r["last_update_id"]) for r in rows if r["is_snapshot"]})  # type: ignore[call-overload]
    stale = snapshots["BTCUSDT"]["lastUpdateId"]
    assert len(restarts) == 2 and restarts[1] > lost["u"] and stale not in restarts[1:]
    tickers = book_tickers(BINANCE_CAPTURES)
    verdict = check_rows(rows, tickers)
    assert (verdict.differences, verdict.crossed) == ([], [])
    after = check_rows([r for r in rows if int(r["last_update_id"]) >= restarts[1]], tickers)  # type: ignore[call-overload]
    assert after.moments > 50 and after.differences == []
