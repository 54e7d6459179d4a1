"""Where ``book_series`` spends one symbol-hour: CPU and wall per phase, and the minimum over repeated calls.

Wraps the phases of :mod:`k2.query.book_series` (the DuckDB queries, the decimal -> int64 columns, the
price grid, ``_by_step``, ``_replay`` and inside it the per-side split ``_sides``, the step loop ``replay``
and ``metrics_columns``) with timers and calls ``Client.book_series(symbol,
start, start + 1 h, every="1s", depth=10)`` over fixed hours of the table ``benchmarks/book_series_bench.py``
builds. Run it from a checkout's root with that checkout's ``src`` first on the path (the timers patch the
module it imports), e.g. once from an older commit and once from the current one, alternately, to compare
on a shared machine (the minimum is the robust figure there; load changes wall time 2-4x).

    PYTHONPATH=src .venv/bin/python benchmarks/book_series_phases.py [--data-dir /tmp/k2-book-series-2x7] [--repeat 2]
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import k2.query.book_series as series
from k2.config import Settings
from k2.model.values import micros_to_datetime
from k2.query.client import Client

STARTS = (1723161800000000, 1723162000000000, 1723162100000000)  # within the BTCUSDT copies' span
TIMES: dict[str, dict[int, float]] = {}  # phase -> call number -> CPU seconds
CALL = [0]


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            per_call = TIMES.setdefault(name, {})
            per_call[CALL[0]] = per_call.get(CALL[0], 0.0) + time.process_time() - started

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/k2-book-series-2x7"))
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    # _replay holds _sides, replay (the step loop) and metrics_columns: timed inside it as well.
    for name in ("_columns", "_price_grid", "_by_step", "_replay", "_sides", "replay", "metrics_columns"):
        setattr(series, name, timed(name, getattr(series, name)))
    execute = Client._execute
    Client._execute = lambda self, sql, *a, **k: timed("duckdb", execute)(self, sql, *a, **k)  # type: ignore[method-assign]
    client = Client(Settings(data_dir=args.data_dir, query_pool_size=1))
    first = micros_to_datetime(STARTS[0])
    client.book_series("BTCUSDT", first, first + timedelta(minutes=1), "1s", 10)  # warm-up
    TIMES.clear()
    cpu, wall = [], []
    for _ in range(args.repeat):
        for start in map(micros_to_datetime, STARTS):
            CALL[0] += 1
            c0, w0 = time.process_time(), time.perf_counter()
            client.book_series("BTCUSDT", start, start + timedelta(hours=1), "1s", 10)
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
    client.close()
    calls = len(cpu)
    print(f"book_series 1 h at 1 s, top 10, {calls} calls over {len(STARTS)} fixed hours")
    print(
        f"  whole call: CPU min {min(cpu) * 1000:.0f} ms, wall min {min(wall) * 1000:.0f} ms, wall max {max(wall) * 1000:.0f} ms"
    )
    for name, by_call in TIMES.items():
        per_call = list(by_call.values())
        print(f"  {name}: CPU min {min(per_call) * 1000:.0f} ms, max {max(per_call) * 1000:.0f} ms per call")
    print(f"  load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
