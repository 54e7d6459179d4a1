"""VWAP, TWAP, spread statistics and the as-of join on a real Binance capture, against independent Python."""

from __future__ import annotations

import bisect
import statistics
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
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
    assert row[0]["vwap"] == (notional / volume).quantize(
        Decimal("0.00000001"), ROUND_HALF_UP
    )  # exact, not a float


def _independent_twap(
    trades: list[dict[str, Any]], start: datetime, end: datetime
) -> tuple[Decimal, int, dict[str, Any] | None]:
    """(time-weighted price x micros summed, micros, prevailing trade): each price weighted by how long it prevailed."""
    ordered = sorted(trades, key=lambda r: (r["exchange_ts"], r["trade_id"]))
    before = [r for r in ordered if r["exchange_ts"] < start]
    inside = [r for r in ordered if start <= r["exchange_ts"] < end]
    prevailing = before[-1] if before else None
    points = ([(start, prevailing["price"])] if prevailing else []) + [
        (r["exchange_ts"], r["price"]) for r in inside
    ]
    weighted, total = Decimal(0), 0
    for i, (at, price) in enumerate(points):
        until = points[i + 1][0] if i + 1 < len(points) else end
        micros = (until - at) // timedelta(microseconds=1)
        weighted += price * micros
        total += micros
    return weighted, total, prevailing


def test_twap_weights_each_price_by_how_long_it_prevailed(
    client: Client, data: tuple[pa.Table, pa.Table]
) -> None:
    all_trades = data[0].to_pylist()
    inside = _in_window(data[0], START, END, "trade_id")
    weighted, total, prevailing = _independent_twap(all_trades, START, END)
    assert (
        prevailing is not None and inside[0]["exchange_ts"] > START
    )  # the window opens on the prevailing price
    row = client.twap("BTCUSDT", START.isoformat(), END.isoformat(), include_recent=False).to_pylist()[0]
    assert row["twap"] == pytest.approx(float(weighted / total), rel=1e-12)
    assert row["trade_count"] == len(inside)
    assert row["seconds"] == pytest.approx((END - START).total_seconds())  # the whole window is covered
    assert (row["prevailing_price"], row["prevailing_ts"]) == (prevailing["price"], prevailing["exchange_ts"])
    assert (row["first_ts"], row["last_ts"]) == (inside[0]["exchange_ts"], inside[-1]["exchange_ts"])

    # Before the first stored trade there is no prevailing price: the average starts at the first trade.
    early = START - timedelta(minutes=10)
    weighted, total, prevailing = _independent_twap(all_trades, early, END)
    assert prevailing is None
    row = client.twap("BTCUSDT", early, END, include_recent=False).to_pylist()[0]
    assert row["twap"] == pytest.approx(float(weighted / total), rel=1e-12)
    assert row["prevailing_price"] is None and row["seconds"] < (END - early).total_seconds()

    # A window between two trades holds no trade: its TWAP is the price prevailing throughout.
    ordered = sorted(all_trades, key=lambda r: (r["exchange_ts"], r["trade_id"]))
    a, b = next(
        (x, y)
        for x, y in zip(ordered, ordered[1:], strict=False)
        if y["exchange_ts"] - x["exchange_ts"] > timedelta(milliseconds=50)
    )
    quiet_start, quiet_end = a["exchange_ts"] + timedelta(milliseconds=1), b["exchange_ts"]
    row = client.twap("BTCUSDT", quiet_start, quiet_end, include_recent=False).to_pylist()[0]
    assert (
        row["trade_count"] == 0
        and row["twap"] == float(a["price"])
        and row["prevailing_ts"] == a["exchange_ts"]
    )
    assert row["seconds"] == pytest.approx((quiet_end - quiet_start).total_seconds())


def test_spread_stats(client: Client, data: tuple[pa.Table, pa.Table]) -> None:
    quotes = [
        q for q in _in_window(data[1], START, END, "update_id") if q["bid_price"] > 0 and q["ask_price"] > 0
    ]
    assert len(quotes) > 1000
    spreads = [q["ask_price"] - q["bid_price"] for q in quotes]
    weighted = Decimal(0)
    total = 0
    for i, q in enumerate(quotes):
        until = quotes[i + 1]["exchange_ts"] if i + 1 < len(quotes) else END
        micros = (until - q["exchange_ts"]) // timedelta(microseconds=1)
        weighted += spreads[i] * micros
        total += micros
    bps = [
        float((q["ask_price"] - q["bid_price"]) / ((q["ask_price"] + q["bid_price"]) / 2)) * 10_000
        for q in quotes
    ]
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
        assert row["effective_spread_bps"] == pytest.approx(
            float(2 * abs(trade["price"] - mid) / mid * 10_000), rel=1e-9, abs=1e-12
        )
        assert row["quote_age_us"] == (trade["exchange_ts"] - quote["exchange_ts"]) // timedelta(
            microseconds=1
        )
    assert matched > 100
    if tolerance == "20ms":
        assert matched < len(trades)  # some trades have no quote that recent


def test_symbols_lists_counts(client: Client, data: tuple[pa.Table, pa.Table]) -> None:
    rows = client.symbols().to_pylist()
    assert [(r["exchange"], r["symbol"], r["trades"], r["quotes"]) for r in rows] == [
        ("binance", "BTCUSDT", data[0].num_rows, data[1].num_rows)
    ]
    assert client.symbols(exchange="coinbase").num_rows == 0


def test_units_is_the_exact_unscaled_integer_of_any_decimal_18_8() -> None:
    """The VWAP/volume-bar arithmetic's unscaled value: exact at the type's limits, negatives and random values."""
    import random

    from k2.duck import connect
    from k2.query.sqlbuild import units

    rnd = random.Random(3)
    values = ["0", "0.00000001", "-0.00000001", "9999999999.99999999", "-9999999999.99999999", "-0.99999999"]
    values += [str(Decimal(rnd.randrange(-(10**18) + 1, 10**18)).scaleb(-8)) for _ in range(2000)]
    con = connect(())
    got = con.execute(f"SELECT {units('x')} FROM (SELECT unnest(?)::DECIMAL(18,8) AS x)", [values]).fetchall()
    assert [g[0] for g in got] == [int(Decimal(v).scaleb(8)) for v in values]
