"""Bulk import benchmark: Binance trades CSV -> committed Iceberg rows/s, with baselines from the same run.

Generates ``benchmarks/data/BTCUSDT-trades-2021-01-03.csv`` (gitignored) in the official spot layout
(no header, 7 columns, ``True``/``False``, ms times) from the real first-minute file: the real rows'
price/quantity/quote-quantity strings and sides are replayed in a loop with contiguous trade ids and
times spread over the day, so the decimals have the real shapes.

Measures, each on the same file in one process:

* baseline 1: ``pyarrow.csv.read_csv`` alone (typed columns, exact decimals) -- the parse floor;
* baseline 2: ``pyiceberg`` ``append`` alone of the already-canonical rows (one commit) -- the write floor;
* K2: ``import_files("binance-trades", ...)`` end to end (checksum, parse, map, validate, dedup against
  the table, sorted append, commit), then a re-import of the same file (dedup path: adds nothing);
* storage: bytes of the table's Parquet data files per stored trade and the ratio to the source CSV.

Usage::

    .venv/bin/python benchmarks/import_bench.py [--rows 5000000]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.sources.files import import_files
from k2.sources.files.formats import SPOT_TRADES
from k2.sources.files.parse import _ARROW_TYPES, FALSE_VALUES, TRUE_VALUES

REPO = Path(__file__).resolve().parents[1]
REAL = (
    REPO.parent / "shared" / "data" / "binance" / "public-data" / "BTCUSDT-trades-2021-01-03.first-minute.csv"
)
DATA = REPO / "benchmarks" / "data"


def generate(rows: int) -> Path:
    """Write the benchmark CSV (cached by row count)."""
    DATA.mkdir(parents=True, exist_ok=True)
    target = DATA / f"BTCUSDT-trades-2021-01-03.{rows}.csv"
    if target.exists():
        return target
    names = [c.name for c in SPOT_TRADES]
    real = pa_csv.read_csv(
        REAL,
        read_options=pa_csv.ReadOptions(column_names=names),
        convert_options=pa_csv.ConvertOptions(column_types={n: pa.string() for n in names}),
    )
    n_real = real.num_rows
    first_id = int(real["trade_id"][0].as_py())
    start_ms = int(real["time"][0].as_py())
    chunk = 1_000_000
    with target.open("wb") as out:
        for offset in range(0, rows, chunk):
            count = min(chunk, rows - offset)
            position = np.arange(offset, offset + count, dtype=np.int64)
            index = pa.array(position % n_real)
            ids = pa.array(first_id + position)
            times = pa.array(start_ms + position * 86_400_000 // rows)
            table = pa.table(
                {
                    "trade_id": ids.cast(pa.string()),
                    "price": pc.take(real["price"], index),
                    "qty": pc.take(real["qty"], index),
                    "quote_qty": pc.take(real["quote_qty"], index),
                    "time": times.cast(pa.string()),
                    "is_buyer_maker": pc.take(real["is_buyer_maker"], index),
                    "is_best_match": pc.take(real["is_best_match"], index),
                }
            )
            sink = pa.BufferOutputStream()
            pa_csv.write_csv(table, sink, pa_csv.WriteOptions(include_header=False, quoting_style="none"))
            out.write(sink.getvalue().to_pybytes())
    return target


def data_bytes(settings: Settings, short: str = "trades") -> tuple[int, int]:
    table = ensure_tables(load_catalog(settings), settings)[short]
    files = list(table.inspect.files().to_pylist())
    return sum(int(f["file_size_in_bytes"]) for f in files), len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    args = parser.parse_args()
    started = time.perf_counter()
    csv_path = generate(args.rows)
    print(
        f"data: {csv_path.name}  {csv_path.stat().st_size / 1e6:,.1f} MB  ({time.perf_counter() - started:.1f} s to generate)"
    )
    csv_bytes = csv_path.stat().st_size

    # Baseline 1: pyarrow CSV read alone.
    names = [c.name for c in SPOT_TRADES]
    t0, c0 = time.perf_counter(), time.process_time()
    typed = pa_csv.read_csv(
        csv_path,
        read_options=pa_csv.ReadOptions(column_names=names),
        convert_options=pa_csv.ConvertOptions(
            column_types={c.name: _ARROW_TYPES[c.kind] for c in SPOT_TRADES},
            true_values=TRUE_VALUES,
            false_values=FALSE_VALUES,
        ),
    )
    read_s, read_cpu = time.perf_counter() - t0, time.process_time() - c0
    rows = typed.num_rows
    del typed

    root = Path(tempfile.mkdtemp(prefix="k2-import-bench-"))
    try:
        # K2 end to end.
        settings = Settings(data_dir=root / "k2")
        t0, c0 = time.perf_counter(), time.process_time()
        report = import_files("binance-trades", [csv_path], settings)[0]
        k2_s, k2_cpu = time.perf_counter() - t0, time.process_time() - c0
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        assert report.imported == rows, (report.imported, rows)
        stored, files = data_bytes(settings)
        t0, c0 = time.perf_counter(), time.process_time()
        again = import_files("binance-trades", [csv_path], settings)[0]
        reimport_s, reimport_cpu = time.perf_counter() - t0, time.process_time() - c0
        assert again.imported == 0 and again.duplicates == rows

        # Baseline 2: pyiceberg append alone of the canonical rows K2 stored (one commit, fresh table).
        canonical = ensure_tables(load_catalog(settings), settings)["trades"].scan().to_arrow()
        other = Settings(data_dir=root / "plain")
        table = ensure_tables(load_catalog(other), other)["trades"]
        t0, c0 = time.perf_counter(), time.process_time()
        table.append(canonical)
        append_s, append_cpu = time.perf_counter() - t0, time.process_time() - c0
        del canonical
    finally:
        shutil.rmtree(root, ignore_errors=True)

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    print(f"commit {commit} + uncommitted work; {os.cpu_count()} CPUs (shared machine)")
    print(f"rows: {rows:,}")
    print(
        f"peak RSS after the k2 import: {peak_mb:,.0f} MB (import_commit_rows={Settings().import_commit_rows:,})"
    )
    load = os.getloadavg()[0]
    print(
        f"load average at the end: {load:.1f} on {os.cpu_count()} CPUs (rows per CPU-second = throughput with a free core)"
    )
    for label, wall, cpu in (
        ("baseline pyarrow.csv.read_csv alone", read_s, read_cpu),
        ("baseline pyiceberg append alone", append_s, append_cpu),
        (f"k2 import, CSV -> committed Iceberg ({len(report.snapshots)} commits)", k2_s, k2_cpu),
        ("k2 re-import (dedup, adds nothing)", reimport_s, reimport_cpu),
    ):
        print(
            f"{label:<58} {rows / wall:>11,.0f} rows/s  ({wall:6.2f} s wall, {cpu:6.2f} s CPU, {rows / cpu:>11,.0f} rows per CPU-s)"
        )
    print(
        f"ratio k2 / read alone: {read_s / k2_s:.2f}; k2 / append alone: {append_s / k2_s:.2f}; target 500,000 rows/s: "
        f"{'met' if rows / k2_s >= 500_000 else 'NOT met'}"
    )
    print(
        f"storage: {stored / rows:.1f} bytes per trade in {files} Parquet files; source CSV {csv_bytes / rows:.1f} bytes per trade; "
        f"compression ratio {csv_bytes / stored:.2f}x"
    )


if __name__ == "__main__":
    main()
