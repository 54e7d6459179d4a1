"""The live runner against the fake exchange and the real broker/registry: resilience, dedup, gaps, DLQ."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import orjson
import pytest

from k2.bus import dlq_topic
from k2.config import Settings
from k2.landing.dlq import read_dead_letters
from k2.landing.ledger import current_gaps
from k2.model import QUOTE, TRADE, DataType
from k2.pacing import Backoff, TokenBucket
from k2.sources.binance import BinanceFeed
from k2.sources.coinbase import CoinbaseFeed
from k2.sources.fake_exchange import (
    CaptureMessage,
    FakeExchange,
    Faults,
    load_binance_depth_snapshots,
    load_coinbase,
)
from k2.sources.gaps import GapLedger
from k2.sources.live import FatalSourceError
from tests.sources.helpers import (
    BINANCE_CAPTURES,
    COINBASE_CAPTURE,
    FIRST_ID,
    consume,
    feed_topics,
    live_settings,
    run_feed,
    stop_at_trade,
)


def _served_trades(messages: list[CaptureMessage], count: int) -> list[int]:
    return [m.trade_id for m in messages[:count] if m.channel == "btcusdt@trade" and m.trade_id is not None]


def _sample(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _trade_ids(settings: Settings, topic: str, expected: int) -> list[int]:
    return list(consume(settings, topic, TRADE, expected=expected)["trade_id"].to_pylist())


def test_backoff_doubles_with_jitter_and_resets() -> None:
    backoff = Backoff(0.5, 4.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(6)]
    caps = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert all(cap / 2 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert len({round(d, 6) for d in delays[3:]}) == 3  # jittered, not a fixed 4.0
    backoff.reset()
    assert 0.25 <= backoff.next_delay() <= 0.5
    with pytest.raises(ValueError, match="expected 0 <= initial <= maximum"):
        Backoff(2.0, 1.0)


def test_token_bucket_paces_after_the_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=4, burst=2, clock=lambda: now[0])
    assert [bucket.try_acquire(), bucket.try_acquire()] == [0.0, 0.0]
    assert bucket.try_acquire() == pytest.approx(0.25)
    now[0] += 0.25
    assert bucket.try_acquire() == 0.0


def test_stall_is_detected_and_the_feed_reconnects(
    settings: Settings, unique: str, binance_messages: list[CaptureMessage]
) -> None:
    settings = live_settings(settings, source_stall_seconds=0.5)
    topics = feed_topics("binance", unique)
    expected = _served_trades(binance_messages, 8_000)
    faults = Faults(max_messages=8_000, stall_at=frozenset({2_000}), stall_seconds=30.0)
    stalls_before = _sample("k2_source_reconnects_total", source="binance", reason="stall")
    trades_before = _sample("k2_source_messages_total", source="binance", kind="trade")
    started = time.monotonic()
    with FakeExchange(faults=faults, messages=binance_messages) as fake:
        feed = BinanceFeed(["BTCUSDT"], ws_url=fake.ws_url, rest_url=fake.rest_url)
        runner = run_feed(feed, settings, topics=topics, stop_when=stop_at_trade("BTCUSDT", expected[-1]))
    assert (
        time.monotonic() - started < 25.0
    )  # it did not wait the 30 s stall out (loose bound: shared machine)
    assert fake.stats.stalls == 1 and runner.stats.reconnects == {"stall": 1}
    # The declared Prometheus metrics moved with it.
    assert _sample("k2_source_reconnects_total", source="binance", reason="stall") == stalls_before + 1
    assert _sample("k2_source_messages_total", source="binance", kind="trade") == trades_before + len(
        expected
    )
    assert _sample("k2_source_lag_seconds", source="binance") is not None
    assert sorted(_trade_ids(settings, topics[DataType.TRADES], len(expected))) == expected


def test_a_depth_hole_across_a_reconnect_is_recorded_as_a_reconnect_gap(
    settings: Settings, unique: str, binance_messages: list[CaptureMessage]
) -> None:
    """The venue moves on while the feed is away: the depth sync sees the hole at the first event of the
    new connection, and its gap row says where it was seen (``reconnect``, as trade gaps do), exactly
    the ids no event applied."""
    depth = [i for i, m in enumerate(binance_messages[:8_000]) if m.kind.startswith("depth")]
    drop = depth[len(depth) // 2]  # the connection closes after this depth event ...
    faults = Faults(
        max_messages=8_000,
        drop_at=frozenset({drop}),
        drop_mode="close",
        reconnect_advance=300,
        hold_for_depth_snapshots=((depth[10], 1),),  # ... of a book synced before it, however slow the feed
    )
    served = _served_trades(binance_messages, 8_000)
    snapshots = load_binance_depth_snapshots(BINANCE_CAPTURES)
    with FakeExchange(faults=faults, messages=binance_messages, depth_snapshots=snapshots) as fake:
        feed = BinanceFeed(["BTCUSDT"], ws_url=fake.ws_url, rest_url=fake.rest_url, depth=True)
        runner = run_feed(
            feed,
            live_settings(settings),
            topics=feed_topics("binance", unique),
            stop_when=stop_at_trade("BTCUSDT", served[-1]),
        )
    assert runner.stats.reconnects == {"closed": 1}
    applied = orjson.loads(binance_messages[drop].text)["data"]["u"]  # ... the last event the feed applied
    moved = [m for m in binance_messages[drop + 1 : drop + 1 + 300] if m.kind.startswith("depth")]
    assert moved  # ... and the events the venue sent while the feed was away are lost to it
    first_after = next(m for m in binance_messages[drop + 301 :] if m.kind.startswith("depth"))
    gaps = [g for g in runner.ledger.history if g["data_type"] == "depth"]
    expected = (applied + 1, orjson.loads(first_after.text)["data"]["U"] - 1, "reconnect")
    assert [(g["first_missing_id"], g["last_missing_id"], g["source"]) for g in gaps] == [expected]


def test_malformed_frames_are_dead_lettered_and_the_feed_goes_on(
    settings: Settings, unique: str, binance_messages: list[CaptureMessage]
) -> None:
    settings = live_settings(settings)
    topics = feed_topics("binance", unique)
    expected = _served_trades(binance_messages, 4_000)
    with FakeExchange(
        faults=Faults(max_messages=4_000, malformed_every=250), messages=binance_messages
    ) as fake:
        feed = BinanceFeed(["BTCUSDT"], ws_url=fake.ws_url, rest_url=fake.rest_url)
        runner = run_feed(feed, settings, topics=topics, stop_when=stop_at_trade("BTCUSDT", expected[-1]))
    injected = [f if isinstance(f, bytes) else f.encode() for f in fake.stats.malformed]
    assert (
        len(injected) >= 12 and runner.stats.malformed == len(injected) and runner.stats.total_reconnects == 0
    )
    letters = read_dead_letters(settings, dlq_topic(topics[DataType.TRADES]), idle_seconds=1.0)
    letters += read_dead_letters(settings, dlq_topic(topics[DataType.QUOTES]), idle_seconds=1.0)
    assert sorted(d.value or b"" for d in letters) == sorted(injected)
    for letter in letters:
        assert letter.source_topic == letter.dlq_topic.removesuffix(".dlq") and letter.source_offset == -1
        assert letter.reason in {"bad_json", "missing_field", "bad_number"} and "expected" in letter.detail
        if letter.reason != "bad_json" or letter.value.startswith(b'{"stream"'):  # type: ignore[union-attr]
            assert letter.key == b"BTCUSDT"
    assert sorted(_trade_ids(settings, topics[DataType.TRADES], len(expected))) == expected


def test_gaps_the_rest_api_cannot_fill_are_recorded_lost(
    settings: Settings, unique: str, binance_messages: list[CaptureMessage]
) -> None:
    settings = live_settings(settings)
    topics = feed_topics("binance", unique)
    ledger = GapLedger.for_settings(settings)
    expected = _served_trades(binance_messages, 12_000)
    # Trades only: eligible positions are trade numbers. Skip trades 500..509 and 1500..1503;
    # the REST API cannot supply 503..505.
    unavailable = (FIRST_ID + 503, FIRST_ID + 505)
    faults = Faults(
        max_messages=12_000, skip_at=frozenset({500, 1_500}), skip_count=10, rest_missing=(unavailable,)
    )
    with FakeExchange(faults=faults, messages=binance_messages) as fake:
        feed = BinanceFeed(["BTCUSDT"], ws_url=fake.ws_url, rest_url=fake.rest_url, quotes=False)
        runner = run_feed(
            feed, settings, topics=topics, ledger=ledger, stop_when=stop_at_trade("BTCUSDT", expected[-1])
        )
    assert runner.stats.gaps == {"lost": 1, "backfilled": 1}
    gaps = current_gaps(ledger.table).to_pylist()  # type: ignore[arg-type]
    by_key = {g["gap_key"]: g for g in gaps}
    lost = by_key[f"binance/BTCUSDT/trades/{FIRST_ID + 500}-{FIRST_ID + 509}"]
    assert (lost["status"], lost["source"], lost["missing_count"]) == ("lost", "live", 10)
    assert f"{unavailable[0]}-{unavailable[1]} (3)" in lost["detail"] and "7 of 10" in lost["detail"]
    filled = by_key[f"binance/BTCUSDT/trades/{FIRST_ID + 1500}-{FIRST_ID + 1509}"]
    assert filled["status"] == "backfilled" and filled["start_ts"] < filled["end_ts"]
    ids = _trade_ids(settings, topics[DataType.TRADES], len(expected) - 3)
    assert sorted(ids) == [i for i in expected if not unavailable[0] <= i <= unavailable[1]]
    assert ids == sorted(
        ids
    )  # backfilled trades were produced in order, before the trade that revealed the gap


def test_rest_rate_limits_are_honoured(
    settings: Settings, unique: str, binance_messages: list[CaptureMessage]
) -> None:
    settings = live_settings(settings)
    topics = feed_topics("binance", unique)
    expected = _served_trades(binance_messages, 20_000)
    # 25 weight per call and 50 per one-second window: the third call in a window gets a 429.
    faults = Faults(
        max_messages=20_000,
        skip_every=500,
        skip_count=2,
        rest_weight_limit=50,
        rest_weight_window_seconds=1.0,
    )
    with FakeExchange(faults=faults, messages=binance_messages) as fake:
        feed = BinanceFeed(["BTCUSDT"], ws_url=fake.ws_url, rest_url=fake.rest_url, quotes=False)
        runner = run_feed(feed, settings, topics=topics, stop_when=stop_at_trade("BTCUSDT", expected[-1]))
    assert runner.stats.gaps.get("backfilled", 0) >= 6 and set(runner.stats.gaps) == {"backfilled"}
    assert (
        fake.stats.rest_429 >= 1 and fake.stats.rest_418 == 0
    )  # throttled, and never called during Retry-After
    assert sorted(_trade_ids(settings, topics[DataType.TRADES], len(expected))) == expected


def test_rest_client_that_knows_the_limit_never_gets_a_429(binance_messages: list[CaptureMessage]) -> None:
    import asyncio

    from k2.sources.live import RestClient

    with FakeExchange(
        faults=Faults(max_messages=100, rest_weight_limit=100, rest_weight_window_seconds=1.0),
        messages=binance_messages,
    ) as fake:

        async def calls() -> float:
            rest = RestClient(fake.rest_url, weight_limit=100)
            started = time.monotonic()
            try:
                for _ in range(8):
                    await rest.get_json("/api/v3/historicalTrades", {"symbol": "BTCUSDT"}, weight=25)
            finally:
                await rest.aclose()
            return time.monotonic() - started

        elapsed = asyncio.run(calls())
    assert fake.stats.rest_429 == 0 and fake.stats.rest_requests == 8
    assert elapsed >= 1.0  # 8 x 25 weight needs at least three 1-second windows at 90 % of 100


def test_configured_api_key_is_sent_with_backfill_requests(binance_messages: list[CaptureMessage]) -> None:
    import asyncio

    from k2.sources.binance import feeds_for_symbols

    with FakeExchange(messages=binance_messages[:200]) as fake:
        for key in (None, "k2-test-key"):
            feed = feeds_for_symbols(
                Settings(binance_api_key=key), ["BTCUSDT"], ws_url=fake.ws_url, rest_url=fake.rest_url
            )[0]

            async def call(feed: BinanceFeed = feed) -> None:
                rest = feed.rest_client()
                try:
                    await feed.fetch_trades(rest, "BTCUSDT", FIRST_ID, FIRST_ID + 5)
                finally:
                    await rest.aclose()

            asyncio.run(call())
    assert fake.stats.rest_requests == 2 and fake.stats.rest_api_keys == ["k2-test-key"]


def test_an_open_gap_is_retried_until_backfilled(
    settings: Settings, unique: str, binance_messages: list[CaptureMessage]
) -> None:
    settings = live_settings(settings)
    topics = feed_topics("binance", unique)
    ledger = GapLedger.for_settings(settings)
    expected = _served_trades(binance_messages, 8_000)
    # The REST API refuses everything at first (weight limit 0) and recovers once a 429 was seen.
    faults = Faults(
        max_messages=8_000,
        skip_at=frozenset({300}),
        skip_count=5,
        rest_weight_limit=0,
        rest_weight_window_seconds=1.0,
    )
    with FakeExchange(faults=faults, messages=binance_messages) as fake:

        def recover() -> None:
            deadline = time.monotonic() + 30
            while fake.stats.rest_429 == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            fake.faults.rest_weight_limit = 6_000

        helper = threading.Thread(target=recover, daemon=True)
        helper.start()
        feed = BinanceFeed(
            ["BTCUSDT"], ws_url=fake.ws_url, rest_url=fake.rest_url, quotes=False, rest_max_wait_seconds=0.1
        )
        runner = run_feed(
            feed,
            settings,
            topics=topics,
            ledger=ledger,
            stop_when=lambda r: (
                r.last_trade.get("BTCUSDT") == expected[-1]
                and r.pending_gaps == 0
                and r.stats.gaps.get("backfilled", 0) == 1
            ),
        )
        helper.join()
    assert runner.stats.gaps == {"open": 1, "backfilled": 1}
    key = f"binance/BTCUSDT/trades/{FIRST_ID + 300}-{FIRST_ID + 304}"
    history = [r["status"] for r in ledger.history if r["gap_key"] == key]
    assert history == ["open", "backfilled"]
    assert current_gaps(ledger.table).to_pylist()[0]["status"] == "backfilled"  # type: ignore[arg-type]
    ids = _trade_ids(settings, topics[DataType.TRADES], len(expected))
    assert sorted(ids) == expected and len(set(ids)) == len(ids)
    assert ids != sorted(ids)  # the late backfill arrived after later trades (landing handles late ids)


def test_proactive_reconnect_opens_the_next_connection_first(
    settings: Settings, unique: str, binance_messages: list[CaptureMessage]
) -> None:
    settings = live_settings(settings, source_max_connection_seconds=0.6)
    topics = feed_topics("binance", unique)
    ledger = GapLedger()
    expected = _served_trades(binance_messages, 6_000)
    with FakeExchange(faults=Faults(max_messages=6_000), speed=15.0, messages=binance_messages) as fake:
        feed = BinanceFeed(["BTCUSDT"], ws_url=fake.ws_url, rest_url=fake.rest_url)
        runner = run_feed(
            feed,
            settings,
            topics=topics,
            ledger=ledger,
            stop_when=stop_at_trade("BTCUSDT", expected[-1]),
            handover_grace_seconds=0.2,
        )
    assert runner.stats.reconnects.get("max_age", 0) >= 2 and set(runner.stats.reconnects) == {"max_age"}
    assert list(ledger.history) == [] and runner.stats.backfilled_trades == 0  # the handover left no hole
    ids = _trade_ids(settings, topics[DataType.TRADES], len(expected))
    assert sorted(ids) == expected


def test_reconnect_overlap_is_deduplicated(
    settings: Settings, unique: str, binance_messages: list[CaptureMessage]
) -> None:
    settings = live_settings(settings)
    topics = feed_topics("binance", unique)
    expected = _served_trades(binance_messages, 9_000)
    # Each reconnect re-sends the last 300 capture messages (a venue replaying, or overlapping connections).
    faults = Faults(max_messages=9_000, drop_every=1_500, max_drops=3, reconnect_advance=-300)
    with FakeExchange(faults=faults, messages=binance_messages) as fake:
        feed = BinanceFeed(["BTCUSDT"], ws_url=fake.ws_url, rest_url=fake.rest_url)
        runner = run_feed(feed, settings, topics=topics, stop_when=stop_at_trade("BTCUSDT", expected[-1]))
    assert fake.stats.drops == 3 and runner.stats.duplicates > 100 and runner.stats.gaps == {}
    ids = _trade_ids(settings, topics[DataType.TRADES], len(expected))
    assert sorted(ids) == expected
    quotes = consume(settings, topics[DataType.QUOTES], QUOTE, expected=runner.stats.quotes)
    update_ids = quotes["update_id"].to_pylist()
    assert len(update_ids) == len(set(update_ids)) == runner.stats.quotes


def test_server_pings_are_answered(
    settings: Settings, unique: str, binance_messages: list[CaptureMessage]
) -> None:
    settings = live_settings(settings)
    topics = feed_topics("binance", unique)
    expected = _served_trades(binance_messages, 4_000)
    # A pong is late only if the feed's event loop is starved that long (a loaded CI machine: 0.5 s was not enough).
    faults = Faults(max_messages=4_000, ping_interval=0.05, ping_timeout=5.0)
    with FakeExchange(faults=faults, speed=20.0, messages=binance_messages) as fake:
        feed = BinanceFeed(["BTCUSDT"], ws_url=fake.ws_url, rest_url=fake.rest_url)
        runner = run_feed(feed, settings, topics=topics, stop_when=stop_at_trade("BTCUSDT", expected[-1]))
    # Several pings, each answered (how many fit in the run depends on the machine's load: 6 at load 25).
    assert (
        fake.stats.pings >= 3 and fake.stats.pongs >= fake.stats.pings - 1 and fake.stats.ping_timeouts == 0
    )
    assert runner.stats.total_reconnects == 0


def test_subscriptions_beyond_the_url_respect_the_message_rate(
    settings: Settings, unique: str, binance_messages: list[CaptureMessage]
) -> None:
    settings = live_settings(settings)
    topics = feed_topics("binance", unique)
    expected = _served_trades(binance_messages, 3_000)
    symbols = ["BTCUSDT"] + [
        f"X{i:03d}USDT" for i in range(449)
    ]  # 900 streams: 200 in the URL, 700 by SUBSCRIBE
    with FakeExchange(faults=Faults(max_messages=3_000), messages=binance_messages) as fake:
        feed = BinanceFeed(symbols, ws_url=fake.ws_url, rest_url=fake.rest_url)
        assert feed.url().count("@") == 200
        started = time.monotonic()
        runner = run_feed(
            feed,
            settings,
            topics=topics,
            stop_when=lambda r: (
                r.last_trade.get("BTCUSDT", 0) >= expected[-1] and fake.stats.control_messages >= 4
            ),
        )
        assert time.monotonic() - started >= 0.5  # 4 SUBSCRIBE messages at < 5 per second
    assert (
        fake.stats.control_messages == 4
        and fake.stats.control_violations == 0
        and runner.stats.total_reconnects == 0
    )
    assert runner.stats.trades == len(expected)

    # The same client without the pacing is disconnected by the venue (close 1008), then keeps reconnecting.
    with FakeExchange(faults=Faults(max_messages=3_000), messages=binance_messages) as fake:
        feed = BinanceFeed(symbols, ws_url=fake.ws_url, rest_url=fake.rest_url)
        feed.control_rate = 1_000.0
        fake.faults.control_limit_per_second = 3.0  # a stricter venue: 4 messages in a second are too many
        runner = run_feed(
            feed,
            settings,
            topics=topics,
            stop_when=lambda r: r.stats.total_reconnects >= 1,
            idle_exit_seconds=5,
        )
    assert fake.stats.control_violations >= 1 and runner.stats.reconnects.get("closed", 0) >= 1


def test_tls_is_verified(
    settings: Settings, unique: str, binance_messages: list[CaptureMessage], tmp_path
) -> None:  # type: ignore[no-untyped-def]
    import ssl
    import subprocess

    from k2.sources.live import tls_context

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    settings = live_settings(settings)
    topics = feed_topics("binance", unique)
    expected = _served_trades(binance_messages, 2_000)
    with FakeExchange(
        faults=Faults(max_messages=2_000), messages=binance_messages, ssl_context=server
    ) as fake:
        assert fake.ws_url.startswith("wss://")
        feed = BinanceFeed(["BTCUSDT"], ws_url=fake.ws_url, rest_url=fake.rest_url)
        refused = run_feed(feed, settings, topics=topics, idle_exit_seconds=1.0)
        assert (
            refused.stats.reconnects.get("tls", 0) >= 1 and refused.stats.trades == 0 and fake.stats.sent == 0
        )
        trusted = run_feed(
            feed,
            settings,
            topics=topics,
            ssl_context=tls_context(cafile=str(cert)),
            stop_when=stop_at_trade("BTCUSDT", expected[-1]),
        )
    assert trusted.stats.trades == len(expected) and "tls" not in trusted.stats.reconnects


def test_coinbase_feed_survives_drops_and_skips(settings: Settings, unique: str) -> None:
    settings = live_settings(settings, source_stall_seconds=1.0)
    topics = feed_topics("coinbase", unique)
    ledger = GapLedger.for_settings(settings)
    messages = load_coinbase(COINBASE_CAPTURE)
    last_ids: dict[str, int] = {}
    for m in messages:
        if m.trade_id is not None:
            last_ids[m.symbol] = max(last_ids.get(m.symbol, 0), m.trade_id)
    faults = Faults(
        drop_every=30,
        max_drops=4,
        reconnect_advance=15,
        skip_at=frozenset({60, 150}),
        skip_count=3,
        malformed_at=frozenset({20}),
    )
    with FakeExchange("coinbase", faults=faults, messages=messages) as fake:
        # Depth off: the sample holds l2updates without their snapshots (tests/book covers level2).
        feed = CoinbaseFeed(sorted(last_ids), ws_url=fake.ws_url, rest_url=fake.rest_url, depth=False)
        runner = run_feed(
            feed,
            settings,
            topics=topics,
            ledger=ledger,
            stop_when=lambda r: all(r.last_trade.get(p) == i for p, i in last_ids.items()),
        )
    assert fake.stats.drops == 4 and runner.stats.malformed == 1 and fake.stats.rest_requests > 0
    trades = consume(settings, topics[DataType.TRADES], TRADE, expected=107)
    keys = list(zip(trades["symbol"].to_pylist(), trades["trade_id"].to_pylist(), strict=True))
    assert Counter(keys).most_common(1)[0][1] == 1
    assert sorted(keys) == sorted({(m.symbol, m.trade_id) for m in messages if m.trade_id is not None})
    assert runner.stats.duplicates >= 1  # last_match replays on resubscription
    statuses = set(current_gaps(ledger.table)["status"].to_pylist())  # type: ignore[arg-type]
    assert statuses == {"backfilled"}
    assert set(trades["exchange"].to_pylist()) == {"coinbase"} and set(
        trades["instrument"].to_pylist()
    ) == set(last_ids)


def test_unknown_coinbase_product_is_fatal(settings: Settings, unique: str) -> None:
    settings = live_settings(settings)
    with FakeExchange("coinbase", messages=load_coinbase(COINBASE_CAPTURE)) as fake:
        feed = CoinbaseFeed(["SKL-USD", "FOO-BAR"], ws_url=fake.ws_url, rest_url=fake.rest_url)
        started = time.monotonic()
        with pytest.raises(FatalSourceError, match="FOO-BAR is not a valid product"):
            run_feed(feed, settings, topics=feed_topics("coinbase", unique))
    assert (
        time.monotonic() - started < 20
    )  # not retried until run_feed's 120 s timeout (loose bound: shared machine)
