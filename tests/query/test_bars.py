"""Bars from real Binance trades against an independent computation from the raw file (Decimal arithmetic)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pyarrow.compute as pc
import pytest

from k2.query.client import Client
from k2.query.errors import InvalidRangeError

from .helpers import csv_rows, csv_trades, lake_settings, load

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def raw() -> list[dict[str, str]]:
    return csv_rows()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, raw: list[dict[str, str]]) -> Iterator[Client]:
    settings = lake_settings(Path(tmp_path_factory.mktemp("bars")))
    load(settings, "trades", csv_trades(raw))
    # The same trades under another symbol with seconds 10..12 removed, for empty-interval filling.
    gapped = [r for r in raw if not 10_000 <= int(r["time"]) % 60_000 < 13_000]
    load(settings, "trades", csv_trades(gapped, symbol="BTCGAP"))
    with Client(settings) as c:
        yield c


def expected_bar(rows: list[dict[str, str]], open_ms: int, interval_ms: int) -> dict[str, object]:
    ordered = sorted(rows, key=lambda r: (int(r["time"]), int(r["trade_id"])))
    prices = [Decimal(r["price"]) for r in ordered]
    volume = sum((Decimal(r["qty"]) for r in ordered), Decimal(0))
    notional = sum((Decimal(r["price"]) * Decimal(r["qty"]) for r in ordered), Decimal(0))
    takers = [r for r in ordered if r["is_buyer_maker"] == "False"]  # buyer was not the maker: taker buy
    return {
        "open_time": EPOCH + timedelta(milliseconds=open_ms),
        "open": prices[0],
        "high": max(prices),
        "low": min(prices),
        "close": prices[-1],
        "volume": volume,
        "close_time": EPOCH + timedelta(milliseconds=open_ms + interval_ms - 1),
        "quote_volume": sum((Decimal(r["quote_qty"]) for r in ordered), Decimal(0)),
        "trade_count": len(ordered),
        "taker_buy_base_volume": sum((Decimal(r["qty"]) for r in takers), Decimal(0)),
        "taker_buy_quote_volume": sum((Decimal(r["quote_qty"]) for r in takers), Decimal(0)),
        "vwap": notional / volume,
        "first_trade_id": int(ordered[0]["trade_id"]),
        "last_trade_id": int(ordered[-1]["trade_id"]),
    }


def assert_bar(bar: dict[str, object], want: dict[str, object]) -> None:
    for key, value in want.items():
        if key == "vwap":
            assert bar[key] == Decimal(value).quantize(Decimal("0.00000001"), ROUND_HALF_UP), key  # type: ignore[arg-type]
        else:
            assert bar[key] == value, key


def test_one_minute_kline_equals_independent_computation(client: Client, raw: list[dict[str, str]]) -> None:
    bars = client.bars(
        "BTCUSDT",
        interval="1m",
        start="2021-01-03T00:00:00Z",
        end="2021-01-03T00:01:00Z",
        include_recent=False,
    )
    assert bars.num_rows == 1
    bar = bars.to_pylist()[0]
    assert bar["trade_count"] == 1830 == len(raw)
    open_ms = min(int(r["time"]) for r in raw) // 60_000 * 60_000
    assert open_ms == int(datetime(2021, 1, 3, tzinfo=UTC).timestamp() * 1000)
    assert_bar(bar, expected_bar(raw, open_ms, 60_000))
    assert bar["exchange"] == "binance" and bar["symbol"] == "BTCUSDT"
    assert str(bars.schema.field("open_time").type) == "timestamp[us, tz=UTC]"
    # Without a range (what `k2 demo` calls) the same single bar comes back.
    assert client.bars("BTCUSDT", interval="1m", include_recent=False).to_pylist() == bars.to_pylist()


def test_one_second_bars_follow_bucket_rules(client: Client, raw: list[dict[str, str]]) -> None:
    bars = client.bars("BTCUSDT", interval="1s", include_recent=False).to_pylist()
    groups: dict[int, list[dict[str, str]]] = defaultdict(list)
    for r in raw:
        groups[int(r["time"]) // 1000 * 1000].append(r)  # [t, t + 1 s)
    assert [b["open_time"] for b in bars] == [EPOCH + timedelta(milliseconds=k) for k in sorted(groups)]
    for bar in bars:
        open_ms = int((bar["open_time"] - EPOCH) / timedelta(milliseconds=1))
        assert_bar(bar, expected_bar(groups[open_ms], open_ms, 1000))
    assert sum(b["trade_count"] for b in bars) == 1830


def test_fill_empty_forward_fills_close(client: Client, raw: list[dict[str, str]]) -> None:
    start, end = "2021-01-02T23:59:58Z", "2021-01-03T00:01:00Z"
    sparse = client.bars("BTCGAP", interval="1s", start=start, end=end, include_recent=False).to_pylist()
    filled = client.bars(
        "BTCGAP", interval="1s", start=start, end=end, fill_empty=True, include_recent=False
    ).to_pylist()
    assert len(filled) == 62 and len(sparse) == 57
    by_time = {b["open_time"]: b for b in filled}
    # Leading intervals before any trade have no previous close.
    assert by_time[datetime(2021, 1, 2, 23, 59, 58, tzinfo=UTC)]["close"] is None
    before = by_time[datetime(2021, 1, 3, 0, 0, 9, tzinfo=UTC)]
    for second in (10, 11, 12):
        empty = by_time[datetime(2021, 1, 3, 0, 0, second, tzinfo=UTC)]
        assert empty["trade_count"] == 0 and empty["volume"] == 0 and empty["vwap"] is None
        assert empty["open"] == empty["high"] == empty["low"] == empty["close"] == before["close"]
    non_empty = [b for b in filled if b["trade_count"]]
    assert non_empty == sparse


def test_tick_bars(client: Client, raw: list[dict[str, str]]) -> None:
    bars = client.bars("BTCUSDT", kind="tick", size=100, include_recent=False).to_pylist()
    ordered = sorted(raw, key=lambda r: (int(r["time"]), int(r["trade_id"])))
    chunks = [ordered[i : i + 100] for i in range(0, len(ordered), 100)]
    assert len(bars) == len(chunks) == 19
    for bar, chunk in zip(bars, chunks, strict=True):
        assert bar["trade_count"] == len(chunk)
        assert bar["open"] == Decimal(chunk[0]["price"]) and bar["close"] == Decimal(chunk[-1]["price"])
        assert bar["volume"] == sum((Decimal(r["qty"]) for r in chunk), Decimal(0))
        assert bar["open_time"] == EPOCH + timedelta(milliseconds=int(chunk[0]["time"]))
        assert bar["close_time"] == EPOCH + timedelta(milliseconds=int(chunk[-1]["time"]))


def test_volume_bars(client: Client, raw: list[dict[str, str]]) -> None:
    size = Decimal("5")
    bars = client.bars("BTCUSDT", kind="volume", size="5", include_recent=False).to_pylist()
    ordered = sorted(raw, key=lambda r: (int(r["time"]), int(r["trade_id"])))
    groups: dict[int, list[dict[str, str]]] = defaultdict(list)
    cumulative = Decimal(0)
    for r in ordered:
        groups[int(cumulative // size)].append(r)  # the bar in which the trade's cumulative volume starts
        cumulative += Decimal(r["qty"])
    assert len(bars) == len(groups) > 5
    for bar, key in zip(bars, sorted(groups), strict=True):
        chunk = groups[key]
        assert bar["trade_count"] == len(chunk)
        assert bar["volume"] == sum((Decimal(r["qty"]) for r in chunk), Decimal(0))
        assert bar["first_trade_id"] == int(chunk[0]["trade_id"]) and bar["last_trade_id"] == int(
            chunk[-1]["trade_id"]
        )
    assert sum(b["volume"] for b in bars) == sum((Decimal(r["qty"]) for r in raw), Decimal(0))


@pytest.mark.parametrize("interval", ["7m", "2d", "1w", "0s", "90", "abc", "1500ms"])
def test_bad_intervals_are_rejected(client: Client, interval: str) -> None:
    with pytest.raises(InvalidRangeError, match="interval: expected"):
        client.bars("BTCUSDT", interval=interval, include_recent=False)


def test_bad_bar_kinds_and_sizes(client: Client) -> None:
    with pytest.raises(InvalidRangeError, match="kind: expected"):
        client.bars("BTCUSDT", kind="dollar", size=1, include_recent=False)
    with pytest.raises(InvalidRangeError, match="size: expected"):
        client.bars("BTCUSDT", kind="tick", size=0, include_recent=False)
    with pytest.raises(InvalidRangeError, match="size: expected"):
        client.bars("BTCUSDT", kind="volume", size="-1", include_recent=False)
    with pytest.raises(InvalidRangeError, match="size: expected"):
        client.bars("BTCUSDT", kind="volume", include_recent=False)


def test_other_intervals_sum_up(client: Client) -> None:
    for interval in ("5s", "15s", "1h", "1d"):
        bars = client.bars("BTCUSDT", interval=interval, include_recent=False)
        assert pc.sum(bars["trade_count"]).as_py() == 1830, interval
