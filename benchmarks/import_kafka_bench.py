"""``k2 import binance-trades --via-kafka`` rows/s and CPU, for one or more ``src`` trees in the same run.

The file: the real first-minute Binance trades file (``--rows 0``) or one of ``--rows`` built from it by
``import_bench.generate`` (the real rows' decimal strings and sides in a loop, contiguous ids). Each side
runs the real CLI in a subprocess (``python -m k2.cli import binance-trades FILE --via-kafka``) with
``PYTHONPATH`` set to its ``src`` tree, against one private Tansu broker (memory storage) and K2 registry,
each with a fresh data directory (so nothing is deduplicated away) and its own topic-less cluster state:
each side's rows go to the same topic, which is only written. Figures: wall seconds, rows/s by wall
clock, and rows per CPU second of the subprocess (its user + system time: librdkafka's threads
included, the CLI's start-up too). On a shared machine the CPU figure is the comparable one.

    .venv/bin/python benchmarks/import_kafka_bench.py --rows 200000 --src before=/tmp/main/src --src after=src
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_stack import bench_stack, git_commit  # noqa: E402
from import_bench import REAL, generate  # noqa: E402


def run_import(src: Path, csv_path: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one ``k2 import --via-kafka`` subprocess."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "k2.cli", "import", "binance-trades", str(csv_path), "--via-kafka"],
        env={**env, "PYTHONPATH": str(src.resolve())},
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"import with {src} failed ({done.returncode}): {done.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000, help="0: the real 1,830-row file itself")
    parser.add_argument("--src", action="append", default=[], help="name=path of a src tree (repeatable)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    sides = [tuple(s.split("=", 1)) for s in args.src] or [("this", str(REPO / "src"))]
    csv_path = REAL if args.rows == 0 else generate(args.rows)
    rows = sum(1 for _ in csv_path.open("rb"))
    load = os.getloadavg()[0]
    print(f"commit {git_commit()}, {csv_path.name} ({rows:,} rows), load {load:.1f}")
    with bench_stack() as (_, settings):
        for round_number in range(1, args.rounds + 1):
            for name, src in sides:
                with tempfile.TemporaryDirectory() as data_dir:
                    env = {
                        **os.environ,
                        "K2_DATA_DIR": data_dir,
                        "K2_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
                        "K2_SCHEMA_REGISTRY_URL": settings.schema_registry_url,
                    }
                    wall, cpu = run_import(Path(src), csv_path, env)
                print(
                    f"round {round_number} {name:>8}: {wall:6.2f} s wall, {cpu:6.2f} s CPU -> "
                    f"{rows / wall:9,.0f} rows/s wall, {rows / cpu:9,.0f} rows/CPU-s"
                )
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
