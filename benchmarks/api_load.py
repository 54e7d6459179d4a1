"""REST API load test: locust, headless, 50 concurrent clients on loopback, bounded in time.

Serves the API the way `k2 up` does (`python -m k2.cli api serve`, one uvicorn process) over a lake
seeded with real-shaped trades (tests/api/helpers: the landing tests' generator), and drives each
endpoint for ``--seconds`` with ``--users`` clients that send requests back to back:

* baseline ``GET /health`` (HTTP + auth-free framework cost, no query);
* ``GET /v1/trades`` (a page of ``--page`` trades in a random 20 s window, JSON);
* ``GET /v1/bars`` (1-second OHLCV bars over a random 60 s window, JSON).

A second baseline is the direct query-layer call (k2.query.Client, same queries, 1 thread), to show
the API's overhead. Prints requests/s, p50/p99 latency, the error count and the server's CPU per request
(its process's CPU time over the run / requests answered) per endpoint, and the direct calls' CPU per call
(after one uncounted call that loads DuckDB's extensions); any error fails
the run (exit 1). The rate limit is raised via settings for the run. `--record` writes the results to
docs/performance.md ("REST API load test").

    .venv/bin/python benchmarks/api_load.py [--seconds 30] [--users 50] [--record]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from tests.api.helpers import trades_table  # noqa: E402
from tests.landing.helpers import BASE_TS  # noqa: E402

from k2.api.keys import KeyStore  # noqa: E402
from k2.config import Settings  # noqa: E402
from k2.lake.catalog import ensure_tables, load_catalog  # noqa: E402
from k2.lake.writer import append  # noqa: E402
from k2.query.client import Client  # noqa: E402
from k2.telemetry.procs import ManagedProcess, free_port  # noqa: E402

T0 = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=BASE_TS)

LOCUSTFILE = """
import os, random
from datetime import timedelta, datetime
from locust import FastHttpUser, constant, task

T0 = datetime.fromisoformat(os.environ["LOAD_T0"])
SPAN = float(os.environ["LOAD_SPAN_SECONDS"])
KEY = os.environ["LOAD_KEY"]
KIND = os.environ["LOAD_KIND"]
PAGE = os.environ["LOAD_PAGE"]


def window(seconds):
    start = T0 + timedelta(seconds=random.uniform(0, max(0.0, SPAN - seconds)))
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
    return start.strftime(fmt), (start + timedelta(seconds=seconds)).strftime(fmt)


class ApiUser(FastHttpUser):
    wait_time = constant(0)
    network_timeout = 60.0
    connection_timeout = 60.0

    @task
    def call(self):
        headers = {"X-API-Key": KEY}
        if KIND == "health":
            self.client.get("/health", name="/health")
        elif KIND == "trades":
            s, e = window(20)
            self.client.get(f"/v1/trades?symbol=BTCUSDT&start={s}&end={e}&limit={PAGE}", headers=headers, name="/v1/trades")
        else:
            s, e = window(60)
            self.client.get(f"/v1/bars?symbol=BTCUSDT&interval=1s&start={s}&end={e}", headers=headers, name="/v1/bars")
"""


def seed(settings: Settings, trades: int) -> float:
    """Write ``trades`` BTCUSDT trades (2 ms apart) in commits of 50,000; returns the time span in seconds."""
    tables = ensure_tables(load_catalog(settings), settings)
    batch = 50_000
    for first in range(0, trades, batch):
        n = min(batch, trades - first)
        append(
            tables["trades"],
            trades_table("BTCUSDT", 1_000_000 + first, n, ts0=BASE_TS + first * 2_000),
            "trades",
        )
    return trades * 0.002


def run_locust(
    kind: str, url: str, key: str, span: float, users: int, seconds: int, page: int, workdir: Path
) -> dict[str, float]:
    locustfile = workdir / "locustfile.py"
    locustfile.write_text(LOCUSTFILE)
    prefix = workdir / f"stats_{kind}"
    env = {
        **os.environ,
        "LOAD_T0": T0.isoformat(),
        "LOAD_SPAN_SECONDS": str(span),
        "LOAD_KEY": key,
        "LOAD_KIND": kind,
        "LOAD_PAGE": str(page),
    }
    cmd = [
        str(Path(sys.executable).parent / "locust"),
        "-f",
        str(locustfile),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{seconds}s",
        "--host",
        url,
        "--csv",
        str(prefix),
        "--only-summary",
        "--loglevel",
        "WARNING",
        "--stop-timeout",
        "10",
    ]
    subprocess.run(cmd, env=env, check=False, capture_output=True, text=True, timeout=seconds + 120)
    with open(f"{prefix}_stats.csv", newline="") as fh:
        rows = {r["Name"]: r for r in csv.DictReader(fh)}
    agg = rows["Aggregated"]
    return {
        "requests": float(agg["Request Count"]),
        "failures": float(agg["Failure Count"]),
        "rps": float(agg["Requests/s"]),
        "p50_ms": float(agg["50%"]),
        "p99_ms": float(agg["99%"]),
    }


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads: DuckDB's included), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def direct_baseline(
    settings: Settings, kind: str, span: float, seconds: float, page: int
) -> dict[str, float]:
    """The same queries through k2.query.Client in this process, one at a time."""
    latencies = []
    cpu = 0.0  # CPU of this process (DuckDB's threads included) during the calls
    with Client(settings) as client:
        client.trades(
            "BTCUSDT", T0, T0 + timedelta(seconds=1), limit=1
        )  # not counted: loads DuckDB's extensions
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            width = 20 if kind == "trades" else 60
            start = T0 + timedelta(seconds=random.uniform(0, max(0.0, span - width)))
            end = start + timedelta(seconds=width)
            t, c = time.perf_counter(), time.process_time()
            if kind == "trades":
                client.trades("BTCUSDT", start, end, limit=page)
            else:
                client.bars("BTCUSDT", "1s", start, end)
            latencies.append(time.perf_counter() - t)
            cpu += time.process_time() - c
    latencies.sort()
    return {
        "cpu_ms": 1000 * cpu / max(1, len(latencies)),
        "requests": float(len(latencies)),
        "rps": len(latencies) / sum(latencies),
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=30, help="Duration per endpoint.")
    parser.add_argument("--users", type=int, default=50, help="Concurrent locust clients.")
    parser.add_argument("--trades", type=int, default=200_000, help="Seeded BTCUSDT trades.")
    parser.add_argument("--page", type=int, default=1000, help="limit= of the /v1/trades requests.")
    parser.add_argument("--record", action="store_true", help="Write the results to docs/performance.md.")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="k2-api-load-") as tmp:
        root = Path(tmp)
        port = free_port()
        overrides = {
            "K2_DATA_DIR": str(root / "k2"),
            "K2_API_PORT": str(port),
            # Loopback load from one key: the per-key rate limit is raised for the run.
            "K2_API_RATE_LIMIT_PER_SECOND": "1000000",
            "K2_API_RATE_LIMIT_BURST": "1000000",
            # ...and so are the in-progress bounds (one key, --users clients at once).
            "K2_API_MAX_CONCURRENT_PER_KEY": "1000",
            "K2_API_MAX_CONCURRENT_REQUESTS": "1000",
            "K2_LOG_LEVEL": "WARNING",
            "K2_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # nothing listens: queries end in the past
        }
        os.environ.update(overrides)
        settings = Settings()
        t = time.perf_counter()
        span = seed(settings, args.trades)
        print(f"seeded {args.trades:,} trades over {span:.0f} s in {time.perf_counter() - t:.1f} s")
        key, _ = KeyStore.from_settings(settings).create("load", "read")

        server = ManagedProcess(
            "api", (sys.executable, "-m", "k2.cli", "api", "serve"), port, root / "api.log", env=overrides
        )
        server.start(timeout=60)
        url = f"http://127.0.0.1:{port}"
        results: dict[str, dict[str, float]] = {}
        try:
            with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as c:  # warm the pool
                for path in (
                    "/v1/trades?symbol=BTCUSDT&limit=10&include_recent=false",
                    "/v1/bars?symbol=BTCUSDT&interval=1s&include_recent=false",
                ):
                    assert c.get(path).status_code == 200, path
            pid = server.process.pid
            for kind in ("health", "trades", "bars"):
                cpu = process_cpu_seconds(pid)
                results[kind] = run_locust(kind, url, key, span, args.users, args.seconds, args.page, root)
                r = results[kind]
                # Server CPU per answered request (the server's threads only; locust's CPU is not counted).
                r["server_cpu_ms"] = 1000 * (process_cpu_seconds(pid) - cpu) / max(1.0, r["requests"])
                print(
                    f"/{kind:<7} {r['rps']:>8.1f} req/s  p50 {r['p50_ms']:>6.0f} ms  p99 {r['p99_ms']:>6.0f} ms  "
                    f"requests {r['requests']:>7.0f}  errors {r['failures']:.0f}  server CPU {r['server_cpu_ms']:.1f} ms/request"
                )
        finally:
            server.stop()
        direct = {
            kind: direct_baseline(settings, kind, span, min(10.0, args.seconds), args.page)
            for kind in ("trades", "bars")
        }
        for kind, r in direct.items():
            print(
                f"direct {kind:<7} {r['rps']:>6.1f} calls/s (1 thread)  p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms"
                f"  CPU {r['cpu_ms']:.1f} ms/call  API/direct {results[kind]['rps'] / r['rps']:.2f}x"
            )
        errors = sum(int(r["failures"]) for r in results.values())

    load = (load_before, os.getloadavg()[0])
    print(f"1-minute load average: {load[0]:.1f} at start, {load[1]:.1f} at end (2 cores)")
    if args.record:
        record(args, results, direct, load)
    if errors:
        print(f"FAILED: {errors} errors")
        return 1
    return 0


def record(
    args: argparse.Namespace,
    results: dict[str, dict[str, float]],
    direct: dict[str, dict[str, float]],
    load: tuple[float, float],
) -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    lines = [
        "",
        f"Command: `.venv/bin/python benchmarks/api_load.py --seconds {args.seconds} --users {args.users} --record` "
        f"(commit {commit} + uncommitted work, {datetime.now(UTC):%Y-%m-%d}). Locust (FastHttpUser) headless, "
        f"{args.users} concurrent clients sending back to back on loopback, {args.seconds} s per endpoint, against one "
        f"`k2 api serve` process (uvicorn) over {args.trades:,} seeded trades (SQLite catalog, local warehouse); "
        "locust and the server share the 2-core machine, itself shared with other engineers' jobs "
        f"(1-minute load average {load[0]:.1f} at start, {load[1]:.1f} at end). Throughput is bound by the query "
        "layer's cost per call (compare the direct rows); latency under 50 clients is mostly queueing.",
        "",
        "| endpoint | requests/s | p50 ms | p99 ms | requests | errors |",
        "|---|---|---|---|---|---|",
    ]
    labels = {
        "health": "`GET /health` (baseline: HTTP only)",
        "trades": f"`GET /v1/trades` (page of {args.page}, random 20 s window, JSON)",
        "bars": "`GET /v1/bars` (1 s bars, random 60 s window, JSON)",
    }
    for kind, r in results.items():
        lines.append(
            f"| {labels[kind]} | {r['rps']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['requests']:.0f} | {r['failures']:.0f} |"
        )
    for kind, r in direct.items():
        ratio = results[kind]["rps"] / r["rps"] if r["rps"] else float("nan")
        lines.append(
            f"| direct `Client.{kind}` (baseline: same queries, 1 thread, no HTTP) | {r['rps']:.1f} | {r['p50_ms']:.0f} | "
            f"{r['p99_ms']:.0f} | {r['requests']:.0f} | 0 |"
        )
        lines.append(f"|  ratio API / direct for {kind} | {ratio:.2f}x | | | | |")
    path = REPO / "docs" / "performance.md"
    text = path.read_text()
    heading = "## REST API load test (50 concurrent clients)"
    block = "\n".join(lines) + "\n"
    start = text.index(heading) + len(heading)
    nxt = text.find("\n## ", start)
    nxt = len(text) if nxt == -1 else nxt
    path.write_text(text[:start] + "\n" + block + text[nxt:])
    print(f"recorded in {path}")


if __name__ == "__main__":
    sys.exit(main())
