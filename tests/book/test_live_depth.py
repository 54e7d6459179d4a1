"""Live depth: the fake exchange serves the real capture's depth stream and REST snapshots (the book at
its replay cursor); ``BinanceFeed(depth=True)`` -> Kafka -> landing -> Iceberg, checked against the
capture's bookTicker - with a dropped depth event: a depth gap row naming the lost ids, a resync,
and the book exact again afterwards.

The gap assertions are the invariants, not one timing's rows: on a loaded machine the feed can also
lose a connection (a stall reconnect throws away what was in flight, and the venue's cursor has moved
on), so the hole the sync sees may be wider than the fault's event, or there may be another. What
always holds: the fault's ids are inside a recorded gap, each gap names exactly ids that no stored
event applied (from right after an applied event to right before a capture event), each gap is
followed by a resync from a later REST snapshot (unless a reconnect left the run no event to resync on
before it ended), and the book is exact throughout."""

from __future__ import annotations

import functools
from collections.abc import Mapping

import orjson

from k2.bus.topics import topic_name
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
from tests.book.truth import Top, book_tickers, check_rows
from tests.sources.helpers import BINANCE_CAPTURES, live_settings, run_feed

LAST_TRADE = 3_735_703_162
DEPTH_TOPIC = topic_name("crypto", "depth", "binance")


@functools.cache
def _capture() -> tuple[CaptureMessage, ...]:
    """The capture's messages, parsed once for the module's three runs (0.8 s of CPU each time); each run
    gets a list of its own (the venue only reads it)."""
    return tuple(load_binance(BINANCE_CAPTURES))


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


def _next_depth(messages: list[CaptureMessage], after: int) -> int:
    return next(i for i in range(after + 1, len(messages)) if messages[i].kind.startswith("depth"))


def _synced_before(messages: list[CaptureMessage], shows_hole: int) -> tuple[tuple[int, int], ...]:
    """Holds (:class:`Faults`) that keep a loaded run's syncs before the fault and right after the event
    that shows its hole: the replay waits at the 10th depth event for the start's snapshot and at the
    depth event after ``shows_hole`` for the resync's, so neither snapshot is taken far ahead of the
    feed (a snapshot taken at a cursor far ahead leaves too few events after the resync to check)."""
    tenth = [i for i, m in enumerate(messages[:5_000]) if m.kind.startswith("depth")][9]
    return ((tenth, 1), (_next_depth(messages, shows_hole), 2))


def _depth_gaps(runner: LiveRunner) -> list[tuple[int, int]]:
    return sorted(
        (g["first_missing_id"], g["last_missing_id"])
        for g in runner.ledger.history
        if g["data_type"] == "depth"
    )


def _assert_gaps_are_the_ids_never_applied(
    gaps: list[tuple[int, int]],
    rows: list[dict[str, object]],
    messages: list[CaptureMessage],
    lost: dict[str, int],
    reconnected: bool,
) -> list[int]:
    """The invariants of the module docstring; returns the restarts (snapshot ids: the start, one per gap).

    A run that reconnected may end before its last resync: a snapshot taken after a reconnect is the
    venue's book at its cursor, which can be near the end of the capture when the feed lagged far behind
    its socket; then nothing at all is applied after that gap."""
    assert any(first <= lost["U"] and lost["u"] <= last for first, last in gaps), (gaps, lost)
    capture = [orjson.loads(m.text)["data"] for m in messages if m.kind.startswith("depth")]
    starts, ends = {e["U"] for e in capture}, {e["u"] for e in capture}
    applied = {int(r["last_update_id"]) for r in rows if not r["is_snapshot"]}  # type: ignore[call-overload]
    restarts = sorted({int(r["last_update_id"]) for r in rows if r["is_snapshot"]})  # type: ignore[call-overload]
    resyncs: list[float] = [*restarts[1:]]
    if reconnected and len(resyncs) == len(gaps) - 1:
        resyncs.append(float("inf"))
    assert len(resyncs) == len(gaps), (restarts, gaps)  # the start, and one resync per gap
    for (first, last), resync in zip(gaps, resyncs, strict=True):
        assert first - 1 in ends and first - 1 in applied | set(restarts)  # right after an applied event
        assert last + 1 in starts  # right before the event that showed the hole
        assert resync > last  # the book restarts from a snapshot after the hole ...
        assert not any(first <= u < resync for u in applied)  # ... and nothing was applied in between
    return restarts


def _assert_exact_after_the_resync(
    rows: list[dict[str, object]], restarts: list[int], tickers: Mapping[int, Top], reconnected: bool
) -> None:
    """The book is exact again after the (first) resync, over more than 50 moments when no reconnect moved
    the venue's cursor (the holds of :func:`_synced_before` keep the resync close to the hole)."""
    if len(restarts) < 2:
        assert reconnected  # see _assert_gaps_are_the_ids_never_applied
        return
    after = check_rows([r for r in rows if int(r["last_update_id"]) >= restarts[1]], tickers)  # type: ignore[call-overload]
    assert after.differences == []
    assert after.moments > 50 or reconnected, after.moments


def _landed_rows(settings: Settings) -> list[dict[str, object]]:
    # Only the depth topic: the checks read book_deltas (the truth is the capture's bookTicker, not the
    # landed quotes); landing the feed's 73,000 quotes and 20,000 trades too cost CPU and proved nothing here.
    LandingConsumer(settings, topics=[DEPTH_TOPIC]).run(idle_exit_seconds=5)
    with Client(settings) as client:
        read = client._resolve("book_deltas")
        # A NULL snapshot id makes DuckDB's iceberg_scan fail with an INTERNAL error: say what happened.
        assert read.snapshot_id is not None, (
            "expected landed book deltas, found book_deltas without a snapshot"
        )
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
    messages = list(_capture())
    dropped = next(i for i, m in enumerate(messages) if i > 20_000 and m.kind.startswith("depth"))
    lost = orjson.loads(messages[dropped].text)["data"]
    holds = _synced_before(messages, _next_depth(messages, dropped))
    runner = _run(
        private_settings, messages, Faults(skip_at=frozenset({dropped}), hold_for_depth_snapshots=holds)
    )

    gaps = _depth_gaps(runner)
    if not runner.stats.reconnects:  # the quiet-machine run: exactly the dropped event's ids
        assert gaps == [(lost["U"], lost["u"])]
    rows = _landed_rows(private_settings)
    restarts = _assert_gaps_are_the_ids_never_applied(
        gaps, rows, messages, lost, bool(runner.stats.reconnects)
    )
    tickers = book_tickers(BINANCE_CAPTURES)
    verdict = check_rows(rows, tickers)
    assert verdict.moments > 300  # how many depends on where the run stops (at the capture's last trade)
    assert (verdict.differences, verdict.crossed) == ([], [])
    _assert_exact_after_the_resync(rows, restarts, tickers, bool(runner.stats.reconnects))


def test_live_depth_with_a_reordered_pair_reports_the_late_event_as_lost_and_resyncs(
    private_settings: Settings,
) -> None:
    messages = list(_capture())
    held = next(
        i
        for i, m in enumerate(messages)
        if i > 20_000 and m.kind.startswith("depth") and messages[i + 1].kind.startswith("depth")
    )
    late = orjson.loads(messages[held].text)["data"]
    faults = Faults(reorder_at=frozenset({held}), hold_for_depth_snapshots=_synced_before(messages, held + 1))
    runner = _run(private_settings, messages, faults)

    # The event after it arrives first: the chain breaks there; the late one is not applied on top.
    gaps = _depth_gaps(runner)
    if not runner.stats.reconnects:
        assert gaps == [(late["U"], late["u"])]
    rows = _landed_rows(private_settings)
    restarts = _assert_gaps_are_the_ids_never_applied(
        gaps, rows, messages, late, bool(runner.stats.reconnects)
    )
    tickers = book_tickers(BINANCE_CAPTURES)
    verdict = check_rows(rows, tickers)
    assert (verdict.differences, verdict.crossed) == ([], [])
    _assert_exact_after_the_resync(rows, restarts, tickers, bool(runner.stats.reconnects))


def test_live_depth_refetches_a_stale_rest_snapshot_and_builds_nothing_on_it(
    private_settings: Settings,
) -> None:
    messages = list(_capture())
    dropped = next(i for i, m in enumerate(messages) if i > 20_000 and m.kind.startswith("depth"))
    lost = orjson.loads(messages[dropped].text)["data"]
    # The resync's first REST answer (the second answer of the run) is stale: older than the events buffered.
    faults = Faults(
        skip_at=frozenset({dropped}),
        stale_depth_snapshots=frozenset({1}),
        hold_for_depth_snapshots=_synced_before(messages, _next_depth(messages, dropped)),
    )
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
    gaps = _depth_gaps(runner)
    if not runner.stats.reconnects:
        assert gaps == [(lost["U"], lost["u"])]
    rows = _landed_rows(private_settings)
    restarts = _assert_gaps_are_the_ids_never_applied(
        gaps, rows, messages, lost, bool(runner.stats.reconnects)
    )
    assert snapshots["BTCUSDT"]["lastUpdateId"] not in restarts[1:]  # nothing was built on the stale one
    tickers = book_tickers(BINANCE_CAPTURES)
    verdict = check_rows(rows, tickers)
    assert (verdict.differences, verdict.crossed) == ([], [])
    _assert_exact_after_the_resync(rows, restarts, tickers, bool(runner.stats.reconnects))
