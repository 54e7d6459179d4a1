"""Replay: stored rows (real Binance and Coinbase captures in a real Iceberg catalog) re-published to Kafka.

Checks order (exchange time, ties by id), completeness within the half-open range, bounded windows,
pacing (lower bounds only: the machine is shared), the ``k2 replay`` command, and that the replayed
topic landed by the real landing consumer gives back the same rows.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime
from typing import Any

import pytest

from k2.bus import ensure_topics, topic_name
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.landing import LandingConsumer
from k2.model import QUOTE, TRADE
from k2.model.values import micros_to_datetime, unscaled_to_decimal
from k2.sources import binance, coinbase
from k2.sources.replay import ReplayStats, iter_windows, parse_speed, replay
from tests.sources.helpers import BINANCE_CAPTURES, COINBASE_CAPTURE, cli_env, consume, store_rows
from tests.support.landing import land_messages

CB_TRADES = [row for record, row, _ in coinbase.iter_capture(COINBASE_CAPTURE) if record is TRADE]
CB_QUOTES = [row for record, row, _ in coinbase.iter_capture(COINBASE_CAPTURE) if record is QUOTE]
CB_PRODUCTS = sorted({r["symbol"] for r in CB_TRADES})


@pytest.fixture(scope="module")
def btc_trades() -> list[dict[str, Any]]:
    return list(binance.iter_capture_trades(BINANCE_CAPTURES))


def _dt(micros: int) -> datetime:
    return micros_to_datetime(micros)


def _one_partition_topic(settings: Settings, name: str) -> str:
    ensure_topics(settings, [name], partitions=1)  # one partition: consumed order == produced order
    return name


def test_speed_parsing() -> None:
    assert [parse_speed(s) for s in ("10x", "1x", "0.5X", "max", " 3 ")] == [10.0, 1.0, 0.5, None, 3.0]
    for bad in ("0x", "-2x", "fast", "infx"):
        with pytest.raises(ValueError, match="expected a"):
            parse_speed(bad)


def test_replay_sends_every_row_of_the_range_in_exchange_time_order(settings: Settings, unique: str) -> None:
    store_rows(settings, "trades", TRADE, CB_TRADES)
    # Cut inside the capture: the 10th trade's time is included, the 90th's excluded (half-open range).
    times = sorted(r["exchange_ts"] for r in CB_TRADES)
    start, end = times[10], times[90]
    expected = sorted(
        (r for r in CB_TRADES if start <= r["exchange_ts"] < end),
        key=lambda r: (r["exchange_ts"], r["trade_id"], r["exchange"], r["symbol"]),
    )
    topic = _one_partition_topic(settings, f"replay.order.{unique}")
    # 3-second windows over a ~30 s range: several windows, order must hold across their boundaries.
    stats = replay(settings, CB_PRODUCTS, _dt(start), _dt(end), topic, speed=None, window_seconds=3.0)
    got = consume(settings, topic, TRADE, expected=len(expected))
    assert stats.rows == len(expected) == got.num_rows and stats.windows >= 5
    keys = ("symbol", "trade_id", "price", "quantity", "side", "receipt_ts", "source_sequence")
    got_rows = got.to_pylist()
    assert [r["exchange_ts"] for r in got_rows] == [_dt(r["exchange_ts"]) for r in expected]
    assert [tuple(r[k] for k in keys) for r in got_rows] == [
        (
            e["symbol"],
            e["trade_id"],
            unscaled_to_decimal(e["price"]),
            unscaled_to_decimal(e["quantity"]),
            e["side"],
            _dt(e["receipt_ts"]),
            e["source_sequence"],
        )
        for e in expected
    ]
    assert all(
        r["ingest_ts"] >= _dt(time.time_ns() // 1000 - 120_000_000) for r in got_rows
    )  # restamped when produced


def test_windows_are_bounded_and_empty_stretches_are_not_scanned(
    settings: Settings, btc_trades: list[dict[str, Any]]
) -> None:
    store_rows(settings, "trades", TRADE, btc_trades)
    table = ensure_tables(load_catalog(settings), settings)["trades"]
    first, last = btc_trades[0]["exchange_ts"], btc_trades[-1]["exchange_ts"]
    day = 86_400_000_000
    stats = ReplayStats()
    # Two days around 11 minutes of data, one-minute windows: only the windows holding data files are read.
    windows = list(
        iter_windows(table, "trades", ["BTCUSDT"], first - day, last + day, "binance", 60_000_000, stats)
    )
    ids = [i for w in windows for i in w["trade_id"].to_pylist()]
    assert ids == [r["trade_id"] for r in btc_trades]  # every trade once, in order (ids rise with time here)
    assert len(windows) >= 10 and max(w.num_rows for w in windows) < len(btc_trades) // 4
    assert stats.windows <= 14  # not the 2,891 one-minute windows of the whole range
    assert list(iter_windows(table, "trades", ["ETHUSDT"], first, last + 1)) == []


def test_pacing_follows_exchange_time(
    settings: Settings, unique: str, btc_trades: list[dict[str, Any]]
) -> None:
    store_rows(settings, "trades", TRADE, btc_trades)
    times = [r["exchange_ts"] for r in btc_trades]
    # The first trade followed by a trade 1.9-2 s later: a 2 s range whose rows really span ~2 s.
    start = next(t for t in times if any(t + 1_900_000 <= u < t + 2_000_000 for u in times))
    end = start + 2_000_000
    span = max(t for t in times if t < end) - start
    topic = f"replay.pace.{unique}"
    sent_at: list[tuple[float, int]] = []
    started = time.monotonic()
    paced = replay(
        settings,
        ["BTCUSDT"],
        _dt(start),
        _dt(end),
        topic,
        speed=10.0,
        on_row=lambda row: sent_at.append((time.monotonic(), row["exchange_ts"])),
    )
    elapsed = time.monotonic() - started
    fast = replay(settings, ["BTCUSDT"], _dt(start), _dt(end), topic, speed=None)
    assert paced.rows == fast.rows == sum(1 for t in times if start <= t < end) > 10
    assert (
        span >= 1_900_000 and elapsed >= span / 1e6 / 10 * 0.95
    )  # 10x over ~2 s of exchange time: >= ~0.19 s
    first_ts = sent_at[0][1]
    early = [(at - started, ts) for at, ts in sent_at if at - started < (ts - first_ts) / 1e6 / 10]
    assert early == []  # no row was sent before it was due (on a loaded machine sending may fall behind)
    assert fast.slept_seconds == 0


def test_replay_command_publishes_quotes(settings: Settings, unique: str) -> None:
    store_rows(settings, "quotes", QUOTE, CB_QUOTES)
    topic = _one_partition_topic(settings, f"replay.quotes.{unique}")
    start, end = min(r["exchange_ts"] for r in CB_QUOTES), max(r["exchange_ts"] for r in CB_QUOTES) + 1
    iso = lambda us: _dt(us).isoformat().replace("+00:00", "Z")  # noqa: E731
    base = [
        sys.executable,
        "-m",
        "k2.cli",
        "replay",
        "--symbols",
        ",".join(CB_PRODUCTS),
        "--start",
        iso(start),
        "--end",
        iso(end),
    ]
    result = subprocess.run(
        [*base, "--to-topic", topic, "--speed", "max", "--table", "quotes", "--exchange", "coinbase"],
        env=cli_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"replayed {len(CB_QUOTES)} quotes rows to {topic}" in result.stdout
    got = consume(settings, topic, QUOTE, expected=len(CB_QUOTES))
    expected = sorted(CB_QUOTES, key=lambda r: (r["exchange_ts"], r["update_id"], r["symbol"]))
    assert [(r["symbol"], r["update_id"]) for r in got.to_pylist()] == [
        (r["symbol"], r["update_id"]) for r in expected
    ]


def test_replayed_topic_lands_the_same_rows(
    private_settings: Settings, btc_trades: list[dict[str, Any]], tmp_path
) -> None:  # type: ignore[no-untyped-def]
    source = private_settings
    store_rows(source, "trades", TRADE, btc_trades)
    topic = topic_name("crypto", "trades", "binance")  # what the landing consumer validates rows against
    start, end = btc_trades[0]["exchange_ts"], btc_trades[-1]["exchange_ts"] + 1
    stats = replay(source, ["BTCUSDT"], _dt(start), _dt(end), topic, speed=None, exchange="binance")
    assert stats.rows == len(btc_trades)

    rebuilt = source.model_copy(update={"data_dir": tmp_path / "rebuilt", "consumer_group": "replay-landing"})
    consumer = LandingConsumer(rebuilt, topics=[topic])
    landing = land_messages(consumer, len(btc_trades))
    assert landing.dead_lettered == 0 and landing.gaps == 0
    columns = [
        "exchange",
        "symbol",
        "instrument",
        "trade_id",
        "price",
        "quantity",
        "quote_quantity",
        "side",
        "exchange_ts",
        "receipt_ts",
        "conditions",
        "vendor",
    ]

    def rows(settings: Settings) -> list[tuple[Any, ...]]:
        data = (
            ensure_tables(load_catalog(settings), settings)["trades"]
            .scan(selected_fields=tuple(columns))
            .to_arrow()
        )
        return sorted(tuple(str(r[c]) for c in columns) for r in data.to_pylist())

    original, landed = rows(source), rows(rebuilt)
    assert len(original) == len(landed) == 19_904
    assert landed == original
