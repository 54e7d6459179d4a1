"""REST API result cache: a repeated bars query from the cache against the same query computed.

Seeds ``--trades`` BTCUSDT trades (benchmarks/api_load.py's seed), serves the API as `k2 up` does (one
`k2 api serve` process), then times ``GET /v1/bars`` (1-minute bars over the whole seeded span, JSON) from
one client: ``--repeat`` first-time requests (each a new ``interval``, so a cache miss) and ``--repeat``
repeats of one of them (hits). Prints the medians and their ratio.

    .venv/bin/python benchmarks/api_cache.py [--trades 200000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import httpx  # noqa: E402
from api_load import T0, seed  # noqa: E402

from k2.api.keys import KeyStore  # noqa: E402
from k2.config import Settings  # noqa: E402
from k2.telemetry.procs import ManagedProcess, free_port  # noqa: E402


def timed(c: httpx.Client, params: dict[str, str]) -> float:
    started = time.perf_counter()
    response = c.get("/v1/bars", params=params)
    assert response.status_code == 200, response.text
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trades", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="k2-api-cache-") as tmp:
        port = free_port()
        overrides = {
            "K2_DATA_DIR": str(Path(tmp) / "k2"), "K2_API_PORT": str(port), "K2_LOG_LEVEL": "WARNING",
            "K2_API_RATE_LIMIT_PER_SECOND": "1000000", "K2_API_RATE_LIMIT_BURST": "1000000",
            "K2_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        }  # fmt: skip
        os.environ.update(overrides)
        settings = Settings()
        span = seed(settings, args.trades)
        key, _ = KeyStore.from_settings(settings).create("cache", "read")
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


if __name__ == "__main__":
    sys.exit(main())
