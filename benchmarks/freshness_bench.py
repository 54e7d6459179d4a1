"""Freshness benchmark: how long a trade takes from the exchange to a query (issue 15 §3).

The real Binance capture (19,904 BTCUSDT trades over ~11 minutes, plus bookTicker) is replayed by the
fake exchange at real-time pace (``--speed 1``; or a stated speed-up) to ``k2 stream binance`` (a
real live-runner process producing to Kafka); ``k2 land`` (a real landing process) lands it in
Iceberg with ``landing_commit_interval_seconds`` set per run (``--intervals 1,5``: 1 s and the default).

**The clock.** The capture's exchange times are from 2024, so latency starts at ``receipt_ts``: the
wall-clock time (stored in every row) at which ``k2 stream`` took the WebSocket frame off the socket,
milliseconds after the fake exchange sent it at its paced time. It ends at the wall-clock time the
query that *first returned the row* finished. Three readers poll side by side in this process:

* **Kafka (baseline)**: a plain consumer (no group) decoding the trades topic: receipt -> readable in
  Kafka (the producer's linger, the broker, the fetch): the floor under both paths below.
* **Iceberg**: ``Client.trades(include_recent=False)`` every ``--poll-ms``: receipt -> visible in Iceberg.
* **Hybrid**: ``Client.trades(include_recent=True)`` back to back (each read of the Kafka half reads up to
  the log end a fetch reported after it started, ``k2.query.recent``): receipt -> visible through the
  hybrid query.

The resolution of each figure is its reader's cycle (the poll interval, or one query's duration). Runs
only after the landing joined its group (the first-rows-after-``k2 up`` figure is a separate measurement).

    PYTHONPATH=src .venv/bin/python benchmarks/freshness_bench.py --seconds 60 --intervals 1,5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_stack import bench_stack, git_commit

from k2.bus import MarketDataProducer
from k2.bus.serde import AvroBatchDecoder, registry_client
from k2.bus.topics import ensure_topics, topic_name
from k2.config import Settings
from k2.model import TRADE
from k2.query.client import Client
from k2.sources.binance import iter_capture_trades
from k2.telemetry.procs import free_port

CAPTURE = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "binance"
    / "websocket"
    / "spot_btcusdt_20240808.gz"
)
TRADES = topic_name("crypto", "trades", "binance")
QUOTES = topic_name("crypto", "quotes", "binance")


@dataclass
class Seen:
    """First wall-clock time (µs) each trade id was returned by one reader, and its receipt time."""

    name: str
    first: dict[int, int] = field(default_factory=dict)
    receipt: dict[int, int] = field(default_factory=dict)
    cycles: int = 0
    errors: list[str] = field(default_factory=list)
    failed_after_rows: int = (
        0  # failed reads after the reader had returned rows (earlier: nothing landed yet)
    )
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ids: list[int], receipts: list[int], at_us: int) -> None:
        with self.lock:
            for trade_id, receipt in zip(ids, receipts, strict=True):
                if trade_id not in self.first:
                    self.first[trade_id] = at_us
                    self.receipt[trade_id] = receipt

    def ids(self) -> set[int]:
        with self.lock:
            return set(self.first)

    def latencies(self) -> np.ndarray:
        return np.array([self.first[i] - self.receipt[i] for i in self.first], dtype=np.int64) / 1e6


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.environ.get("PYTHONPATH", "src"),
        "K2_DATA_DIR": str(settings.data_dir),
        "K2_KAFKA_BOOTSTRAP_SERVERS": str(settings.kafka_bootstrap_servers),
        "K2_SCHEMA_REGISTRY_URL": str(settings.schema_registry_url),
        "K2_CONSUMER_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
        "K2_LOG_JSON": "true",
        **extra,
    }


def _k2(*args: str) -> list[str]:
    return [sys.executable, "-m", "k2.cli", *args]


def _wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"expected {what} within {timeout:.0f} s")
        time.sleep(0.05)


def kafka_reader(settings: Settings, seen: Seen, stop: threading.Event) -> None:
    """Baseline: every trade as soon as a plain consumer can read it from the topic."""
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": "bench-freshness-baseline",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    decoder = AvroBatchDecoder(registry_client(settings.registry_url), TRADE)
    parts = consumer.list_topics(TRADES, timeout=10).topics[TRADES].partitions
    consumer.assign([TopicPartition(TRADES, p, OFFSET_BEGINNING) for p in parts])
    try:
        while not stop.is_set():
            messages = [m for m in consumer.consume(1000, timeout=0.05) if m.error() is None]
            at = time.time_ns() // 1000
            if messages:
                table = decoder.decode([m.value() for m in messages]).table
                seen.add(table["trade_id"].to_pylist(), _micros(table["receipt_ts"]), at)
            seen.cycles += 1
    finally:
        consumer.close()


def _micros(column: object) -> list[int]:
    return [int(v) for v in column.cast("int64").to_pylist()]  # type: ignore[attr-defined]


def query_reader(settings: Settings, seen: Seen, stop: threading.Event, hybrid: bool, poll: float) -> None:
    """Iceberg (or hybrid) poller: the newest trades through K2's query client, every ``poll`` seconds."""
    client = Client(settings)
    start = datetime(2024, 8, 8, tzinfo=UTC)
    try:
        while not stop.is_set():
            began = time.monotonic()
            try:
                result = client.trades("BTCUSDT", start=start, include_recent=hybrid, limit=1_000_000)
            except Exception as exc:  # an early query before the first commit, say: recorded, not fatal
                seen.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                seen.failed_after_rows += bool(seen.first)
                time.sleep(poll)
                continue
            at = time.time_ns() // 1000
            table = result.table
            if table.num_rows:
                seen.add(table["trade_id"].to_pylist(), _micros(table["receipt_ts"]), at)
                newest = max(table["exchange_ts"].to_pylist())
                start = max(start, newest - timedelta(seconds=5))
            seen.cycles += 1
            time.sleep(max(0.0, poll - (time.monotonic() - began)))
    finally:
        client.close()


def landing_quantiles(port: int) -> str:
    """The landing's own freshness gauges (k2_landing_freshness_quantile_seconds), if it exports them."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3).read().decode()
    except OSError as exc:
        return f"unavailable ({exc})"
    found = [line for line in text.splitlines() if line.startswith("k2_landing_freshness_quantile_seconds{")]
    return "; ".join(found) or "not exported"


def run_once(interval: float, args: argparse.Namespace, root: Path, settings: Settings) -> list[str]:
    """One replay with one commit interval: the three readers' latency figures."""
    ensure_topics(settings, [TRADES, QUOTES])
    logs = root / f"interval-{interval:g}"
    logs.mkdir()
    metrics_port = free_port()
    fake_port = free_port()
    land_env = _env(
        settings,
        K2_LANDING_COMMIT_INTERVAL_SECONDS=str(interval),
        K2_LANDING_METRICS_PORT=str(metrics_port),
    )
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(logs / f"{name}.log", "wb") as out:
            procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env))
        return procs[-1]

    readers = [Seen("kafka"), Seen("iceberg"), Seen("hybrid")]
    stop = threading.Event()
    threads = [
        threading.Thread(target=kafka_reader, args=(settings, readers[0], stop), daemon=True),
        threading.Thread(
            target=query_reader, args=(settings, readers[1], stop, False, args.poll_ms / 1000), daemon=True
        ),
        threading.Thread(target=query_reader, args=(settings, readers[2], stop, True, 0.0), daemon=True),
    ]
    try:
        spawn("land", _k2("land"), land_env)
        _wait_for("the landing to join", lambda: b'"assigned"' in (logs / "land.log").read_bytes(), 120)
        spawn(
            "fake",
            _k2("fake-exchange", "serve", "--port", str(fake_port), "--speed", str(args.speed)),
            {**os.environ},
        )
        time.sleep(1.0)
        for thread in threads:
            thread.start()
        stream = spawn(
            "stream",
            _k2("stream", "binance", "--symbols", "BTCUSDT", "--no-depth", "--url", f"ws://127.0.0.1:{fake_port}",
                "--rest-url", f"http://127.0.0.1:{fake_port}"),
            _env(settings),
        )  # fmt: skip
        time.sleep(args.seconds)
        stream.send_signal(signal.SIGTERM)
        stream.wait(60)
        _wait_for(
            "every trade read from Kafka to be visible in Iceberg and through the hybrid query",
            lambda: bool(readers[0].ids()) and all(readers[0].ids() <= r.ids() for r in readers[1:]),
            max(60.0, 4 * interval + 30),
        )
        landing_own = landing_quantiles(metrics_port)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    lines = [
        f"commit interval {interval:g} s: {len(readers[0].first):,} trades received in {args.seconds:g} s"
    ]
    for seen in readers:
        lat = seen.latencies()
        lines.append(
            f"  receipt -> {seen.name:8s}: p50 {np.percentile(lat, 50):6.3f} s  p99 {np.percentile(lat, 99):6.3f} s"
            f"  max {lat.max():6.3f} s  ({len(lat):,} trades, {seen.cycles:,} reads, {len(seen.errors)} failed, {seen.failed_after_rows} of them after the first rows)"
        )
    lines.append(f"  landing's own gauges: {landing_own}")
    lines.append(f"  {commit_stats((logs / 'land.log').read_text(errors='replace'))}")
    for seen in readers:
        if seen.errors:
            lines.append(f"  {seen.name} failed reads, first: {seen.errors[0]}")
    return lines


def commit_stats(log: str) -> str:
    """The landing's trades commits: how many, how long the Iceberg append took, how far apart they were."""
    commits = [
        json.loads(line) for line in log.splitlines() if '"committed"' in line and line.startswith("{")
    ]
    trades = [c for c in commits if c.get("table") == "trades"]
    if not trades:
        return "landing: no trades commit logged"
    seconds = np.array([c["seconds"] for c in trades])
    stamps = np.array([datetime.fromisoformat(c["timestamp"]).timestamp() for c in trades])
    gaps = np.diff(stamps) if len(stamps) > 1 else np.array([0.0])
    return (
        f"landing: {len(trades)} trades commits, append p50 {np.median(seconds):.3f} s max {seconds.max():.3f} s; "
        f"commits apart p50 {np.median(gaps):.2f} s max {gaps.max():.2f} s"
    )


def cold_start(args: argparse.Namespace) -> list[str]:
    """First rows after a cold start: ``k2 land`` started as ``k2 up`` does (returns once its /metrics port
    answers), then a producer sends one trade every 100 ms to a topic that does not exist yet (as ``k2
    demo``/``k2 stream`` do); time from sending the first trade to the first query that returns it."""
    overrides = (
        {} if args.session_timeout_ms is None else {"consumer_session_timeout_ms": args.session_timeout_ms}
    )
    with bench_stack(**overrides) as (root, settings):
        if args.session_timeout_ms is None:
            settings = settings.model_copy(
                update={"consumer_session_timeout_ms": Settings().session_timeout_ms}
            )
        port = free_port()
        env = _env(settings, K2_LANDING_METRICS_PORT=str(port))
        with open(root / "land.log", "wb") as out:
            land = subprocess.Popen(_k2("land"), stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            _wait_for(
                "the landing's /metrics port",
                lambda: landing_quantiles(port) != "" and "unavailable" not in landing_quantiles(port),
                120,
            )
            seen = Seen("iceberg")
            stop = threading.Event()
            reader = threading.Thread(
                target=query_reader, args=(settings, seen, stop, False, args.poll_ms / 1000), daemon=True
            )
            reader.start()
            rows = make_trades_like_capture(200)
            producer = MarketDataProducer(settings)
            sent_at: dict[int, int] = {}
            for row in rows:
                producer.send(TRADE, row)  # the first one also creates the topic and registers the schema
                sent_at[row["trade_id"]] = time.time_ns() // 1000
                if row["trade_id"] in seen.ids():
                    break
                time.sleep(0.1)
            producer.flush()
            first = rows[0]["trade_id"]
            _wait_for("the first trade in Iceberg", lambda: first in seen.ids(), 120)
            stop.set()
            reader.join(30)
        finally:
            land.terminate()
            land.wait(60)
        log = (root / "land.log").read_text(errors="replace")
    wait = (seen.first[first] - sent_at[first]) / 1e6
    return [
        f"cold start (consumer_session_timeout_ms {settings.session_timeout_ms}, commit interval "
        f"{settings.landing_commit_interval_seconds:g} s): first trade sent -> visible in Iceberg {wait:.2f} s",
        f"  landing events, seconds after the first trade was sent: {_events(log, sent_at[first] / 1e6)}",
    ]


def _events(log: str, sent: float) -> str:
    """When the landing subscribed, was assigned its partitions and first committed, relative to ``sent``."""
    found = {}
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        name = event.get("event")
        if name in ("subscribed", "assigned", "committed") and name not in found:
            found[name] = datetime.fromisoformat(event["timestamp"]).timestamp() - sent
    return ", ".join(f"{name} {at:+.2f}" for name, at in found.items())


def make_trades_like_capture(count: int) -> list[dict[str, object]]:
    """``count`` BTCUSDT trades from the real capture with receipt times rewritten to now."""
    rows = []
    for row in iter_capture_trades(CAPTURE):
        rows.append({**row, "receipt_ts": time.time_ns() // 1000, "ingest_ts": None})
        if len(rows) == count:
            break
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="How long the stream runs per interval.")
    parser.add_argument("--speed", type=float, default=1.0, help="Replay speed: 1 = real time.")
    parser.add_argument(
        "--intervals", default="1,5", help="Commit intervals (seconds) to run, comma-separated."
    )
    parser.add_argument("--poll-ms", type=float, default=100.0, help="Iceberg reader's poll interval.")
    parser.add_argument("--keep-logs", default=None, help="Copy the processes' logs into this directory.")
    parser.add_argument(
        "--cold", action="store_true", help="Measure the first rows after a cold start instead."
    )
    parser.add_argument(
        "--session-timeout-ms",
        type=int,
        default=None,
        help="--cold: consumer_session_timeout_ms (default: K2's).",
    )
    args = parser.parse_args()
    if args.cold:
        print(f"commit {git_commit()}")
        print("\n".join(cold_start(args)))
        return
    out = [f"commit {git_commit()}; speed {args.speed:g}x; Iceberg polled every {args.poll_ms:g} ms"]
    for interval in (float(x) for x in args.intervals.split(",")):
        with bench_stack() as (root, settings):
            lines = run_once(interval, args, root, settings)
            out.extend(lines)
            print("\n".join(lines), flush=True)
            if args.keep_logs:
                shutil.copytree(
                    root / f"interval-{interval:g}", Path(args.keep_logs) / f"interval-{interval:g}"
                )
    print("\n".join(out))


if __name__ == "__main__":
    main()
