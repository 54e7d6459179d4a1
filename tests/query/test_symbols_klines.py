"""Several symbols per request, the klines table everywhere, VWAP as an exact decimal (issue 12 §5)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from k2.cli import app
from k2.model import KLINE
from k2.model.arrow import records_to_arrow
from k2.query.client import Client
from k2.query.errors import UnknownSymbolError
from tests.support.factories import kline_row

from .helpers import csv_rows, csv_trades, lake_settings, load

START, END = "2021-01-03T00:00:00Z", "2021-01-03T00:01:00Z"
EIGHT = Decimal("0.00000001")


def _zero_kline(symbol: str, minute: int, close: str) -> dict[str, Any]:
    """A kline with zero volumes and trades (they must print as ``0.00000000``, never ``0E-8``)."""
    return kline_row(symbol, minute, close, volume="0", quote_volume="0", trade_count=0, taker_buy_base="0")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = Path(tmp_path_factory.mktemp("symbols"))
    settings = lake_settings(root)
    raw = csv_rows()
    load(settings, "trades", csv_trades(raw))
    load(settings, "trades", csv_trades(raw[:100], symbol="ETHUSDT"))
    load(
        settings,
        "klines",
        records_to_arrow(
            KLINE, [_zero_kline("BTCUSDT", m, "1.5") for m in range(3)] + [_zero_kline("ETHUSDT", 0, "0.1")]
        ),
    )
    return root


@pytest.fixture(scope="module")
def client(lake: Path) -> Any:
    with Client(lake_settings(lake)) as c:
        yield c


def test_several_symbols_per_request(client: Client) -> None:
    both = client.trades(["BTCUSDT", "ETHUSDT"], START, END, include_recent=False)
    assert both.num_rows == 1930
    assert both.table.group_by("symbol").aggregate([("trade_id", "count")]).sort_by("symbol").to_pylist() == [
        {"symbol": "BTCUSDT", "trade_id_count": 1830},
        {"symbol": "ETHUSDT", "trade_id_count": 100},
    ]
    assert (
        client.trades("BTCUSDT", START, END, include_recent=False).num_rows == 1830
    )  # one string still works
    bars = client.bars(["BTCUSDT", "ETHUSDT"], "1m", START, END, include_recent=False)
    assert sorted(zip(bars["symbol"].to_pylist(), bars["trade_count"].to_pylist(), strict=True)) == [
        ("BTCUSDT", 1830),
        ("ETHUSDT", 100),
    ]
    vwap = client.vwap(["BTCUSDT", "ETHUSDT"], START, END, include_recent=False)
    assert vwap["symbol"].to_pylist() == ["BTCUSDT", "ETHUSDT"]
    with pytest.raises(UnknownSymbolError, match="'NOPE'"):
        client.trades(["NOPE", "NADA"], START, END, include_recent=False)


def test_vwap_is_an_exact_decimal(client: Client) -> None:
    raw = csv_rows()[:100]
    notional = sum((Decimal(r["price"]) * Decimal(r["qty"]) for r in raw), Decimal(0))
    volume = sum((Decimal(r["qty"]) for r in raw), Decimal(0))
    result = client.vwap("ETHUSDT", START, END, include_recent=False)
    assert pa.types.is_decimal(result["vwap"].type)
    assert result["vwap"].to_pylist() == [(notional / volume).quantize(EIGHT, ROUND_HALF_UP)]
    bars = client.bars("ETHUSDT", "1m", START, END, include_recent=False)
    assert bars["vwap"].to_pylist() == [(notional / volume).quantize(EIGHT, ROUND_HALF_UP)]


def test_klines_readable(client: Client) -> None:
    day = datetime(2024, 8, 8, tzinfo=UTC)
    rows = client.klines("BTCUSDT", "1m", day, day + timedelta(minutes=2))
    assert [r["open_time"] for r in rows.to_pylist()] == [day, day + timedelta(minutes=1)]
    assert rows["close"].to_pylist() == [Decimal("1.5")] * 2
    assert client.klines(["BTCUSDT", "ETHUSDT"]).num_rows == 4
    assert client.sql("SELECT count(*) AS n FROM klines WHERE symbol = ?", ["ETHUSDT"])["n"].to_pylist() == [
        1
    ]
    with pytest.raises(UnknownSymbolError):
        client.klines("NOPE")


runner = CliRunner()


def test_cli_symbols_and_klines(lake: Path) -> None:
    env = {"K2_DATA_DIR": str(lake / "k2")}
    out = runner.invoke(
        app,
        [
            "trades",
            "--symbols",
            "BTCUSDT,ETHUSDT",
            "--start",
            START,
            "--end",
            END,
            "-f",
            "json",
            "--no-include-recent",
        ],
        env=env,
    )
    assert out.exit_code == 0, out.output
    assert len(json.loads(out.stdout)) == 1930
    vwap = runner.invoke(
        app,
        ["vwap", "BTCUSDT,ETHUSDT", "--start", START, "--end", END, "-f", "json", "--no-include-recent"],
        env=env,
    )
    assert vwap.exit_code == 0, vwap.output
    assert [r["symbol"] for r in json.loads(vwap.stdout)] == ["BTCUSDT", "ETHUSDT"]
    klines = runner.invoke(app, ["klines", "BTCUSDT", "-i", "1m", "-f", "json"], env=env)
    assert klines.exit_code == 0, klines.output
    assert [r["close"] for r in json.loads(klines.stdout)] == ["1.50000000"] * 3
    zero = json.loads(runner.invoke(app, ["klines", "ETHUSDT", "-f", "json"], env=env).stdout)
    assert zero[0]["volume"] == "0.00000000"  # never 0E-8
