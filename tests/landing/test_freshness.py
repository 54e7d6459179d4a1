"""Freshness p50/p99 (issue 15 §3): the landing's window of produced -> committed latencies, its
/metrics gauge and the line ``k2 status`` prints, against a real ``k2 land`` process over Tansu."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from k2.bus import MarketDataProducer
from k2.bus.topics import ensure_topics, topic_name
from k2.config import Settings
from k2.landing.freshness import SAMPLES_PER_COMMIT, FreshnessWindow
from k2.model import TRADE
from k2.ops.freshness import read_landing_freshness, render_freshness
from k2.ops.status import collect_status
from k2.telemetry.procs import free_port
from tests.landing.helpers import make_trades


def test_window_quantiles_match_numpy_and_memory_is_bounded() -> None:
    rng = np.random.default_rng(3)
    window = FreshnessWindow(window_seconds=300, max_commits=50)
    everything = []
    for _ in range(40):  # 40 commits of 10,000 rows: 256 samples kept per commit
        latency = rng.exponential(0.8, 10_000)
        everything.append(latency)
        window.record("trades", (10_000_000 - latency * 1e6).astype(np.int64), committed_us=10_000_000)
    p50, p99 = window.quantiles("trades")  # type: ignore[misc]
    exact = np.percentile(np.concatenate(everything), [50, 99])
    assert abs(p50 - exact[0]) < 0.02 and abs(p99 - exact[1]) < 0.1
    assert window.rows("trades") == 400_000
    assert sum(c.latencies.size for c in window._commits["trades"]) == 40 * SAMPLES_PER_COMMIT
    for _ in range(20):  # the commit count is bounded too
        window.record("trades", np.array([9_000_000]), committed_us=10_000_000)
    assert len(window._commits["trades"]) == 50
    assert window.quantiles("quotes") is None


def test_window_forgets_commits_older_than_the_window() -> None:
    window = FreshnessWindow(window_seconds=0.2)
    window.record("trades", np.array([1_000_000, 0]), committed_us=3_000_000)  # 0: no ingest time, skipped
    assert window.quantiles("trades") == (2.0, 2.0)
    deadline = time.monotonic() + 10
    while window.quantiles("trades") is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert window.quantiles("trades") is None


def _land_process(settings: Settings, log: Path, topic: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update(
        K2_DATA_DIR=str(settings.data_dir),
        K2_KAFKA_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
        K2_SCHEMA_REGISTRY_URL=settings.registry_url,
        K2_CONSUMER_GROUP=settings.consumer_group,
        K2_CONSUMER_SESSION_TIMEOUT_MS=str(settings.session_timeout_ms),
        K2_LANDING_COMMIT_INTERVAL_SECONDS=str(settings.landing_commit_interval_seconds),
        K2_LANDING_METRICS_PORT=str(settings.landing_metrics_port),
        K2_LANDING_SEQUENTIAL_EXCHANGES=settings.landing_sequential_exchanges,
    )
    if "K2_CONFIG_FILE" in os.environ:
        env["K2_CONFIG_FILE"] = os.environ["K2_CONFIG_FILE"]
    with open(log, "ab") as out:
        return subprocess.Popen(
            # Its own topic only: the session's broker holds other tests' (older) trades.
            [sys.executable, "-m", "k2.cli", "land", "--topic", topic],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait(what: str, check, timeout: float = 90.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {what} within {timeout:.0f} s")
        time.sleep(0.1)


def test_landing_service_reports_freshness_p50_p99_to_k2_status(
    settings: Settings, unique: str, tmp_path: Path
) -> None:
    exchange = f"fr{unique}"
    settings = settings.model_copy(
        update={
            "consumer_group": f"fresh-{unique}",
            "landing_metrics_port": free_port(),
            "landing_commit_interval_seconds": 1.0,
            "landing_sequential_exchanges": exchange,
        }
    )
    topic = topic_name("crypto", "trades", exchange)
    ensure_topics(settings, [topic])
    log = tmp_path / "land.log"
    land = _land_process(settings, log, topic)
    try:
        _wait("the landing to join", lambda: "assigned" in log.read_text(errors="replace"))
        # Serving /metrics, nothing landed: no figure, and k2 status says n/a.
        assert read_landing_freshness(settings) == {}
        assert collect_status(settings)["landing_freshness"] == {}
        assert "n/a" in render_freshness({})
        rows = make_trades("BTCUSDT", 1, 600, exchange=exchange)
        sent = time.time()
        with MarketDataProducer(settings) as producer:
            for i, row in enumerate(rows):
                producer.send(TRADE, row)
                if i % 200 == 199:
                    producer.flush()
                    time.sleep(0.5)  # three bursts: rows of different ages in the window
        found = _wait("freshness figures for trades", lambda: read_landing_freshness(settings).get("trades"))
        elapsed = time.time() - sent
        shown = collect_status(settings)["landing_freshness"]
    finally:
        land.terminate()
        land.wait(60)
    # Same machine, one clock: produced -> committed is positive and no older than the test's own wait.
    # The 1 s commit interval makes the oldest rows of a commit wait about that long.
    assert 0 < found["p50_s"] <= found["p99_s"] <= elapsed, (found, elapsed)
    assert found["p99_s"] >= 0.5, found
    assert shown["trades"]["p99_s"] >= found["p99_s"] * 0.5, shown  # k2 status reads the same gauge
    line = render_freshness({"trades": found})
    assert f"p50 {found['p50_s']:.2f} s" in line and f"p99 {found['p99_s']:.2f} s" in line


def test_first_commit_after_assignment_does_not_wait_for_the_commit_interval(
    settings: Settings, unique: str
) -> None:
    """A fresh stack's first rows are queryable at once, later commits keep the interval: with a 60 s
    interval the first trade lands in about a second, the second one waits for the interval (or the stop)."""
    from k2.landing import LandingConsumer

    exchange = f"fc{unique}"
    settings = settings.model_copy(
        update={"consumer_group": f"first-{unique}", "landing_commit_interval_seconds": 60.0}
    )
    topic = topic_name("crypto", "trades", exchange)
    consumer = LandingConsumer(settings, topics=[topic])
    commits: list[float] = []
    consumer.on_commit = lambda short, landed: commits.append(time.monotonic())
    runner = threading.Thread(target=consumer.run, kwargs={"max_seconds": 120}, daemon=True)
    runner.start()
    try:
        _wait("the landing to be assigned its partitions", lambda: consumer._assigned)
        rows = make_trades("BTCUSDT", 1, 2, exchange=exchange)
        with MarketDataProducer(settings) as producer:
            producer.send(TRADE, rows[0])
        sent = time.monotonic()
        _wait("the first commit", lambda: commits, timeout=30)
        assert commits[0] - sent < 20, commits[0] - sent  # before: the 60 s interval
        with MarketDataProducer(settings) as producer:
            producer.send(TRADE, rows[1])
        _wait("the second trade to be consumed", lambda: consumer.stats.consumed >= 2, timeout=30)
        time.sleep(1.5)  # a few poll cycles: nothing is committed before the interval
        assert len(commits) == 1
    finally:
        consumer.stop()
        runner.join(60)
    assert consumer.stats.landed == 2 and len(commits) == 2  # the second one at the stop's flush
