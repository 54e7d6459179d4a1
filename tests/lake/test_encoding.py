"""The Parquet encodings of the files K2 writes (real SQLite catalog, local warehouse, K2's own append).

Issue 15 §5 (<= 8 bytes per stored trade): the times, ids and a trade's price are written
DELTA_BINARY_PACKED (they rise by small steps in K2's sort order), every other column keeps its
dictionary, and the rows read back exactly as written. The sizes are measured by
``benchmarks/encoding_probe.py`` (docs/performance.md), not here.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.table import Table

from k2.config import Settings
from k2.lake.catalog import TABLES, ensure_tables, load_catalog
from k2.lake.encoding import DELTA_COLUMNS, DELTA_PROPERTY, TABLE_DELTA_COLUMNS
from k2.lake.writer import append, conform, sort_for_table
from k2.model import BOOK_DELTA, QUOTE
from k2.model.arrow import records_to_arrow
from tests.book.capture import capture_deltas
from tests.support.factories import BASE_TS, trade_batch, wire_quote
from tests.support.tables import assert_same_rows

DELTA = "DELTA_BINARY_PACKED"


def _encodings(table: Table) -> dict[str, set[str]]:
    """Per Parquet column path, the encodings of its chunks in every data file of ``table``."""
    found: dict[str, set[str]] = {}
    for path in table.inspect.files()["file_path"].to_pylist():
        with table.io.new_input(path).open() as stream:
            meta = pq.ParquetFile(stream).metadata
        for g in range(meta.num_row_groups):
            for c in range(meta.num_columns):
                column = meta.row_group(g).column(c)
                found.setdefault(column.path_in_schema, set()).update(column.encodings)
    return found


def _written(tmp_path: Path, short: str, data: pa.Table) -> Table:
    settings = Settings(data_dir=tmp_path / "k2")
    table = ensure_tables(load_catalog(settings), settings)[short]
    append(table, data, short)
    assert_same_rows(
        sort_for_table(table.scan().to_arrow(), short), sort_for_table(conform(data, short), short)
    )
    return table


def test_trade_files_delta_encode_times_ids_and_price_and_keep_dictionaries_elsewhere(tmp_path: Path) -> None:
    encodings = _encodings(_written(tmp_path, "trades", trade_batch(1, 5_000)))
    for column in TABLE_DELTA_COLUMNS["trades"]:
        assert DELTA in encodings[column], (column, encodings[column])
        assert "RLE_DICTIONARY" not in encodings[column], (column, encodings[column])
    for column in ("symbol", "side", "quantity"):
        assert "RLE_DICTIONARY" in encodings[column] and DELTA not in encodings[column], column


def test_quote_files_delta_encode_times_and_update_ids_only(tmp_path: Path) -> None:
    rows = [{**wire_quote("binance", i, BASE_TS + i * 1_000), "ingest_ts": BASE_TS} for i in range(1, 3_001)]
    encodings = _encodings(_written(tmp_path, "quotes", records_to_arrow(QUOTE, rows)))
    assert all(DELTA in encodings[c] for c in TABLE_DELTA_COLUMNS["quotes"])
    assert all(DELTA not in encodings[c] for c in ("bid_price", "ask_price", "symbol"))


def test_book_delta_files_delta_encode_lineage_columns_only(tmp_path: Path) -> None:
    encodings = _encodings(_written(tmp_path, "book_deltas", records_to_arrow(BOOK_DELTA, capture_deltas(5))))
    delta = {column for column, found in encodings.items() if DELTA in found}
    assert delta <= set(DELTA_COLUMNS), delta


def test_tables_created_before_the_delta_columns_get_them(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "k2")
    tables = ensure_tables(load_catalog(settings), settings)
    with tables["trades"].transaction() as tx:  # as an older K2 left it
        tx.remove_properties(DELTA_PROPERTY)
    assert DELTA_PROPERTY not in load_catalog(settings).load_table(TABLES["trades"].identifier).properties
    again = ensure_tables(load_catalog(settings), settings)["trades"]
    assert again.properties[DELTA_PROPERTY] == ",".join(TABLE_DELTA_COLUMNS["trades"])
    append(again, trade_batch(1, 100), "trades")
    assert DELTA in _encodings(again)["trade_id"]


def test_an_older_k2s_delta_columns_are_brought_up_to_date(tmp_path: Path) -> None:
    """K2 owns its ``k2.*`` properties: a list an older K2 wrote (fewer columns) is replaced, not kept."""
    settings = Settings(data_dir=tmp_path / "k2")
    tables = ensure_tables(load_catalog(settings), settings)
    with tables["trades"].transaction() as tx:  # as an older K2 left it: one column only
        tx.set_properties({DELTA_PROPERTY: "trade_id"})
    again = ensure_tables(load_catalog(settings), settings)["trades"]
    assert again.properties[DELTA_PROPERTY] == ",".join(TABLE_DELTA_COLUMNS["trades"])
