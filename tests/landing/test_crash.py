"""Crash tests: SIGKILL the landing consumer at random points while real-shaped trades flow.

The table must end up holding exactly the produced key set (nothing missing, nothing twice) and the gap
ledger must stay empty. The consumers are real processes (`k2 land`), killed with SIGKILL.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.landing.helpers import make_trades, table_keys

from k2.bus import MarketDataProducer
from k2.bus.broker import tansu_process
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.landing import LandingConsumer
from k2.landing.ledger import current_gaps
from k2.model import TRADE
from k2.ops.procs import free_port

pytestmark = pytest.mark.slow

TOTAL = int(os.environ.get("K2_CRASH_TEST_TRADES", "500000"))
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "LTCUSDT", "DOTUSDT", "TRXUSDT"]


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update(
        K2_DATA_DIR=str(settings.data_dir),
        K2_KAFKA_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
        K2_SCHEMA_REGISTRY_URL=settings.registry_url,
        K2_CONSUMER_GROUP=settings.consumer_group,
        K2_CONSUMER_SESSION_TIMEOUT_MS=str(settings.consumer_session_timeout_ms),
        K2_LANDING_COMMIT_ROWS=str(settings.landing_commit_rows),
        K2_LANDING_COMMIT_INTERVAL_SECONDS=str(settings.landing_commit_interval_seconds),
        K2_LANDING_METRICS_PORT="0",
        K2_CONFIG_FILE=os.environ["K2_CONFIG_FILE"],
    )
    return env


def _start(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "k2.cli", "land"], env=_env(settings), stdout=out, stderr=subprocess.STDOUT)


def _produce(settings: Settings, rows_per_symbol: int, done: threading.Event, rate_per_s: float) -> None:
    """Produce interleaved symbols at roughly ``rate_per_s`` messages/s."""
    streams = [make_trades(symbol, 1_000_000 * (i + 1), rows_per_symbol, seed=i) for i, symbol in enumerate(SYMBOLS)]
    with MarketDataProducer(settings) as producer:
        started = time.monotonic()
        sent = 0
        for step in range(rows_per_symbol):
            for stream in streams:
                producer.send(TRADE, stream[step])
            sent += len(streams)
            ahead = sent / rate_per_s - (time.monotonic() - started)
            if ahead > 0.05:
                time.sleep(ahead)
    done.set()


def _expected(rows_per_symbol: int) -> list[tuple[str, str, int]]:
    return sorted(
        ("binance", symbol, 1_000_000 * (i + 1) + n) for i, symbol in enumerate(SYMBOLS) for n in range(rows_per_symbol)
    )


def _run_crash_test(settings: Settings, tmp_path: Path, consumers: int, kills: int) -> None:
    rows_per_symbol = TOTAL // len(SYMBOLS)
    catalog = load_catalog(settings)
    tables = ensure_tables(catalog, settings)
    done = threading.Event()
    # Slow enough that the kills land while trades are still flowing.
    producer = threading.Thread(target=_produce, args=(settings, rows_per_symbol, done, TOTAL / 25.0), daemon=True)
    producer.start()
    rng = random.Random(20261122)
    procs = [_start(settings, tmp_path / f"land{i}.log") for i in range(consumers)]
    killed = 0
    while killed < kills:
        time.sleep(rng.uniform(1.0, 3.5))
        victim = 0  # with two consumers, the first one is killed repeatedly; the second keeps running
        procs[victim].kill()
        procs[victim].wait()
        killed += 1
        procs[victim] = _start(settings, tmp_path / f"land{victim}.log")
    producer.join(timeout=600)
    assert done.is_set(), "the producer did not finish"
    # Let the surviving processes land the rest, then stop them and drain with one in-process consumer.
    deadline = time.monotonic() + 300
    expected = _expected(rows_per_symbol)
    while time.monotonic() < deadline and len(table_keys(tables["trades"])) < len(expected):
        time.sleep(2)
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=60)
    LandingConsumer(settings).run(idle_exit_seconds=3)
    keys = table_keys(tables["trades"])
    assert len(keys) == len(expected), f"expected {len(expected)} rows, found {len(keys)} ({len(set(keys))} distinct)"
    assert keys == expected
    assert current_gaps(tables["gaps"]).num_rows == 0
    print(f"{consumers} consumer(s), {killed} SIGKILLs, {len(keys)} rows exactly once")


@pytest.fixture
def crash_settings(tmp_path: Path, schema_registry: str) -> Iterator[Settings]:
    """A private broker: the crash test's consumers land every topic they see."""
    port = free_port()
    broker = tansu_process(port, tmp_path / "tansu.log").start()
    yield Settings(
        data_dir=tmp_path / "k2", kafka_bootstrap_servers=f"127.0.0.1:{port}", schema_registry_url=schema_registry,
        consumer_session_timeout_ms=2000, landing_metrics_port=0,
    )
    broker.stop()


def test_sigkill_one_consumer(crash_settings: Settings, tmp_path: Path, unique: str) -> None:
    settings = crash_settings.model_copy(
        update={"consumer_group": f"crash1-{unique}", "landing_commit_rows": 20_000, "landing_commit_interval_seconds": 0.5}
    )
    _run_crash_test(settings, tmp_path, consumers=1, kills=10)


def test_sigkill_one_of_two_consumers(crash_settings: Settings, tmp_path: Path, unique: str) -> None:
    settings = crash_settings.model_copy(
        update={"consumer_group": f"crash2-{unique}", "landing_commit_rows": 20_000, "landing_commit_interval_seconds": 0.5}
    )
    _run_crash_test(settings, tmp_path, consumers=2, kills=10)
