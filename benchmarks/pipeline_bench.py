"""Pipeline benchmark: producer messages/s and landing rows/s, each beside a baseline from the same run.

* Producer: the demo capture's trades (real Binance data) encoded (Avro, Confluent framing) and produced
  with acks=all, idempotence and lz4, flushed. Baseline: encoding alone (fastavro), same rows.
* Landing: one consumer process: Kafka -> Avro decode -> validate -> dedup -> sorted Iceberg commit.
  Baseline: pyiceberg appending the already-decoded Arrow table (the floor set by Iceberg itself).
* Sustained landing on 1M trades: see benchmarks/landing_bench.py.

Starts its own Tansu broker and K2 registry on random ports. Prints figures with the commit (recorded by hand in
docs/performance.md, "Pipeline").

    .venv/bin/python benchmarks/pipeline_bench.py
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fastavro

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from k2.bus import MarketDataProducer  # noqa: E402
from k2.bus.broker import tansu_process  # noqa: E402
from k2.bus.registry.server import registry_process  # noqa: E402
from k2.bus.serde import _decimal_bytes, header  # noqa: E402
from k2.config import Settings  # noqa: E402
from k2.lake.catalog import ensure_tables, load_catalog  # noqa: E402
from k2.lake.writer import append  # noqa: E402
from k2.landing import LandingConsumer  # noqa: E402
from k2.model import TRADE  # noqa: E402
from k2.sources.binance import iter_capture_trades  # noqa: E402
from k2.telemetry.procs import free_port  # noqa: E402

CAPTURES = sorted((REPO / "data" / "samples" / "binance").glob("spot_btcusdt_*.gz"))


def encode_only(rows: list[dict]) -> float:
    schema = fastavro.parse_schema(TRADE.avro_schema())
    start = time.perf_counter()
    for row in rows:
        prepared = dict(row)
        for name in ("price", "quantity", "quote_quantity"):
            if isinstance(prepared[name], int):
                prepared[name] = _decimal_bytes(prepared[name])
        if prepared.get("ingest_ts") is None:
            prepared["ingest_ts"] = prepared["receipt_ts"]
        buffer = io.BytesIO()
        buffer.write(header(1))
        fastavro.schemaless_writer(buffer, schema, prepared)
    return len(rows) / (time.perf_counter() - start)


def produce(settings: Settings, rows: list[dict]) -> float:
    producer = MarketDataProducer(settings)
    producer.encoder(
        TRADE, "market.crypto.trades.binance"
    )  # registration and topic creation outside the timing
    start = time.perf_counter()
    for row in rows:
        producer.send(TRADE, row)
    producer.flush()
    return len(rows) / (time.perf_counter() - start)


def land(settings: Settings) -> tuple[int, float]:
    """Rows/s from partition assignment to the last commit (group join and the idle exit not counted)."""
    consumer = LandingConsumer(settings, topics=["market.crypto.trades.binance"])
    commits: list[float] = []
    consumer.on_commit = lambda short, landed: commits.append(time.monotonic())
    stats = consumer.run(idle_exit_seconds=2.0)
    return stats.landed, stats.landed / (commits[-1] - consumer._assigned_at)


def iceberg_baseline(settings: Settings, data_dir: Path) -> float:
    catalog_settings = settings.model_copy(update={"data_dir": data_dir})
    tables = ensure_tables(load_catalog(catalog_settings), catalog_settings)
    source = load_catalog(settings).load_table(("market_data", "trades")).scan().to_arrow()
    start = time.perf_counter()
    append(tables["trades"], source, "trades")
    return source.num_rows / (time.perf_counter() - start)


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    root = Path(tempfile.mkdtemp(prefix="k2-bench-"))
    broker = tansu_process(free_port(), root / "tansu.log").start()
    registry = registry_process(
        free_port(), f"sqlite:///{root / 'registry.db'}", root / "registry.log"
    ).start()
    lines = []
    try:
        base = dict(
            kafka_bootstrap_servers=f"127.0.0.1:{broker.port}",
            schema_registry_url=f"http://127.0.0.1:{registry.port}",
            consumer_session_timeout_ms=2000,
            landing_metrics_port=0,
        )
        demo_rows = [row for path in CAPTURES for row in iter_capture_trades(path)]
        enc = encode_only(demo_rows)
        # One commit as soon as the whole capture is buffered: throughput, not the commit-interval wait.
        s1 = Settings(
            data_dir=root / "demo", consumer_group="bench-demo", landing_commit_rows=len(demo_rows), **base
        )
        prod = produce(s1, demo_rows)
        landed, land_rate = land(s1)
        ice = iceberg_baseline(s1, root / "baseline")
        lines.append(f"demo capture: {len(demo_rows):,} trades")
        lines.append(
            f"producer: {prod:,.0f} msgs/s (baseline fastavro encode only: {enc:,.0f} msgs/s; ratio {prod / enc:.2f})"
        )
        lines.append(
            f"landing: {land_rate:,.0f} rows/s for {landed:,} rows (baseline pyiceberg append of decoded rows: {ice:,.0f} rows/s; ratio {land_rate / ice:.3f})"
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
