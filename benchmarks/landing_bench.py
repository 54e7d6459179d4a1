"""Landing benchmark: sustained rows/s of ONE landing consumer (Kafka -> Avro decode -> validate -> dedup ->
sorted Iceberg commit with offsets), beside baselines measured in the same run.

* Data: N real-shaped trades (default 1,000,000: 10 symbols, contiguous ids, random-walk prices, the
  demo capture's shape), or with ``--kind depth`` N book-delta rows (default 1,500,470: the real BTCUSDT
  capture's 300,094 ``depth@100ms`` rows, parsed by the import's reader, as 5 symbols: issue 14's "narrow
  depth rows"), pre-produced to one topic (4 partitions) with K2's producer before any timing starts.
* Landing: ``LandingConsumer.run`` with the production commit policy (200,000 rows or 5 s per commit);
  rate = rows landed / (last commit - partitions assigned), so neither the group join nor the idle
  wait at the end counts. The last commit waits for the commit interval once the stream has ended, so
  the **sustained** rate is also given: rows of all commits but the last / (second-to-last commit -
  assigned), with the landing's CPU (all threads) per row up to that commit and the cyclic garbage
  collector's collections and CPU time in the landing process.
* Baseline 1 (Kafka floor): a plain confluent-kafka consumer reading the same N messages (no decoding), with
  the landing consumer's fetch settings and batch size.
* Baseline 2 (Iceberg floor): pyiceberg appending the same rows, already in Arrow, in commits of the same
  size, into a fresh table.

* Memory: the landing runs in a child process (spawned, so it holds none of the generated rows); its peak
  RSS (``VmHWM`` of /proc/<pid>/status) is reported beside the RSS it had once ready (consumer created,
  nothing consumed) and the buffer bound ``landing_max_buffered_bytes`` (``--max-buffered-mib``).

Starts its own Tansu broker and K2 registry on random ports (memory storage, temp dir); target
>= 100,000 trades/s on the 2-core machine.

    .venv/bin/python benchmarks/landing_bench.py [--trades N] [--kind trades|depth] [--max-buffered-mib 512] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import multiprocessing
import pstats
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition  # noqa: E402
from tests.landing.helpers import TEN_SYMBOLS, make_trades  # noqa: E402

from k2.bus import MarketDataProducer  # noqa: E402
from k2.bus.broker import tansu_process  # noqa: E402
from k2.bus.registry.server import registry_process  # noqa: E402
from k2.config import Settings  # noqa: E402
from k2.lake.catalog import ensure_tables, load_catalog  # noqa: E402
from k2.lake.writer import append  # noqa: E402
from k2.landing import LandingConsumer  # noqa: E402
from k2.landing.consumer import _FETCH_MESSAGES, fetch_config  # noqa: E402
from k2.model import BOOK_DELTA, TRADE, RecordType  # noqa: E402
from k2.model.arrow import records_to_arrow  # noqa: E402
from k2.telemetry.procs import free_port  # noqa: E402

TOPIC = "market.crypto.trades.binance"
DEPTH_TOPIC = "market.crypto.depth.binance"
SYMBOLS = TEN_SYMBOLS


def generate(total: int) -> list[dict[str, Any]]:
    per = total // len(SYMBOLS)
    streams = [make_trades(s, 10_000_000 * (i + 1), per, seed=i) for i, s in enumerate(SYMBOLS)]
    return [row for step in zip(*streams, strict=True) for row in step]  # interleaved like a live feed


def generate_depth(total: int | None) -> list[dict[str, Any]]:
    """``total`` book-delta rows (default: 5 copies of the capture, ~1.5M rows): the capture's rows, then
    copies of them as symbols SYN1USDT, SYN2USDT, ..."""
    from book_bench import capture_rows

    capture = capture_rows()
    total = total or 5 * len(capture)
    rows: list[dict[str, Any]] = []
    copy = 0
    while len(rows) < total:
        symbol = "BTCUSDT" if copy == 0 else f"SYN{copy}USDT"
        rows += [{**r, "symbol": symbol} for r in capture[: total - len(rows)]]
        copy += 1
    return rows


def produce(settings: Settings, rows: list[dict[str, Any]], record: RecordType, topic: str) -> float:
    producer = MarketDataProducer(settings)
    producer.encoder(record, topic)  # registration and topic creation outside the timing
    start = time.perf_counter()
    producer.send_many(record, rows, topic)
    producer.flush()
    return len(rows) / (time.perf_counter() - start)


def consume_only(settings: Settings, total: int, topic: str) -> float:
    """Plain consumer, no decoding: the Kafka floor. Stops at the known message count, not an end offset."""
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            **fetch_config(settings),
            "group.id": f"raw-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.topic_partitions)])
    count = size = 0
    start = 0.0
    deadline = time.monotonic() + 300
    while count < total and time.monotonic() < deadline:
        batch = consumer.consume(num_messages=_FETCH_MESSAGES, timeout=0.5)
        if batch and not start:
            start = time.perf_counter()
        count += len(batch)
        size += sum(map(len, batch))
    elapsed = time.perf_counter() - start
    consumer.close()
    if count < total:
        raise RuntimeError(f"expected {total} messages, found {count}")
    return total / elapsed


def rss_kib(field: str = "VmHWM", pid: str = "self") -> int:
    """A memory figure of /proc/<pid>/status in KiB (VmHWM: peak resident set; VmRSS: current)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"expected {field} in /proc/{pid}/status, found none")


class CollectorClock:
    """A gc callback: how many cyclic collections ran per generation, and their CPU seconds."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.count[info["generation"]] += 1
            self.seconds[info["generation"]] += time.process_time() - self._started

    def report(self) -> str:
        return ", ".join(f"gen{g} {self.count[g]} ({self.seconds[g]:.2f} s)" for g in range(3))


@dataclass
class LandingRun:
    """One landing run's figures (from the spawned child)."""

    landed: int
    rate: float  # rows / (last commit - assignment): includes the final commit-interval wait
    commits: int
    elapsed: float
    sustained_rows: int  # rows in all commits but the last
    sustained_seconds: float  # assignment -> second-to-last commit (0: fewer than two commits)
    cpu_seconds: float  # all threads, start -> last commit
    sustained_cpu_seconds: float  # all threads, start -> second-to-last commit
    ready_kib: int = 0
    peak_kib: int = 0

    @property
    def sustained_rate(self) -> float:
        return self.sustained_rows / self.sustained_seconds if self.sustained_seconds else 0.0


def _land_child(settings: Settings, profile: bool, topic: str, out: Any) -> None:
    ready: list[int] = []
    run = land(settings, profile, ready, topic)
    run.ready_kib, run.peak_kib = (ready[0] if ready else 0), rss_kib("VmHWM")
    out.send(asdict(run))  # a dict: the class is __mp_main__'s in the child


def land_in_child(settings: Settings, profile: bool, topic: str) -> LandingRun:
    """``land`` in a spawned process, with its ready and peak RSS (KiB)."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_land_child, args=(settings, profile, topic, send))
    child.start()
    result = receive.recv()
    child.join()
    return LandingRun(**result)


def land(settings: Settings, profile: bool, ready: list[int] | None = None, topic: str = TOPIC) -> LandingRun:
    consumer = LandingConsumer(settings, topics=[topic])
    if ready is not None:
        ready.append(rss_kib("VmRSS"))
    commits: list[tuple[float, float, int]] = []  # (perf_counter, process_time, rows) per commit
    consumer.on_commit = lambda short, landed: commits.append(
        (time.perf_counter(), time.process_time(), landed)
    )
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    collections = CollectorClock()
    gc.callbacks.append(collections)
    assigned_wall = time.monotonic()
    cpu_start = time.process_time()
    stats = consumer.run(idle_exit_seconds=3.0)
    gc.callbacks.remove(collections)
    print(f"cyclic collections: {collections.report()}", flush=True)
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)
    # consumer._assigned_at is on the monotonic clock; convert to perf_counter via the offset measured now.
    offset = time.perf_counter() - time.monotonic()
    started = consumer._assigned_at + offset if consumer._assigned_at else assigned_wall + offset
    # CPU of every thread of the landing process from start: comparable across loads.
    cpu = commits[-1][1] - cpu_start
    before_last = commits[-2] if len(commits) > 1 else None
    print(f"landing CPU {cpu:.2f} s = {stats.landed / cpu:,.0f} rows per CPU second", flush=True)
    return LandingRun(
        landed=stats.landed,
        rate=stats.landed / (commits[-1][0] - started),
        commits=stats.commits,
        elapsed=commits[-1][0] - started,
        sustained_rows=sum(rows for _, _, rows in commits[:-1]),
        sustained_seconds=before_last[0] - started if before_last else 0.0,
        cpu_seconds=cpu,
        sustained_cpu_seconds=before_last[1] - cpu_start if before_last else 0.0,
    )


def iceberg_only(
    settings: Settings, rows: list[dict[str, Any]], batch: int, record: RecordType = TRADE
) -> float:
    tables = ensure_tables(load_catalog(settings), settings)
    arrow = [
        records_to_arrow(record, [{**r, "ingest_ts": r["receipt_ts"]} for r in rows[i : i + batch]])
        for i in range(0, len(rows), batch)
    ]
    short = "trades" if record is TRADE else "book_deltas"
    start = time.perf_counter()
    for chunk in arrow:
        append(tables[short], chunk, short, {"k2.bench": "1"})
    return len(rows) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--trades",
        type=int,
        default=None,
        help="rows to land (default: 1,000,000 trades, or 5 copies of the depth capture as 5 symbols)",
    )
    parser.add_argument("--kind", choices=("trades", "depth"), default="trades", help="record type to land")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the landing run")
    parser.add_argument(
        "--max-buffered-mib", type=int, default=None, help="landing_max_buffered_bytes in MiB (default: K2's)"
    )
    parser.add_argument(
        "--commit-interval",
        type=float,
        default=None,
        help="landing_commit_interval_seconds (default: K2's); the backlog lands faster than 200,000 rows per "
        "interval only if the interval is long enough",
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="k2-landing-bench-"))
    broker = tansu_process(free_port(), root / "tansu.log").start()
    registry = registry_process(
        free_port(), f"sqlite:///{root / 'registry.db'}", root / "registry.log"
    ).start()
    lines = []
    try:
        base = Settings(
            data_dir=root / "landing",
            kafka_bootstrap_servers=f"127.0.0.1:{broker.port}",
            schema_registry_url=f"http://127.0.0.1:{registry.port}",
            consumer_session_timeout_ms=2000,
            landing_metrics_port=0,
            consumer_group="bench-landing",
        )
        if args.commit_interval:
            base = base.model_copy(update={"landing_commit_interval_seconds": args.commit_interval})
        if args.max_buffered_mib:
            base = base.model_copy(update={"landing_max_buffered_bytes": args.max_buffered_mib * 1_048_576})
        t0 = time.perf_counter()
        depth = args.kind == "depth"
        record, topic = (BOOK_DELTA, DEPTH_TOPIC) if depth else (TRADE, TOPIC)
        rows = generate_depth(args.trades) if depth else generate(args.trades or 1_000_000)
        print(f"generated {len(rows):,} {args.kind} rows in {time.perf_counter() - t0:.1f}s", flush=True)
        prod = produce(base, rows, record, topic)
        print(f"produced at {prod:,.0f} msgs/s", flush=True)
        raw = consume_only(base, len(rows), topic)
        print(f"consume-only {raw:,.0f} msgs/s", flush=True)
        run = land_in_child(base, args.profile, topic)
        landed, rate, commits, elapsed = run.landed, run.rate, run.commits, run.elapsed
        ready_kib, peak_kib = run.ready_kib, run.peak_kib
        print(
            f"landed {landed:,} at {rate:,.0f} rows/s (sustained {run.sustained_rate:,.0f}); RSS ready "
            f"{ready_kib / 1024:,.0f} MiB, peak {peak_kib / 1024:,.0f} MiB",
            flush=True,
        )
        ice = iceberg_only(
            base.model_copy(update={"data_dir": root / "baseline"}), rows, base.landing_commit_rows, record
        )
        if landed != len(rows):
            raise RuntimeError(f"expected {len(rows)} rows landed, found {landed}")
        lines.append(
            f"{len(rows):,} "
            + (
                "book-delta rows (the capture's, repeated as symbols"
                if depth
                else "real-shaped trades (10 symbols"
            )
            + f", 4 partitions), pre-produced at {prod:,.0f} msgs/s"
        )
        target = 300_000 if depth else 100_000
        lines.append(
            f"landing (one consumer process, Kafka -> Avro decode -> validate -> dedup -> Iceberg, {commits} commits "
            f"of <= {base.landing_commit_rows:,} rows or {base.landing_commit_interval_seconds:g} s): **{rate:,.0f} rows/s** "
            f"({elapsed:.1f} s, up to the last commit); target {target:,} (ratio {rate / target:.2f})"
        )
        if run.sustained_seconds:
            lines.append(
                f"landing sustained (all commits but the last, which waits for the commit interval once the "
                f"stream ends): **{run.sustained_rate:,.0f} rows/s** ({run.sustained_rows:,} rows in "
                f"{run.sustained_seconds:.1f} s; ratio to target {run.sustained_rate / target:.2f}; "
                f"landing / consume-only = {run.sustained_rate / raw:.2f})"
            )
            lines.append(
                f"landing CPU (all threads) to the second-to-last commit: {run.sustained_cpu_seconds:.2f} s = "
                f"{run.sustained_rows / run.sustained_cpu_seconds:,.0f} rows per CPU second "
                f"({run.sustained_cpu_seconds / run.sustained_rows * 1e6:.2f} CPU s per 1M rows)"
            )
        lines.append(
            f"landing CPU (all threads) to the last commit: {run.cpu_seconds:.2f} s = "
            f"{landed / run.cpu_seconds:,.0f} rows per CPU second"
        )
        lines.append(
            f"landing peak RSS {peak_kib / 1024:,.0f} MiB (ready {ready_kib / 1024:,.0f} MiB, peak - ready "
            f"{(peak_kib - ready_kib) / 1024:,.0f} MiB) with landing_max_buffered_bytes {base.landing_max_buffered_bytes / 1_048_576:,.0f} MiB"
        )
        lines.append(
            f"baseline consume-only (confluent-kafka, no decode): {raw:,.0f} msgs/s; landing / consume-only = {rate / raw:.2f}"
        )
        lines.append(
            f"baseline pyiceberg append of the same rows as Arrow, same commit size: {ice:,.0f} rows/s; landing / append = {rate / ice:.2f}"
        )
    finally:
        broker.stop()
        registry.stop()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    print(f"commit {commit} + uncommitted work")
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
