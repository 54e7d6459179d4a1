"""VWAP, TWAP, spread statistics and the as-of join on a real Binance capture, against independent Python."""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from k2.query.client import Client

from .helpers import capture_tables, lake_settings, load

START = datetime(2024, 8, 8, 23, 55, tzinfo=UTC)
END = datetime(2024, 8, 8, 23, 57, tzinfo=UTC)


@pytest.fixture(scope="module")
def data() -> tuple[pa.Table, pa.Table]:
    trades, quotes = capture_tables(max_lines=26_000)  # 23:54:15 .. past 23:57, enough around the window
    assert trades["exchange_ts"][-1].as_py() > END and quotes["exchange_ts"][-1].as_py() > END
    return trades, quotes


_WINDOWS: dict[tuple[int, datetime, datetime], list[dict[str, Any]]] = {}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, data: tuple[pa.Table, pa.Table]) -> Iterator[Client]:
    settings = lake_settings(Path(tmp_path_factory.mktemp("analytics")))
    load(settings, "trades", data[0])
    load(settings, "quotes", data[1])
    with Client(settings) as c:
        yield c


def _in_window(table: pa.Table, start: datetime, end: datetime, id_column: str) -> list[dict[str, Any]]:
    key = (id(table), start, end)
    if key not in _WINDOWS:
        rows = [r for r in table.to_pylist() if start <= r["exchange_ts"] < end]
        _WINDOWS[key] = sorted(rows, key=lambda r: (r["exchange_ts"], r[id_column]))
    return _WINDOWS[key]


def test_vwap(client: Client, data: tuple[pa.Table, pa.Table]) -> None:
    trades = _in_window(data[0], START, END, "trade_id")
    assert len(trades) > 1000
    notional = sum((r["price"] * r["quantity"] for r in trades), Decimal(0))
    volume = sum((r["quantity"] for r in trades), Decimal(0))
    row = client.vwap("BTCUSDT", START, END, include_recent=False).to_pylist()
    assert len(row) == 1
    assert row[0]["trade_count"] == len(trades)
    assert row[0]["volume"] == volume and row[0]["notional"] == notional
    assert row[0]["vwap"] == pytest.approx(float(notional / volume), rel=1e-12)


def test_twap(client: Client, data: tuple[pa.Table, pa.Table]) -> None:
    trades = _in_window(data[0], START, END, "trade_id")
    weighted = Decimal(0)
    total = 0
    for i, r in enumerate(trades):
        until = trades[i + 1]["exchange_ts"] if i + 1 < len(trades) else END
        micros = (until - r["exchange_ts"]) // timedelta(microseconds=1)
        weighted += r["price"] * micros
        total += micros
    row = client.twap("BTCUSDT", START.isoformat(), END.isoformat(), include_recent=False).to_pylist()[0]
    assert row["twap"] == pytest.approx(float(weighted / total), rel=1e-12)
    assert row["trade_count"] == len(trades)
    assert row["seconds"] == pytest.approx(total / 1e6)


def test_spread_stats(client: Client, data: tuple[pa.Table, pa.Table]) -> None:
    quotes = [q for q in _in_window(data[1], START, END, "update_id") if q["bid_price"] > 0 and q["ask_price"] > 0]
    assert len(quotes) > 1000
    spreads = [q["ask_price"] - q["bid_price"] for q in quotes]
    weighted = Decimal(0)
    total = 0
    for i, q in enumerate(quotes):
        until = quotes[i + 1]["exchange_ts"] if i + 1 < len(quotes) else END
        micros = (until - q["exchange_ts"]) // timedelta(microseconds=1)
        weighted += spreads[i] * micros
        total += micros
    bps = [float((q["ask_price"] - q["bid_price"]) / ((q["ask_price"] + q["bid_price"]) / 2)) * 10_000 for q in quotes]
    row = client.spread_stats("BTCUSDT", START, END).to_pylist()[0]
    assert row["quote_count"] == len(quotes)
    assert row["min_spread"] == min(spreads) and row["max_spread"] == max(spreads)
    assert row["mean_spread"] == pytest.approx(float(sum(spreads) / len(spreads)), rel=1e-9)
    assert row["median_spread"] == pytest.approx(float(statistics.median(spreads)), rel=1e-9)
    assert row["time_weighted_spread"] == pytest.approx(float(weighted / total), rel=1e-9)
    assert row["mean_spread_bps"] == pytest.approx(statistics.fmean(bps), rel=1e-9)
    assert row["crossed_count"] == sum(1 for s in spreads if s < 0)
    assert row["locked_count"] == sum(1 for s in spreads if s == 0)


@pytest.mark.parametrize("tolerance", ["1s", "20ms"])
def test_asof_join(client: Client, data: tuple[pa.Table, pa.Table], tolerance: str) -> None:
    tol = timedelta(seconds=1) if tolerance == "1s" else timedelta(milliseconds=20)
    trades = _in_window(data[0], START, END, "trade_id")
    quotes = _in_window(data[1], START - tol, END, "update_id")
    # Latest quote at or before each trade; equal times keep the highest update id (the later one in sort order).
    times = [q["exchange_ts"] for q in quotes]
    joined = client.asof_join("BTCUSDT", START, END, tolerance=tolerance).to_pylist()
    assert [j["trade_id"] for j in joined] == [t["trade_id"] for t in trades]
    matched = 0
    for trade, row in zip(trades, joined, strict=True):
        i = bisect.bisect_right(times, trade["exchange_ts"]) - 1
        quote = quotes[i] if i >= 0 and trade["exchange_ts"] - quotes[i]["exchange_ts"] <= tol else None
        if quote is None:
            assert row["bid_price"] is None and row["mid"] is None and row["quote_ts"] is None
            continue
        matched += 1
        mid = (quote["bid_price"] + quote["ask_price"]) / 2
        assert row["quote_ts"] == quote["exchange_ts"]
        assert (row["bid_price"], row["ask_price"]) == (quote["bid_price"], quote["ask_price"])
        assert row["mid"] == mid and row["spread"] == quote["ask_price"] - quote["bid_price"]
        assert row["effective_spread"] == 2 * abs(trade["price"] - mid)
        assert row["effective_spread_bps"] == pytest.approx(float(2 * abs(trade["price"] - mid) / mid * 10_000), rel=1e-9, abs=1e-12)
        assert row["quote_age_us"] == (trade["exchange_ts"] - quote["exchange_ts"]) // timedelta(microseconds=1)
    assert matched > 100
    if tolerance == "20ms":
        assert matched < len(trades)  # some trades have no quote that recent


def test_symbols_lists_counts(client: Client, data: tuple[pa.Table, pa.Table]) -> None:
    rows = client.symbols().to_pylist()
    assert [(r["exchange"], r["symbol"], r["trades"], r["quotes"]) for r in rows] == [
        ("binance", "BTCUSDT", data[0].num_rows, data[1].num_rows)
    ]
    assert client.symbols(exchange="coinbase").num_rows == 0
