"""CLI queries can be stopped (Ctrl-C, a timeout), print untrusted text literally and say when they are partial.

Issue 10 §7 (606 s cross join that ignored Ctrl-C), §8 (symbols printed unescaped), §3 (truncation shown),
issue 12 §5 (zero decimals as 0E-8). Real subprocesses, real signals, a real local lake and broker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from k2.bus.producer import MarketDataProducer
from k2.cli import app
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.model import TRADE
from k2.model.values import now_micros, to_unscaled

from .helpers import REPO, csv_rows, csv_trades, lake_settings, load

CROSS_JOIN = "SELECT count(*) FROM trades a, trades b, trades c, trades d"


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = Path(tmp_path_factory.mktemp("cli-safety"))
    load(lake_settings(root), "trades", csv_trades(csv_rows()))
    return root / "k2"


def _k2(lake: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    environment.update(
        K2_DATA_DIR=str(lake),
        K2_CONFIG_FILE=str(REPO / "tests" / "k2-test.toml"),
        PYTHONPATH=str(REPO / "src"),
        **env,
    )
    return subprocess.Popen(
        [sys.executable, "-m", "k2.cli", *args],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_ctrl_c_cancels_a_running_sql_query(lake: Path) -> None:
    proc = _k2(lake, "sql", CROSS_JOIN, K2_LOG_LEVEL="DEBUG")
    assert proc.stderr is not None
    lines: list[str] = []
    running = threading.Event()

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "cli query running" in line:
                running.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    assert running.wait(120), "".join(
        lines
    )  # start-up is slow on a loaded machine; the cross join takes hours
    time.sleep(1.0)  # inside DuckDB now
    assert proc.poll() is None, "".join(lines)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail("k2 sql ignored Ctrl-C for 15 s")
    reader.join(5)
    err = "".join(lines)
    assert time.monotonic() - signalled < 10
    assert proc.returncode == 130, err
    assert "cancelled by Ctrl-C" in err


def test_cli_query_timeout_setting(lake: Path) -> None:
    started = time.monotonic()
    proc = _k2(lake, "sql", CROSS_JOIN, K2_QUERY_CLI_TIMEOUT_SECONDS="1")
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("k2 sql ran past K2_QUERY_CLI_TIMEOUT_SECONDS=1 for 120 s")
    assert proc.returncode == 124, err
    assert "K2_QUERY_CLI_TIMEOUT_SECONDS" in err
    assert time.monotonic() - started < 60  # start-up on a loaded machine + 1 s, not hours


runner = CliRunner()


def _invoke(lake: Path, *args: str, **env: str) -> Any:
    return runner.invoke(app, list(args), env={"K2_DATA_DIR": str(lake), **env})


def test_untrusted_text_printed_literally(lake: Path) -> None:
    hostile = "[bold red]X[/bold red]\x1b[2J"
    result = _invoke(lake, "sql", "SELECT ? AS s", "--param", hostile)
    assert result.exit_code == 0, result.output
    assert "[bold red]X[/bold red]" in result.stdout  # markup shown, not rendered
    assert "\x1b" not in result.stdout and "\\x1b[2J" in result.stdout
    error = _invoke(lake, "trades", hostile, "--no-include-recent")
    assert error.exit_code == 2
    assert "\x1b" not in error.output and "[bold red]X[/bold red]" in error.output


def test_zero_decimals_in_fixed_notation(lake: Path) -> None:
    query = "SELECT CAST(0 AS DECIMAL(18,8)) AS z, CAST(0.00000001 AS DECIMAL(18,8)) AS tiny"
    csv_text = _invoke(lake, "sql", query, "-f", "csv").stdout
    assert "0.00000000" in csv_text and "0.00000001" in csv_text and "E-8" not in csv_text
    rows = json.loads(_invoke(lake, "sql", query, "-f", "json").stdout)
    assert rows == [{"z": "0.00000000", "tiny": "0.00000001"}]
    table = _invoke(lake, "sql", query).stdout
    assert "0.00000000" in table and "E-8" not in table


def test_truncated_hybrid_read_is_printed(settings: Settings, unique: str) -> None:
    exchange = f"ct{unique}"
    ensure_tables(load_catalog(settings), settings)
    base = now_micros() - 60_000_000
    rows = [
        {
            "exchange": exchange,
            "symbol": "BTCUSDT",
            "instrument": "BTC-USDT",
            "asset_class": "crypto",
            "trade_id": i,
            "price": to_unscaled("100"),
            "quantity": to_unscaled("1"),
            "quote_quantity": None,
            "side": "BUY",
            "exchange_ts": base + i,
            "receipt_ts": base + i,
            "ingest_ts": None,
            "source_sequence": None,
            "conditions": [],
            "vendor": {},
        }
        for i in range(1, 31)
    ]
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, rows)
    env = {
        "K2_DATA_DIR": str(settings.data_dir),
        "K2_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "K2_SCHEMA_REGISTRY_URL": settings.registry_url,
        "K2_QUERY_RECENT_MAX_ROWS": "10",
    }
    result = runner.invoke(app, ["trades", "BTCUSDT", "-e", exchange, "-f", "csv"], env=env)
    assert result.exit_code == 0, result.output
    assert len(result.stdout.strip().splitlines()) == 11  # header + the 10 rows read
    assert "partial result" in result.stderr and "max_rows" in result.stderr
