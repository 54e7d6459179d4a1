"""Bytes per stored book-delta row (issue 14 target: <= 8), by landing batch size, with a per-column split.

Data: the whole real BTCUSDT capture's book deltas (data/samples/binance/spot_btcusdt_*.gz, ~300k rows,
parsed by the import's own reader). Each run writes them into a fresh ``market_data.book_deltas`` (K2's
table properties: zstd level 3, 65,536-row groups, 64 KB dictionaries, rows sorted by symbol and update
id) with :func:`k2.lake.writer.append` in batches of ``--batches`` rows each - what the landing consumer
commits: up to ``landing_commit_rows`` (200,000) rows, or what arrived within
``landing_commit_interval_seconds`` (5 s, ~2,300 rows at the capture's ~455 rows/s) on a live feed - and
reports the data files' bytes per row and each column's share (compressed column-chunk bytes from the
Parquet footers).

    .venv/bin/python benchmarks/book_bytes_bench.py [--batches 300000,200000,20000,2300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from book_bench import capture_rows  # noqa: E402

from k2.config import Settings  # noqa: E402
from k2.lake.catalog import ensure_tables, load_catalog  # noqa: E402
from k2.lake.writer import append  # noqa: E402
from k2.model import BOOK_DELTA  # noqa: E402
from k2.model.arrow import records_to_arrow  # noqa: E402


def measure(data: object, batch: int, properties: dict[str, str]) -> tuple[int, int, int, Counter[str]]:
    """(rows, files, bytes, compressed bytes per column) after appending ``data`` in ``batch``-row commits."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "k2")
        table = ensure_tables(load_catalog(settings), settings)["book_deltas"]
        if properties:
            with table.transaction() as tx:
                tx.set_properties(properties)
        rows = data.num_rows  # type: ignore[attr-defined]
        for offset in range(0, rows, batch):
            append(table, data.slice(offset, batch), "book_deltas")  # type: ignore[attr-defined]
        files = table.inspect.files().to_pylist()
        columns: Counter[str] = Counter()
        for f in files:
            meta = pq.ParquetFile(f["file_path"].removeprefix("file://")).metadata
            for g in range(meta.num_row_groups):
                group = meta.row_group(g)
                for c in range(group.num_columns):
                    chunk = group.column(c)
                    columns[chunk.path_in_schema] += chunk.total_compressed_size
        return rows, len(files), sum(f["file_size_in_bytes"] for f in files), columns


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", default="300000,200000,20000,2300")
    parser.add_argument("--set", action="append", default=[], help="a table property to try, KEY=VALUE")
    args = parser.parse_args()
    properties = dict(item.split("=", 1) for item in args.set)
    data = records_to_arrow(BOOK_DELTA, capture_rows())
    for batch in (int(b) for b in args.batches.split(",")):
        rows, files, size, columns = measure(data, batch, properties)
        split = ", ".join(f"{name} {b / rows:.2f}" for name, b in columns.most_common(8))
        print(
            f"{properties or 'K2 defaults'}: batches of {batch:,}: {rows:,} rows, {files} files, {size / rows:.2f} bytes/row ({split})"
        )


if __name__ == "__main__":
    main()
