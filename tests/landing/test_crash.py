"""Crash tests: SIGKILL the landing consumer at random points while real-shaped trades flow.

The table must end up holding exactly the produced key set (nothing missing, nothing twice) and the gap
ledger must stay empty. The consumers are real processes (``python -m k2.cli land``), killed with SIGKILL
at random moments after they joined the group (so kills fall while consuming, buffering, decoding and
committing), and restarted each time. Trades are produced concurrently by a thread of the test process.

Size: 500,000 trades by default (the issue's figure); ``K2_CRASH_TEST_TRADES`` overrides it for a quick
local run.
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
from typing import Any

import pytest
from pyiceberg.table import Table

from k2.bus import MarketDataProducer
from k2.bus.broker import tansu_process
from k2.bus.topics import ensure_topics
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.landing import LandingConsumer
from k2.landing.ledger import current_gaps
from k2.model import TRADE
from k2.telemetry.procs import free_port
from tests.landing.helpers import TEN_SYMBOLS, make_trades, table_keys
from tests.support.broker import stop_memory_broker

pytestmark = pytest.mark.slow

TOTAL = int(os.environ.get("K2_CRASH_TEST_TRADES", "500000"))
KILLS = 10
PRODUCE_SECONDS = 40.0
STEPS_PER_SEND = 50  # 500 rows (10 symbols) a send: 1/100 of the schedule at the default size
TOPIC = "market.crypto.trades.binance"
SYMBOLS = TEN_SYMBOLS


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update(
        K2_DATA_DIR=str(settings.data_dir),
        K2_KAFKA_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
        K2_SCHEMA_REGISTRY_URL=settings.registry_url,
        K2_CONSUMER_GROUP=settings.consumer_group,
        K2_CONSUMER_SESSION_TIMEOUT_MS=str(settings.session_timeout_ms),
        K2_LANDING_COMMIT_ROWS=str(settings.landing_commit_rows),
        K2_LANDING_COMMIT_INTERVAL_SECONDS=str(settings.landing_commit_interval_seconds),
        K2_LANDING_METRICS_PORT="0",
        K2_CONFIG_FILE=os.environ["K2_CONFIG_FILE"],
    )
    return env


def _start(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "k2.cli", "land"], env=_env(settings), stdout=out, stderr=subprocess.STDOUT
        )


def _assignments(log: Path) -> int:
    return log.read_text(errors="replace").count("[info     ] assigned") if log.exists() else 0


def _produce(
    settings: Settings,
    streams: list[list[dict[str, Any]]],
    done: threading.Event,
    failed: list[BaseException],
) -> None:
    """Produce the symbols interleaved, paced to last about PRODUCE_SECONDS: STEPS_PER_SEND rows of each
    symbol at a time, encoded column-wise by ``send_many`` (per-row ``send`` cost ~60% more CPU)."""
    try:
        rows_per_symbol = len(streams[0])
        rate = rows_per_symbol * len(SYMBOLS) / PRODUCE_SECONDS
        with MarketDataProducer(settings) as producer:
            started = time.monotonic()
            sent = 0
            for first in range(0, rows_per_symbol, STEPS_PER_SEND):
                steps = range(first, min(first + STEPS_PER_SEND, rows_per_symbol))
                sent += producer.send_many(TRADE, [stream[step] for step in steps for stream in streams])
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0.05:
                    time.sleep(ahead)
        done.set()
    except BaseException as exc:  # reported by the test thread
        failed.append(exc)


def _expected(rows_per_symbol: int) -> list[tuple[str, str, int]]:
    return sorted(
        ("binance", symbol, 1_000_000 * (i + 1) + n)
        for i, symbol in enumerate(SYMBOLS)
        for n in range(rows_per_symbol)
    )


def _row_count(table: Table) -> int:
    table.refresh()
    snapshot = table.current_snapshot()
    return 0 if snapshot is None or snapshot.summary is None else int(snapshot.summary["total-records"])


def _run_crash_test(settings: Settings, tmp_path: Path, consumers: int) -> None:
    rows_per_symbol = TOTAL // len(SYMBOLS)
    tables = ensure_tables(load_catalog(settings), settings)
    streams = [
        make_trades(symbol, 1_000_000 * (i + 1), rows_per_symbol, seed=i) for i, symbol in enumerate(SYMBOLS)
    ]
    ensure_topics(settings, [TOPIC], partitions=max(settings.topic_partitions, 2 * consumers))
    done = threading.Event()
    failed: list[BaseException] = []
    producer = threading.Thread(target=_produce, args=(settings, streams, done, failed), daemon=True)
    producer.start()
    rng = random.Random(20261122 + consumers)
    logs = [tmp_path / f"land{i}.log" for i in range(consumers)]
    procs = [_start(settings, log) for log in logs]
    kill_points: list[float] = []
    started = time.monotonic()
    for kill in range(KILLS):
        victim = kill % consumers  # each process in turn; the others keep landing through the rebalance
        seen = _assignments(logs[victim])
        deadline = time.monotonic() + 60
        while _assignments(logs[victim]) == seen and time.monotonic() < deadline:
            assert procs[victim].poll() is None, logs[victim].read_text()[-3000:]
            time.sleep(0.05)
        time.sleep(rng.uniform(0.1, 2.0))  # a random point in the consume/decode/commit cycle
        procs[victim].kill()
        procs[victim].wait()
        kill_points.append(round(time.monotonic() - started, 1))
        procs[victim] = _start(settings, logs[victim])
    producer.join(timeout=300)
    assert not failed, failed
    assert done.is_set(), "the producer did not finish"
    expected = _expected(rows_per_symbol)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and _row_count(tables["trades"]) < len(expected):
        assert all(p.poll() is None for p in procs), [log.read_text()[-3000:] for log in logs]
        time.sleep(1)
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=60)
    # Anything still unlanded (there should be nothing) is drained by one in-process consumer.
    drain = LandingConsumer(settings).run(idle_exit_seconds=3)
    keys = table_keys(tables["trades"])
    assert len(keys) == len(expected), (
        f"expected {len(expected)} rows, found {len(keys)} ({len(set(keys))} distinct)"
    )
    assert keys == expected
    assert current_gaps(tables["gaps"]).num_rows == 0
    commits = sum(1 for s in tables["trades"].snapshots())
    print(
        f"{consumers} consumer(s): SIGKILLs at {kill_points} s; {len(keys)} rows exactly once in {commits} commits; drain landed {drain.landed}"
    )


@pytest.fixture
def crash_settings(tmp_path: Path, schema_registry: str) -> Iterator[Settings]:
    """A private broker: the crash test's consumers land every topic they see."""
    port = free_port()
    broker = tansu_process(port, tmp_path / "tansu.log").start()
    yield Settings(
        data_dir=tmp_path / "k2",
        kafka_bootstrap_servers=f"127.0.0.1:{port}",
        schema_registry_url=schema_registry,
        consumer_session_timeout_ms=1000,
        landing_metrics_port=0,
        landing_commit_rows=25_000,
        landing_commit_interval_seconds=0.5,
    )
    stop_memory_broker(broker)


def test_sigkill_one_consumer(crash_settings: Settings, tmp_path: Path, unique: str) -> None:
    _run_crash_test(
        crash_settings.model_copy(update={"consumer_group": f"crash1-{unique}"}), tmp_path, consumers=1
    )


def test_sigkill_each_of_four_consumers_on_eight_partitions(
    crash_settings: Settings, tmp_path: Path, unique: str
) -> None:
    """Four landing processes in one group on 8 partitions (issue 17 §4): ten SIGKILLs, each process in
    turn, each followed by a rebalance; every row lands exactly once."""
    _run_crash_test(
        crash_settings.model_copy(update={"consumer_group": f"crash4-{unique}", "topic_partitions": 8}),
        tmp_path,
        consumers=4,
    )
