"""The query CLI: formats, files, plots, errors (typer CliRunner over a real local lake)."""

from __future__ import annotations

import csv
import io
import json
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from k2.cli import app

from .helpers import csv_rows, csv_trades, lake_settings, load

runner = CliRunner()


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = Path(tmp_path_factory.mktemp("cli"))
    settings = lake_settings(root)
    raw = csv_rows()
    load(settings, "trades", csv_trades(raw[:1000]))
    load(settings, "trades", csv_trades(raw[1000:]))
    return root / "k2"


@pytest.fixture
def env(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K2_DATA_DIR", str(lake))


def run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


RANGE = ("--start", "2021-01-03T00:00:00Z", "--end", "2021-01-03T00:01:00Z")


def test_trades_csv_json_parquet(env: None, tmp_path: Path) -> None:
    raw = csv_rows()
    text = run("trades", "BTCUSDT", *RANGE, "--format", "csv", "--no-include-recent")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 1830
    assert [Decimal(r["price"]) for r in rows[:5]] == [Decimal(r["price"]) for r in raw[:5]]
    data = json.loads(run("trades", "BTCUSDT", *RANGE, "-f", "json", "--limit", "3", "--no-include-recent"))
    assert [d["trade_id"] for d in data] == [int(r["trade_id"]) for r in raw[:3]]
    assert data[0]["price"] == raw[0]["price"]  # exact decimal text, not a float
    out = tmp_path / "t.parquet"
    run("trades", "BTCUSDT", *RANGE, "-f", "parquet", "-o", str(out), "--no-include-recent")
    assert pq.read_table(out).num_rows == 1830
    table = run("trades", "BTCUSDT", *RANGE, "--limit", "2", "--no-include-recent")
    assert raw[0]["trade_id"] in table and "price" in table


def test_bars_with_png_and_html_plots(env: None, tmp_path: Path) -> None:
    png, page = tmp_path / "bars.png", tmp_path / "bars.html"
    data = json.loads(
        run(
            "bars",
            "BTCUSDT",
            "--interval",
            "5s",
            *RANGE,
            "-f",
            "json",
            "--plot",
            str(png),
            "--no-include-recent",
        )
    )
    assert len(data) == 12 and sum(d["trade_count"] for d in data) == 1830
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
    run(
        "bars", "BTCUSDT", "--interval", "5s", *RANGE, "-f", "csv", "--plot", str(page), "--no-include-recent"
    )
    svg = page.read_text()
    assert svg.startswith("<!doctype html>") and svg.count("<g><title>") == 12
    one = json.loads(run("bars", "BTCUSDT", *RANGE, "-f", "json", "--no-include-recent"))
    assert len(one) == 1 and one[0]["trade_count"] == 1830
    ticks = json.loads(
        run("bars", "BTCUSDT", "--kind", "tick", "--size", "1000", "-f", "json", "--no-include-recent")
    )
    assert [t["trade_count"] for t in ticks] == [1000, 830]


def test_vwap_snapshots_sql(env: None, tmp_path: Path) -> None:
    raw = csv_rows()
    vwap = json.loads(run("vwap", "BTCUSDT", *RANGE, "--twap", "-f", "json", "--no-include-recent"))
    expected = sum(Decimal(r["price"]) * Decimal(r["qty"]) for r in raw) / sum(Decimal(r["qty"]) for r in raw)
    assert (
        vwap[0]["vwap"] == str(expected.quantize(Decimal("0.00000001"), ROUND_HALF_UP))
        and vwap[0]["twap"] > 0
    )  # exact text
    # After the last trade: no VWAP row, while the TWAP has the prevailing price; the table stays consistent.
    after = ("--start", "2021-01-03T00:05:00Z", "--end", "2021-01-03T00:06:00Z")
    assert json.loads(run("vwap", "BTCUSDT", *after, "--twap", "-f", "json", "--no-include-recent")) == []
    snaps = json.loads(run("snapshots", "trades", "-f", "json"))
    assert [s["added_rows"] for s in snaps] == [1000, 830]
    first = str(snaps[0]["snapshot_id"])
    assert (
        len(list(csv.DictReader(io.StringIO(run("trades", "BTCUSDT", "--as-of", first, "-f", "csv")))))
        == 1000
    )
    out = tmp_path / "q.csv"
    run(
        "sql",
        "SELECT side, count(*) AS n FROM trades WHERE symbol = ? GROUP BY side ORDER BY side",
        "-p",
        "BTCUSDT",
        "-f",
        "csv",
        "-o",
        str(out),
    )
    counts = {r["side"]: int(r["n"]) for r in csv.DictReader(out.open())}
    assert counts == {
        "BUY": sum(r["is_buyer_maker"] == "False" for r in raw),
        "SELL": sum(r["is_buyer_maker"] == "True" for r in raw),
    }
    run("snapshots", "-o", str(tmp_path / "s.txt"))
    assert str(snaps[1]["snapshot_id"]) in (tmp_path / "s.txt").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("trades", "NOPE", "--no-include-recent"), "found 'NOPE'"),
        (
            ("trades", "BTCUSDT", "--start", "2021-01-03T00:01:00Z", "--end", "2021-01-03T00:00:00Z"),
            "expected start before end",
        ),
        (("trades", "BTCUSDT", "--start", "2021-01-03T00:00:00"), "naive"),
        (("bars", "BTCUSDT", "--interval", "7m", "--no-include-recent"), "interval: expected"),
        (("sql", "DELETE FROM trades"), "expected one read-only SELECT"),
        (("trades", "BTCUSDT", "-f", "parquet", "--no-include-recent"), "expected --output FILE"),
        (("bars", "BTCUSDT", "--plot", "x.gif", "--no-include-recent"), "expected --plot FILE"),
    ],
)
def test_errors_exit_non_zero_with_a_message(env: None, args: tuple[str, ...], message: str) -> None:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 2
    assert message in result.output.replace("\n", " ")
