"""Pipeline benchmark: producer messages/s and landing rows/s, each beside a baseline from the same run.

* Producer: the demo capture's trades (real Binance data) encoded (Avro, Confluent framing) and produced
  with acks=all, idempotence and lz4, flushed. Baseline: encoding alone (fastavro), same rows.
* Landing: one consumer process: Kafka -> Avro decode -> validate -> dedup -> sorted Iceberg commit.
  Baseline: pyiceberg appending the already-decoded Arrow table (the floor set by Iceberg itself).
* Sustained landing (issue: >= 100,000 trades/s): N real-shaped trades (default 500,000) pre-produced,
  then landed by one consumer with the production commit policy.

Starts its own Tansu broker and K2 registry on random ports. Prints figures; `--record` appends them to
docs/performance.md with the commit.

    .venv/bin/python benchmarks/pipeline_bench.py [--trades 500000] [--record]
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
from k2.ops.procs import free_port  # noqa: E402
from k2.sources.binance import iter_capture_trades  # noqa: E402
from tests.landing.helpers import make_trades  # noqa: E402

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
    producer.encoder(TRADE, "market.crypto.trades.binance")  # registration and topic creation outside the timing
    start = time.perf_counter()
    for row in rows:
        producer.send(TRADE, row)
    producer.flush()
    return len(rows) / (time.perf_counter() - start)


def land(settings: Settings) -> tuple[int, float]:
    consumer = LandingConsumer(settings, topics=["market.crypto.trades.binance"])
    start = time.perf_counter()
    stats = consumer.run(idle_exit_seconds=2.0)
    elapsed = time.perf_counter() - start - 2.0  # the idle wait at the end is not landing work
    return stats.landed, stats.landed / elapsed


def iceberg_baseline(settings: Settings, data_dir: Path) -> float:
    decoded = LandingConsumer  # noqa: F841 - keep import local for clarity
    catalog_settings = settings.model_copy(update={"data_dir": data_dir})
    tables = ensure_tables(load_catalog(catalog_settings), catalog_settings)
    source = load_catalog(settings).load_table(("market_data", "trades")).scan().to_arrow()
    start = time.perf_counter()
    append(tables["trades"], source, "trades")
    return source.num_rows / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trades", type=int, default=500_000)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="k2-bench-"))
    broker = tansu_process(free_port(), root / "tansu.log").start()
    registry = registry_process(free_port(), f"sqlite:///{root / 'registry.db'}", root / "registry.log").start()
    lines = []
    try:
        base = dict(
            kafka_bootstrap_servers=f"127.0.0.1:{broker.port}", schema_registry_url=f"http://127.0.0.1:{registry.port}",
            consumer_session_timeout_ms=2000, landing_metrics_port=0,
        )
        demo_rows = [row for path in CAPTURES for row in iter_capture_trades(path)]
        enc = encode_only(demo_rows)
        s1 = Settings(data_dir=root / "demo", consumer_group="bench-demo", **base)
        prod = produce(s1, demo_rows)
        landed, land_rate = land(s1)
        ice = iceberg_baseline(s1, root / "baseline")
        lines.append(f"demo capture: {len(demo_rows):,} trades")
        lines.append(f"producer: {prod:,.0f} msgs/s (baseline fastavro encode only: {enc:,.0f} msgs/s; ratio {prod / enc:.2f})")
        lines.append(f"landing: {land_rate:,.0f} rows/s for {landed:,} rows (baseline pyiceberg append of decoded rows: {ice:,.0f} rows/s; ratio {land_rate / ice:.3f})")

        # Sustained landing on a larger real-shaped set, on a fresh broker topic namespace.
        broker.stop()
        broker = tansu_process(free_port(), root / "tansu2.log").start()
        base["kafka_bootstrap_servers"] = f"127.0.0.1:{broker.port}"
        s2 = Settings(data_dir=root / "sustained", consumer_group="bench-sustained", **base)
        symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"]
        per = args.trades // len(symbols)
        rows = [r for i, sym in enumerate(symbols) for r in make_trades(sym, 10_000_000 * (i + 1), per, seed=i)]
        prod2 = produce(s2, rows)
        landed2, land2 = land(s2)
        lines.append(f"sustained: produced {len(rows):,} at {prod2:,.0f} msgs/s; landed {landed2:,} at {land2:,.0f} rows/s "
                     f"(target >= 100,000; ratio to target {land2 / 100_000:.2f})")
    finally:
        broker.stop()
        registry.stop()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    print(f"commit {commit}")
    for line in lines:
        print(line)
    if args.record:
        doc = REPO / "docs" / "performance.md"
        text = doc.read_text() if doc.exists() else "# Performance\n"
        text += f"\n### Pipeline run at commit {commit}\n\n" + "\n".join(f"- {line}" for line in lines) + "\n"
        doc.write_text(text)


if __name__ == "__main__":
    main()
