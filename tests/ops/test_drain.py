"""`k2 down`'s drain check: what the landing has not landed yet, exact despite Tansu's approximate watermarks.

Real Tansu broker, K2's registry, the real landing consumer; and `k2 up` on memory storage warns.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from k2.bus import MarketDataProducer
from k2.bus.broker import tansu_process
from k2.config import Settings
from k2.landing import LandingConsumer
from k2.model import TRADE
from k2.ops.drain import drain, pending
from k2.telemetry.procs import free_port, pid_alive
from tests.landing.helpers import make_trades
from tests.support.broker import stop_memory_broker
from tests.support.stack import k2, stack_env

TOPIC = "market.crypto.trades.binance"


@pytest.fixture
def own_broker(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """``settings`` on a broker of its own (the landing topics are named as in production)."""
    port = free_port()
    proc = tansu_process(port, tmp_path / "tansu.log").start()
    try:
        yield settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{port}"})
    finally:
        stop_memory_broker(proc)


def test_pending_counts_every_unlanded_message_then_nothing_once_landed(own_broker: Settings) -> None:
    settings = own_broker
    rows = make_trades("BTCUSDT", 1, 3_000) + make_trades("ETHUSDT", 1, 7)
    with MarketDataProducer(settings) as producer:
        for row in rows:
            producer.send(TRADE, row)
    left = pending(settings)
    assert {topic for topic, _ in left} == {TOPIC}
    # Each partition holding messages is pending (the probe reads it even where the watermark says less).
    assert sum(left.values()) >= 2 and len(left) == 2, left
    started = time.monotonic()
    after = drain(settings, 1.0)  # nothing lands them: the bound is hit and what is left comes back
    assert set(after) == set(left) and time.monotonic() - started < 30
    landing = LandingConsumer(settings)
    try:
        landing.subscribe()
        deadline = time.monotonic() + 90
        while landing.stats.landed < len(rows) and time.monotonic() < deadline:
            landing.poll_once(0.5)
        landing.flush()
    finally:
        landing.close()
    assert landing.stats.landed == len(rows)
    assert drain(settings, 30.0) == {}


def test_up_with_memory_storage_warns_and_starts_no_storage(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "k2", broker_storage="memory://tansu/")
    try:
        result = k2(["up", "--part", "broker", "--part", "storage"], env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert (
            "warning: K2_BROKER_STORAGE=memory://tansu/" in result.stdout
            and "lost on `k2 down`" in result.stdout
        )
        assert (
            "broker     started" in result.stdout and "storage    " not in result.stdout
        )  # no SeaweedFS part
        pid = int((tmp_path / "k2" / "run" / "broker.pid").read_text().split()[0])
    finally:
        down = k2(["down", "--force"], env)
    assert down.returncode == 0 and not pid_alive(pid), down.stdout + down.stderr
