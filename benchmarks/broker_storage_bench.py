"""Broker storage benchmark: produce and consume msg/s of the local Tansu on ``memory://`` vs ``s3://``.

``s3://`` is what ``k2 up`` runs by default (durable: on the local SeaweedFS ``weed mini``); ``memory://``
is the same-run baseline. Each round starts a fresh broker per storage on random ports, then:

* produce: N messages of ~150 bytes, 10 keys, 4 partitions, with K2's producer settings for Tansu
  (acks=all, lz4, linger 20 ms; not idempotent, one request in flight: see ``k2.bus.producer``);
  rate = N / (first produce -> flush returned).
* consume: a fresh consumer reads the N messages from the beginning (assign, no group join);
  rate = N / (first message -> last message).

Rounds alternate the storages so machine noise hits both. A third row is ``memory://`` with the
idempotent producer (5 requests in flight) that K2 used against Tansu before: the cost of one request
in flight.

    .venv/bin/python benchmarks/broker_storage_bench.py [--messages 200000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from k2.bus.broker import tansu_process
from k2.bus.producer import producer_config
from k2.config import Settings
from k2.ops.storage import filer_port, s3_env, wait_for_bucket, weed_argv
from k2.telemetry.procs import ManagedProcess, free_port, port_bindable

TOPIC = "bench"


def _weed(root: Path) -> tuple[ManagedProcess, Settings]:
    settings = Settings(data_dir=root, storage_port=_s3_port(), broker_storage="s3://k2-broker/")
    argv = weed_argv(settings, root)
    proc = ManagedProcess(
        "storage", argv, settings.storage_port, root / "weed.log", env=s3_env(settings)
    ).start(timeout=60)
    wait_for_bucket(settings, filer_port(argv))
    return proc, settings


def _s3_port() -> int:
    """A free port p < 55000 whose gRPC port p + 10000 is free too."""
    while True:
        port = free_port()
        if port < 55000 and port_bindable(port + 10000):
            return port


def _run(
    storage: str, root: Path, messages: int, env: dict[str, str] | None, idempotent: bool = False
) -> tuple[float, float]:
    port = free_port()
    broker = tansu_process(
        port, root / f"tansu-{time.monotonic_ns()}.log", storage=storage, s3_env=env
    ).start()
    bootstrap = f"127.0.0.1:{port}"
    topic = f"{TOPIC}-{time.monotonic_ns()}"  # the s3 bucket outlives the broker: a fresh topic per run
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, 4, 1)])[topic].result()
        settings = Settings(kafka_bootstrap_servers=bootstrap)
        producer = Producer(producer_config(settings, idempotent=idempotent))
        payload = b"x" * 150
        started = time.perf_counter()
        for i in range(messages):
            while True:
                try:
                    producer.produce(topic, value=payload, key=b"k%d" % (i % 10))
                    break
                except BufferError:
                    producer.poll(0.01)
        assert producer.flush(300) == 0
        produce_rate = messages / (time.perf_counter() - started)
        consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "bench", "enable.auto.commit": False}
        )
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(4)])
        seen, first, last = 0, 0.0, 0.0
        deadline = time.monotonic() + 300
        while seen < messages and time.monotonic() < deadline:
            batch = consumer.consume(10_000, timeout=0.5)
            if batch and not first:
                first = time.perf_counter()
            seen += sum(1 for m in batch if m.error() is None)
            last = time.perf_counter()
        consumer.close()
        assert seen >= messages, f"expected {messages} messages back, found {seen}"
        return produce_rate, seen / (last - first)
    finally:
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {
        "memory://": [],
        "s3:// (SeaweedFS)": [],
        "memory://, idempotent": [],
    }
    with tempfile.TemporaryDirectory(prefix="k2-broker-bench-") as tmp:
        root = Path(tmp)
        weed, settings = _weed(root)
        try:
            for _ in range(args.rounds):
                results["memory://"].append(_run("memory://tansu/", root, args.messages, None))
                results["s3:// (SeaweedFS)"].append(
                    _run("s3://k2-broker/", root, args.messages, s3_env(settings))
                )
                results["memory://, idempotent"].append(
                    _run("memory://tansu/", root, args.messages, None, idempotent=True)
                )
        finally:
            weed.stop()
    print(f"{args.messages:,} messages of 150 B, {args.rounds} rounds (median)")
    print(f"{'storage':20} {'produce msg/s':>14} {'consume msg/s':>14}")
    for name, rows in results.items():
        print(
            f"{name:20} {statistics.median(r[0] for r in rows):>14,.0f} {statistics.median(r[1] for r in rows):>14,.0f}"
        )


if __name__ == "__main__":
    main()
