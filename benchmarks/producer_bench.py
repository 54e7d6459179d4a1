"""Producer benchmark: K2's producer (row by row and batched) beside encode-only and raw-librdkafka floors, same run.

Rows: the demo capture's trades (real Binance data, ``iter_capture_trades``) repeated to ``--rows``.
Sides, each timed over the same rows:

* fastavro encode only (per row, as ``AvroEncoder.encode``);
* column-wise encode only (``k2.bus.avro_encode.encode_batch`` in batches of ``--batch``);
* raw librdkafka produce floor: confluent-kafka's ``Producer.produce`` of the pre-encoded bytes (key,
  value, nothing else), the same producer configuration as K2's on this broker (acks=all, lz4,
  idempotence as ``producer_idempotence=auto`` decides), flushed;
* the same with K2's per-message duties: the ``k2.cid`` + ``k2.mid`` headers and a Python delivery
  callback per message (what K2 needs to re-send failed messages and never lose one silently);
* K2 ``MarketDataProducer.send`` per row (fastavro), flushed;
* K2 ``MarketDataProducer.send_many`` in batches of ``--batch`` (column-wise encoder), flushed;
* when the src tree has it: the column-wise encoder from Arrow columns alone
  (``k2.bus.avro_columns.encode_table``) and K2 ``send_table`` of the same rows as Arrow tables of
  ``--batch`` rows (built outside the timing), flushed: the path of ``k2 import --via-kafka`` and replay.

Starts its own Tansu broker (memory storage) and K2 registry on random ports.

    .venv/bin/python benchmarks/producer_bench.py --rows 100000 --rounds 2

Each round runs every side once, in order; the figures are per round, with each side's ratio to the
same round's raw floor (the machine may be shared: the ratio is the comparable figure). Each side is
given by wall clock and by the process's CPU time (``time.process_time``, librdkafka's threads
included): on a loaded machine the CPU figure is the steadier one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from bench_stack import bench_stack, git_commit  # noqa: E402
from confluent_kafka import Producer  # noqa: E402

from k2.bus import MarketDataProducer  # noqa: E402
from k2.bus.avro_encode import encode_batch  # noqa: E402
from k2.bus.lineage import message_id_header  # noqa: E402
from k2.bus.producer import idempotence_wanted, producer_config  # noqa: E402
from k2.model import TRADE  # noqa: E402
from k2.model.arrow import records_to_arrow  # noqa: E402

try:
    from k2.bus.avro_columns import encode_table
except ImportError:  # a src tree from before the Arrow-column path
    encode_table = None  # type: ignore[assignment]
from k2.sources.binance import iter_capture_trades  # noqa: E402
from k2.telemetry.logging import CID_HEADER as CID  # noqa: E402

FLOOR = "raw librdkafka produce of encoded bytes (floor)"
CAPTURES = sorted((REPO / "data" / "samples" / "binance").glob("spot_btcusdt_*.gz"))


def start() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def rate(n: int, t0: tuple[float, float]) -> tuple[float, float]:
    """(msgs per wall second, msgs per CPU second of this process, librdkafka's threads included)."""
    return n / (time.perf_counter() - t0[0]), n / max(time.process_time() - t0[1], 1e-9)


def raw_floor(
    settings: Any, topic: str, keys: list[bytes], values: list[bytes], duties: bool
) -> tuple[float, float]:
    """Raw ``Producer.produce`` of encoded bytes, flushed; with ``duties`` K2's headers and a callback too."""
    raw = Producer(producer_config(settings, idempotence_wanted(settings)))
    delivered = [0]

    def on_delivery(err: Any, msg: Any) -> None:
        if err is None:
            delivered[0] += 1

    cid = (CID, b"0123456789abcdef")
    t0 = start()
    for i, (key, value) in enumerate(zip(keys, values, strict=True)):
        while True:
            try:
                if duties:
                    headers = [cid, message_id_header(b"0123456789abcdef", i + 1)]
                    raw.produce(topic, value, key, on_delivery=on_delivery, headers=headers)
                else:
                    raw.produce(topic, value, key)
                break
            except BufferError:
                raw.poll(0.05)
        if i % 1000 == 999:
            raw.poll(0)
    raw.flush()
    return rate(len(keys), t0)


def one_round(settings: Any, rows: list[dict[str, Any]], batch_size: int) -> dict[str, tuple[float, float]]:
    topic = "market.crypto.trades.binance"
    batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    results: dict[str, tuple[float, float]] = {}
    producer = MarketDataProducer(settings)
    encoder = producer.encoder(TRADE, topic)  # registration outside timing
    t0 = start()
    encoded = [encoder.encode(r) for r in rows]
    results["fastavro encode only"] = rate(len(rows), t0)
    t0 = start()
    for batch in batches:
        encode_batch(TRADE, encoder._header, batch)
    results["column-wise encode only"] = rate(len(rows), t0)
    keys = [r["symbol"].encode() for r in rows]
    results[FLOOR] = raw_floor(settings, topic, keys, encoded, duties=False)
    results["raw produce + k2 headers + delivery callback"] = raw_floor(settings, topic, keys, encoded, True)
    t0 = start()
    for row in rows:
        producer.send(TRADE, row)
    producer.flush()
    results["K2 send per row (fastavro)"] = rate(len(rows), t0)
    t0 = start()
    for batch in batches:
        producer.send_many(TRADE, batch)
    producer.flush()
    results["K2 send_many (column-wise)"] = rate(len(rows), t0)
    if encode_table is not None:  # the Arrow-column path (absent from older src trees)
        tables = [records_to_arrow(TRADE, batch) for batch in batches]  # outside timing
        t0 = start()
        for table in tables:
            encode_table(TRADE, encoder._header, table)
        results["column-wise encode from Arrow only"] = rate(len(rows), t0)
        t0 = start()
        for table in tables:
            producer.send_table(TRADE, table)
        producer.flush()
        results["K2 send_table (Arrow columns)"] = rate(len(rows), t0)
    producer.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with bench_stack() as (_root, settings):
        capture = [row for path in CAPTURES for row in iter_capture_trades(path)]
        now = int(time.time() * 1_000_000)
        rows: list[dict[str, Any]] = []
        while len(rows) < args.rows:
            rows.extend({**r, "ingest_ts": now} for r in capture)
        rows = rows[: args.rows]
        rounds = [one_round(settings, rows, args.batch) for _ in range(args.rounds)]
    print(f"commit {git_commit()}; {len(rows):,} trades (demo capture repeated), batches of {args.batch:,}")
    print(f"load average {os.getloadavg()[0]:.1f} {os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f}")
    print("msgs/s by wall clock and by this process's CPU time; ratios to the same round's raw floor")
    for number, results in enumerate(rounds, 1):
        print(f"round {number}{'wall':>52}{'CPU':>12}  wall ratio  CPU ratio")
        wall_floor, cpu_floor = results[FLOOR]
        for name, (wall, cpu) in results.items():
            print(
                f"  {name:50} {wall:>10,.0f} {cpu:>11,.0f}  {wall / wall_floor:9.2f}x {cpu / cpu_floor:9.2f}x"
            )


if __name__ == "__main__":
    main()
