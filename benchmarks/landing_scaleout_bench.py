"""Landing scale-out benchmark: sustained rows/s with 1, 2 and 4 landing processes in ONE consumer group.

* Data: N trades (default 1,000,000; 32 symbols, contiguous ids) produced once to a topic of 8 partitions
  before any timing starts (keyed by symbol, as K2's producer keys them).
* For each process count P (default 1, 2, 4): a fresh warehouse and a fresh consumer group land the whole
  topic with P processes (``LandingConsumer.run`` in spawned children, the production commit policy).
  Rate = rows landed / (last commit anywhere - the moment the first process started consuming), so the
  idle wait at the end does not count; the group join does (Tansu: half of ``session.timeout.ms`` = 0.5 s
  here), which makes the figures slightly conservative. Per process: its rows and its own rows/s.
* Baseline (same run): one plain confluent-kafka consumer reading all N messages without decoding.

On a 2-core machine P > 2 cannot add CPU: the figures show the per-process cost of sharing the cores and
the commit contention (every process commits to the same table; a conflict is rebased and retried).

    .venv/bin/python benchmarks/landing_scaleout_bench.py [--trades 1000000] [--processes 1,2,4]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_stack import bench_stack, git_commit  # noqa: E402
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition  # noqa: E402
from tests.landing.helpers import TEN_SYMBOLS, make_trades  # noqa: E402

from k2.bus import MarketDataProducer, ensure_topics  # noqa: E402
from k2.config import Settings  # noqa: E402
from k2.landing import LandingConsumer  # noqa: E402

TOPIC = "market.crypto.trades.binance"
PARTITIONS = 8
# Messages are keyed by symbol, so a partition carries the symbols that hash to it: 32 symbols spread
# over 8 partitions keep every partition busy (10 left some empty and their processes idle).
SYMBOLS = TEN_SYMBOLS + [f"S{i:02d}USDT" for i in range(22)]


def produce(settings: Settings, total: int) -> None:
    from k2.model import TRADE

    per = total // len(SYMBOLS)
    streams = [make_trades(s, 10_000_000 * (i + 1), per, seed=i) for i, s in enumerate(SYMBOLS)]
    rows = [row for step in zip(*streams, strict=True) for row in step]
    ensure_topics(settings, [TOPIC], partitions=PARTITIONS)
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, rows)


def consume_only(settings: Settings, total: int) -> float:
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"raw-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    count, start = 0, 0.0
    deadline = time.monotonic() + 600
    while count < total and time.monotonic() < deadline:
        batch = consumer.consume(num_messages=10_000, timeout=0.5)
        if batch and not start:
            start = time.perf_counter()
        count += len(batch)
    elapsed = time.perf_counter() - start
    consumer.close()
    return count / elapsed


def _land_child(settings: Settings, out: Any) -> None:
    consumer = LandingConsumer(settings, topics=[TOPIC])
    commits: list[float] = []
    consumer.on_commit = lambda short, landed: commits.append(time.time())
    started = time.time()
    stats = consumer.run(idle_exit_seconds=8.0)
    out.send((stats.landed, started, commits[0] if commits else started, commits[-1] if commits else started))


def land_with(settings: Settings, processes: int) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    pipes, children = [], []
    for _ in range(processes):
        receive, send = context.Pipe(duplex=False)
        child = context.Process(target=_land_child, args=(settings, send))
        child.start()
        pipes.append(receive)
        children.append(child)
    results = [pipe.recv() for pipe in pipes]
    for child in children:
        child.join()
    landed = sum(r[0] for r in results)
    first = min(r[1] for r in results)
    last = max(r[3] for r in results)
    per_process = [(r[0], r[0] / max(1e-9, r[3] - r[1])) for r in results]
    return {
        "landed": landed,
        "seconds": last - first,
        "rate": landed / (last - first),
        "per_process": per_process,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--processes", default="1,2,4")
    args = parser.parse_args()
    counts = [int(x) for x in args.processes.split(",")]
    with bench_stack(
        topic_partitions=PARTITIONS, consumer_session_timeout_ms=1000, landing_metrics_port=0
    ) as (root, base):
        produce(base, args.trades)
        floor = consume_only(base, args.trades)
        print(f"commit {git_commit()}  trades {args.trades:,}  partitions {PARTITIONS}")
        print(f"consume-only floor (1 consumer, no decode): {floor:,.0f} msgs/s")
        for processes in counts:
            settings = base.model_copy(
                update={"data_dir": root / f"k2-{processes}", "consumer_group": f"scale-{processes}"}
            )
            result = land_with(settings, processes)
            shares = ", ".join(f"{rows:,} rows at {rate:,.0f}/s" for rows, rate in result["per_process"])
            print(
                f"{processes} process(es): {result['landed']:,} rows in {result['seconds']:.1f} s = "
                f"{result['rate']:,.0f} rows/s total ({result['rate'] / processes:,.0f} per process; {shares})"
            )


if __name__ == "__main__":
    main()
