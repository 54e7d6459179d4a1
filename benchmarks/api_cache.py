"""REST API result cache: a repeated bars query from the cache against the same query computed.

Seeds ``--trades`` BTCUSDT trades (benchmarks/api_load.py's seed), serves the API as `k2 up` does (one
`k2 api serve` process), then times ``GET /v1/bars`` (1-minute bars over the whole seeded span, JSON) from
one client: ``--repeat`` first-time requests (each a new ``interval``, so a cache miss) and ``--repeat``
repeats of one of them (hits). Prints the medians and their ratio.

``--workers 1,2`` (issue 12 §3: "shared by the worker processes or per worker, measure which"): for each
``K2_API_WORKERS`` value a fresh server gets ``--distinct`` different bars queries, each asked ``--repeat``
times in shuffled order by 4 client threads, every request on a new connection (so the kernel picks the
worker). A shared cache would compute each query once; a per-worker cache computes it once per worker
that is asked it. Printed: the server's CPU seconds for the workload (all its processes: what the
repeated computations cost; a worker's own counters cannot be scraped apart, since /metrics reaches
whichever worker accepts the connection), the medians, and what a hit from the shared store
costs (an Arrow IPC file read through a memory map, :mod:`k2.api.shared_cache`). ``--per-worker`` runs
the workers without the shared directory (each its own cache in memory, as before it existed).

    .venv/bin/python benchmarks/api_cache.py [--trades 200000] [--repeat 7] [--workers 1,2 --distinct 16]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import httpx  # noqa: E402
import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402
from api_load import T0, seed  # noqa: E402

from k2.api.keys import KeyStore  # noqa: E402
from k2.config import Settings  # noqa: E402
from k2.telemetry.procs import ManagedProcess, free_port  # noqa: E402


def timed(c: httpx.Client, params: dict[str, str]) -> float:
    started = time.perf_counter()
    response = c.get("/v1/bars", params=params)
    assert response.status_code == 200, response.text
    return time.perf_counter() - started


def seeded_lake(tmp: Path, trades: int, extra: dict[str, str]) -> tuple[dict[str, str], float, str]:
    """The server's environment (also applied to this process), the seeded span in seconds, a read key."""
    overrides = {
        "K2_DATA_DIR": str(tmp / "k2"), "K2_LOG_LEVEL": "WARNING",
        "K2_API_RATE_LIMIT_PER_SECOND": "1000000", "K2_API_RATE_LIMIT_BURST": "1000000",
        "K2_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}", **extra,
    }  # fmt: skip
    os.environ.update(overrides)
    settings = Settings()
    span = seed(settings, trades)
    key, _ = KeyStore.from_settings(settings).create("cache", "read")
    return overrides, span, key


def fresh_request(url: str, key: str, params: dict[str, str]) -> float:
    """One bars request on a new connection (the kernel hands it to any worker)."""
    started = time.perf_counter()
    response = httpx.get(f"{url}/v1/bars", params=params, headers={"X-API-Key": key}, timeout=120)
    assert response.status_code == 200, response.text
    return time.perf_counter() - started


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its live descendants (the server and its workers)."""
    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def shared_hit_cost(url: str, key: str, params: dict[str, str], tmp: Path) -> float:
    """Median seconds to read one bars result back from an Arrow IPC file through a memory map."""
    response = httpx.get(
        f"{url}/v1/bars", params={**params, "format": "arrow"}, headers={"X-API-Key": key}, timeout=120
    )
    table = pa.ipc.open_stream(response.content).read_all()
    path = tmp / "shared.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    times = []
    for _ in range(50):
        started = time.perf_counter()
        with pa.memory_map(str(path)) as source:
            pa.ipc.open_file(source).read_all()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def workers_run(
    workers: int, args: argparse.Namespace, tmp: Path, overrides: dict[str, str], key: str, span: float
) -> dict[str, Any]:
    port = free_port()
    env = {**overrides, "K2_API_PORT": str(port), "K2_API_WORKERS": str(workers)}
    if args.per_worker:
        env["K2_API_CACHE_DIR"] = ""  # each worker its own cache in memory
    server = ManagedProcess(
        "api", (sys.executable, "-m", "k2.cli", "api", "serve"), port, tmp / f"api{workers}.log", env=env
    )
    server.start(timeout=120)
    url = f"http://127.0.0.1:{port}"
    end = (T0 + timedelta(seconds=span + 1)).isoformat()
    try:
        for _ in range(4 * workers):  # warm each worker's engine (extensions) with a query never cached
            warm = httpx.get(
                f"{url}/v1/trades",
                params={"symbol": "BTCUSDT", "start": T0.isoformat(), "end": end, "limit": "10"},
                headers={"X-API-Key": key},
                timeout=120,
            )
            assert warm.status_code == 200, warm.text
        queries = [
            {
                "symbol": "BTCUSDT",
                "start": (T0 + timedelta(seconds=i + 1)).isoformat(),
                "end": end,
                "interval": "1m",
            }
            for i in range(args.distinct)
        ]
        order = [i for i in range(args.distinct) for _ in range(args.repeat)]
        random.Random(7).shuffle(order)
        started, cpu0 = time.perf_counter(), tree_cpu(server.process.pid)
        with ThreadPoolExecutor(4) as pool:
            times = list(pool.map(lambda i: fresh_request(url, key, queries[i]), order))
        wall = time.perf_counter() - started
        cpu = tree_cpu(server.process.pid) - cpu0
        hit_cost = shared_hit_cost(url, key, queries[0], tmp)
    finally:
        server.stop()
    seen: set[int] = set()
    first, repeats = [], []
    for i, t in zip(order, times, strict=True):
        (repeats if i in seen else first).append(t)
        seen.add(i)
    return {
        "workers": workers,
        "wall": wall,
        "cpu": cpu,
        "requests": len(order),
        "first": statistics.median(first),
        "repeat": statistics.median(repeats),
        "hit_cost": hit_cost,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trades", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--workers", default="", help="e.g. 1,2: compare per-worker caches (see above)")
    parser.add_argument("--distinct", type=int, default=16)
    parser.add_argument("--per-worker", action="store_true", help="workers keep their own caches")
    args = parser.parse_args()
    if args.workers:
        return compare_workers(args)
    with tempfile.TemporaryDirectory(prefix="k2-api-cache-") as tmp:
        port = free_port()
        overrides, span, key = seeded_lake(Path(tmp), args.trades, {"K2_API_PORT": str(port)})
        server = ManagedProcess(
            "api",
            (sys.executable, "-m", "k2.cli", "api", "serve"),
            port,
            Path(tmp) / "api.log",
            env=overrides,
        )
        server.start(timeout=60)
        window = {
            "symbol": "BTCUSDT",
            "start": T0.isoformat(),
            "end": (T0 + timedelta(seconds=span + 1)).isoformat(),
        }
        try:
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}, timeout=120
            ) as c:
                timed(c, {**window, "interval": "1h"})  # warm the engine
                intervals = ["1m", "2m", "3m", "4m", "5m", "6m", "10m", "12m", "15m", "20m", "30m"][
                    : args.repeat
                ]
                misses = [timed(c, {**window, "interval": interval}) for interval in intervals]
                hits = [timed(c, {**window, "interval": "1m"}) for _ in range(args.repeat)]
        finally:
            server.stop()
    miss, hit = statistics.median(misses), statistics.median(hits)
    print(
        f"bars over {span:.0f} s of {args.trades:,} trades: computed {miss * 1000:.1f} ms, cached {hit * 1000:.1f} ms (medians), {miss / hit:.1f}x"
    )
    print(f"1-minute load average {os.getloadavg()[0]:.1f} (2 cores)")
    return 0


def compare_workers(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="k2-api-cache-") as tmp:
        overrides, span, key = seeded_lake(Path(tmp), args.trades, {})
        for workers in (int(w) for w in args.workers.split(",")):
            r = workers_run(workers, args, Path(tmp), overrides, key, span)
            print(
                f"K2_API_WORKERS={r['workers']}: {r['requests']} requests ({args.distinct} distinct x {args.repeat}) in "
                f"{r['wall']:.2f} s; server CPU {r['cpu']:.2f} s (all workers); median first request "
                f"{r['first'] * 1000:.1f} ms, median repeat {r['repeat'] * 1000:.1f} ms; a shared store's hit "
                f"(Arrow IPC via mmap) {r['hit_cost'] * 1e6:.0f} us"
            )
    print(f"1-minute load average {os.getloadavg()[0]:.1f} (2 cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
