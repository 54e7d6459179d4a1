"""A distributed engine vs K2's DuckDB on one trades table: 1-minute bars of every symbol of one full day, same run.

Engines (each computes the same bars; every result is checked equal to K2's own ``bars``, exact decimals):

* ``k2-duckdb``: K2's ``Client.bars`` (DuckDB, one process), one call per symbol (what a K2 user runs).
* ``duckdb-one-query``: the same aggregates for all symbols in one DuckDB ``iceberg_scan`` query.
* ``daft-ray-Nw``: Daft on a local Ray cluster (``k2.lake.distributed.daft_minute_bars``) with a head
  node and N worker nodes (1 CPU each), every node a separate ``ray start`` process.
* ``raydata-ray-Nw``: Ray Data's Iceberg reader (``ray.data.read_iceberg``) + ``groupby().map_groups``
  computing the bars exactly in pyarrow, same cluster (the alternative to Daft; measured to choose).

Data: trades from benchmarks/query_bench.py's generator (real BTCUSDT minute returns and trade
intensities, ``--symbols`` symbols, ``--days`` days, one commit per day) in a local SQL catalog +
file warehouse under ``benchmarks/data/distributed-<N>/`` (gitignored; reused unless ``--rebuild``).
Times are wall-clock seconds of the query only (cluster start reported separately), best of
``--runs``. The cluster shares this machine's cores with the driver: on a 2-core box, more worker
processes cannot add CPU; the numbers show overheads, not scale-out (docs/performance.md).

Run::

    .venv/bin/python benchmarks/distributed_bench.py --trades 10000000 --days 5
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO), str(REPO / "benchmarks")]

import query_bench  # noqa: E402

from k2.config import Settings  # noqa: E402
from k2.lake.catalog import ensure_tables, load_catalog, metadata_location  # noqa: E402
from k2.lake.engines import pyiceberg_properties  # noqa: E402
from k2.lake.writer import append  # noqa: E402
from k2.query.client import Client  # noqa: E402
from k2.query.engine import new_connection  # noqa: E402

COMPARED = ["exchange", "symbol", "open_time", "open", "high", "low", "close", "volume", "trade_count"]
ONE_QUERY = (
    "SELECT exchange, symbol, to_timestamp((epoch_us(exchange_ts) // 60000000) * 60) AS open_time, "
    "arg_min(price, (exchange_ts, trade_id)) AS open, max(price) AS high, min(price) AS low, "
    "arg_max(price, (exchange_ts, trade_id)) AS close, CAST(sum(quantity) AS DECIMAL(38,8)) AS volume, count(*) AS trade_count "
    "FROM iceberg_scan(?) WHERE exchange_ts >= ? AND exchange_ts < ? GROUP BY ALL ORDER BY exchange, symbol, open_time"
)


def build(settings: Settings, trades: int, symbols: list[str], days: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    minutes = query_bench.real_minutes()
    levels = {
        s: float(minutes[0][0]) * query_bench.SYMBOL_LEVELS[i % 10] * (1 + i // 10)
        for i, s in enumerate(symbols)
    }
    next_ids = {s: 1_000_000 for s in symbols}
    table = ensure_tables(load_catalog(settings), settings)["trades"]
    per_symbol = max(1, trades // (len(symbols) * days))
    started = time.monotonic()
    for day in range(days):
        day_trades, _ = query_bench.generate_day(
            day, symbols, per_symbol, 1e-9, rng, minutes, levels, next_ids
        )
        append(table, day_trades, "trades", {"k2.bench.day": str(day)})
        print(
            f"  day {day + 1}/{days}: {day_trades.num_rows:,} trades committed ({time.monotonic() - started:.0f}s)",
            flush=True,
        )
        del day_trades
        gc.collect()


def best(fn: Callable[[], pa.Table], runs: int) -> tuple[float, pa.Table]:
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    assert result is not None
    return min(times), result


def exact_bars_of_group(group: pa.Table) -> pa.Table:
    """One (exchange, symbol, minute) group -> one bar; open/close by (time, trade id), exact decimal volume."""
    ordered = group.sort_by([("exchange_ts", "ascending"), ("trade_id", "ascending")])
    price = ordered["price"]
    return pa.table({
        "exchange": [ordered["exchange"][0].as_py()], "symbol": [ordered["symbol"][0].as_py()],
        "open_time": pa.array([ordered["bucket"][0].as_py() * 60_000_000], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "open": pa.array([price[0].as_py()], price.type), "high": pa.array([pc.max(price).as_py()], price.type),
        "low": pa.array([pc.min(price).as_py()], price.type), "close": pa.array([price[-1].as_py()], price.type),
        "volume": pa.array([pc.sum(ordered["quantity"].cast(pa.decimal128(38, 8))).as_py()], pa.decimal128(38, 8)),
        "trade_count": pa.array([ordered.num_rows], pa.int64()),
    })  # fmt: skip


def ray_data_bars(properties: dict[str, str], start: Any, end: Any) -> pa.Table:
    import ray.data
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

    data = ray.data.read_iceberg(
        table_identifier="market_data.trades",
        row_filter=And(
            GreaterThanOrEqual("exchange_ts", start.isoformat()), LessThan("exchange_ts", end.isoformat())
        ),
        selected_fields=("exchange", "symbol", "exchange_ts", "trade_id", "price", "quantity"),
        catalog_kwargs={"name": "k2", **properties},
    )

    def add_bucket(batch: pa.Table) -> pa.Table:
        micros = batch["exchange_ts"].cast(pa.int64())
        return batch.append_column("bucket", pc.divide(micros, pa.scalar(60_000_000, pa.int64())))

    grouped = data.map_batches(add_bucket, batch_format="pyarrow").groupby(["exchange", "symbol", "bucket"])
    bars = grouped.map_groups(exact_bars_of_group, batch_format="pyarrow").to_arrow_refs()
    import ray

    table = pa.concat_tables(ray.get(bars))
    return table.sort_by([("exchange", "ascending"), ("symbol", "ascending"), ("open_time", "ascending")])


def run_cluster(
    settings: Settings, workers: int, start: Any, end: Any, runs: int, engines: list[str], expected: pa.Table
) -> dict[str, Any]:
    """One cluster size, in its own process (Daft's runner can be set once per process)."""
    import daft
    import ray
    from pyiceberg.catalog import load_catalog as pyiceberg_catalog
    from tests.support.ray_cluster import RayCluster

    from k2.lake.distributed import daft_minute_bars

    properties = pyiceberg_properties(settings, show_secrets=True)
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    with RayCluster(workers=workers) as cluster:
        try:
            cluster.connect()
            cluster.wait_for_nodes(workers + 1)
            out["cluster_start_s"] = time.perf_counter() - t0
            daft.set_runner_ray(address=cluster.address)
            table = pyiceberg_catalog("k2", **properties).load_table("market_data.trades")
            runners = {
                "daft": lambda: daft_minute_bars(table, start, end),
                "raydata": lambda: ray_data_bars(properties, start, end),
            }
            for engine in engines:
                out[engine], result = best(runners[engine], runs)
                out[f"{engine}_equal"] = result.cast(expected.schema).to_pylist() == expected.to_pylist()
        finally:
            ray.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trades", type=int, default=50_000_000)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--day", type=int, default=0, help="Which day (0-based) to aggregate.")
    parser.add_argument("--runs", type=int, default=2, help="Runs per engine; the best is reported.")
    parser.add_argument("--workers", default="1,2", help="Worker-node counts to try.")
    parser.add_argument("--engines", default="daft,raydata", help="Cluster engines: daft, raydata.")
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--cluster-run", type=int, default=0, help=argparse.SUPPRESS
    )  # internal: one cluster size
    args = parser.parse_args()

    root = REPO / "benchmarks" / "data" / f"distributed-{args.trades}-{args.days}"
    settings = Settings(data_dir=root / "k2")
    symbols = [f"SYM{i:02d}USDT" for i in range(args.symbols)]
    if args.rebuild or not (root / "k2" / "catalog.db").exists():
        print(
            f"building {args.trades:,} trades, {args.symbols} symbols, {args.days} days in {root} ...",
            flush=True,
        )
        t0 = time.monotonic()
        build(settings, args.trades, symbols, args.days, args.seed)
        print(f"built in {time.monotonic() - t0:.0f}s", flush=True)
    start = query_bench.DAY0 + timedelta(days=args.day)
    end = start + timedelta(days=1)
    engines = args.engines.split(",")
    expected_file = root / f"expected-day{args.day}.parquet"
    if args.cluster_run:
        import pyarrow.parquet as pq

        out = run_cluster(
            settings, args.cluster_run, start, end, args.runs, engines, pq.read_table(expected_file)
        )
        print("CLUSTER " + json.dumps(out))
        return
    client = Client(settings)

    def k2_bars() -> pa.Table:
        parts = [
            client.bars(s, "1m", start, end, include_recent=False).table.select(COMPARED) for s in symbols
        ]
        return pa.concat_tables(parts)

    location = metadata_location(ensure_tables(load_catalog(settings), settings)["trades"])
    con = new_connection(settings)
    timings: dict[str, Any] = {}
    timings["k2-duckdb"], expected = best(k2_bars, args.runs)
    timings["duckdb-one-query"], one = best(
        lambda: con.execute(ONE_QUERY, [location, start, end]).to_arrow_table(), args.runs
    )
    assert one.select(COMPARED).cast(expected.schema).to_pylist() == expected.to_pylist(), (
        "one-query DuckDB differs from K2 bars"
    )
    import pyarrow.parquet as pq

    pq.write_table(expected, expected_file)
    for workers in (int(w) for w in args.workers.split(",")):
        argv = [sys.executable, __file__, f"--trades={args.trades}", f"--symbols={args.symbols}", f"--days={args.days}",
                f"--day={args.day}", f"--runs={args.runs}", f"--engines={args.engines}", f"--cluster-run={workers}"]  # fmt: skip
        child = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
        lines = [line for line in child.stdout.splitlines() if line.startswith("CLUSTER ")]
        if child.returncode != 0 or not lines:
            raise RuntimeError(
                f"expected the {workers}-worker cluster run to report, found:\n{child.stdout[-2000:]}{child.stderr[-3000:]}"
            )
        cluster = json.loads(lines[-1].removeprefix("CLUSTER "))
        timings[f"ray-{workers}w-cluster-start"] = cluster["cluster_start_s"]
        for engine in engines:
            timings[f"{engine}-ray-{workers}w"] = cluster[engine]
            assert cluster[f"{engine}_equal"], f"{engine} on {workers} workers differs from K2 bars"
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    day_rows = con.execute(
        "SELECT count(*) FROM iceberg_scan(?) WHERE exchange_ts >= ? AND exchange_ts < ?",
        [location, start, end],
    ).fetchone()
    summary = {"commit": commit, "table_trades": args.trades, "day_trades": day_rows[0] if day_rows else None,
               "bars": expected.num_rows, "symbols": args.symbols, "all_equal_to_k2_bars": True,
               "seconds_best_of": args.runs, **{k: round(v, 3) for k, v in timings.items()}}  # fmt: skip
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
