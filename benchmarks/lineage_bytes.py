"""Storage cost of the lineage columns (issue 17 §2) on the demo capture, landed the way `k2 demo` lands it.

The demo's Binance capture (19,904 BTCUSDT trades and its bookTicker quotes) is produced as Avro to a
local Tansu broker (memory storage) and landed by one LandingConsumer into a fresh SQLite catalog, with
the demo's commit settings. Then, for trades and quotes:

* bytes/row of the landed data files (what a K2 table costs now, lineage and currency included);
* the compressed bytes of each lineage column and of ``currency`` (Parquet column-chunk metadata), so
  "before" = the same files without those columns;
* a control: the same rows rewritten in one append with and without the lineage columns (what the
  columns cost when the writer batches differ from the landing's).

Run: PYTHONPATH=src .venv/bin/python benchmarks/lineage_bytes.py
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from bench_stack import bench_stack

from k2.bus.producer import MarketDataProducer
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.lake.writer import append
from k2.landing import LandingConsumer
from k2.model import LINEAGE_FIELDS
from k2.sources.binance import iter_capture

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples" / "binance"
EXTRA = [f.name for f in LINEAGE_FIELDS] + ["currency"]


def column_bytes(table: object) -> tuple[int, int, dict[str, int]]:
    """(rows, file bytes, compressed bytes per column) over the table's current data files."""
    files = table.inspect.files()  # type: ignore[attr-defined]
    per_column: dict[str, int] = defaultdict(int)
    rows = total = 0
    for path, size in zip(
        files["file_path"].to_pylist(), files["file_size_in_bytes"].to_pylist(), strict=True
    ):
        meta = pq.ParquetFile(path.removeprefix("file://")).metadata
        rows += meta.num_rows
        total += size
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                chunk = group.column(c)
                per_column[chunk.path_in_schema.split(".")[0]] += chunk.total_compressed_size
    return rows, total, dict(per_column)


def control(settings: Settings, short: str, data: pa.Table) -> tuple[float, float]:
    """bytes/row of ``data`` appended in one commit to fresh tables: with lineage, and with it null (the
    writer adds absent lineage columns as nulls: all-null chunks cost a few bytes per file)."""
    out = []
    for keep in (True, False):
        root = Path(tempfile.mkdtemp())
        lake = settings.model_copy(update={"data_dir": root / "k2"})
        table = ensure_tables(load_catalog(lake), lake)[short]
        rows = data if keep else data.drop_columns([f.name for f in LINEAGE_FIELDS])
        append(table, rows, short)
        table.refresh()
        n, size, _ = column_bytes(table)
        out.append(size / n)
    return out[0], out[1]


def main() -> None:
    with bench_stack(consumer_group="lineage-bytes") as (_root, settings):
        with MarketDataProducer(settings) as producer:
            for record, row, _ in iter_capture(sorted(SAMPLES.glob("spot_btcusdt_*.gz"))):
                producer.send(record, row)
        consumer = LandingConsumer(
            settings, topics=["market.crypto.trades.binance", "market.crypto.quotes.binance"]
        )
        stats = consumer.run(idle_exit_seconds=10)
        print(f"landed {stats.landed:,} rows ({stats.per_table})")
        for short in ("trades", "quotes"):
            table = consumer.tables[short]
            table.refresh()
            rows, size, per_column = column_bytes(table)
            extra = sum(per_column.get(c, 0) for c in EXTRA)
            detail = ", ".join(f"{c} {per_column.get(c, 0) / rows:.3f}" for c in EXTRA)
            print(
                f"{short}: {rows:,} rows in {len(table.inspect.files())} files; landed {size / rows:.2f} B/row; "
                f"lineage+currency columns {extra / rows:.2f} B/row ({detail}); "
                f"without them {(size - extra) / rows:.2f} B/row (+{extra / (size - extra):.1%})"
            )
            with_lineage, without = control(settings, short, table.scan().to_arrow())
            print(
                f"  one-commit rewrite: with lineage {with_lineage:.2f} B/row, without {without:.2f} B/row "
                f"(+{with_lineage / without - 1:.1%})"
            )


if __name__ == "__main__":
    main()
