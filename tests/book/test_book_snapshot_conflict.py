"""book_snapshots stays exactly once when another writer commits first (a real Iceberg commit conflict).

The race is forced, not hoped for: the first writer computes its rows, and just before its append a second
writer (its own catalog and table objects) runs to completion. The first writer's append then meets a real
``CommitFailedException`` from the SQL catalog (its table metadata is stale); it must re-read what the other
committed and write nothing twice. Real SQLite catalog and local warehouse, the real capture's deltas.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.exceptions import CommitFailedException

from k2.config import Settings
from k2.lake import book_snapshots as module
from k2.lake.book_snapshots import BookSnapshotter, write_book_snapshots
from k2.lake.catalog import ensure_tables, load_catalog
from k2.lake.writer import append
from k2.model import BOOK_DELTA
from k2.model.arrow import records_to_arrow
from tests.book.capture import capture_deltas


def _lake(root: Path) -> Settings:
    settings = Settings(data_dir=root / "k2", book_snapshot_depth=20)
    deltas = ensure_tables(load_catalog(settings), settings)["book_deltas"]
    append(deltas, records_to_arrow(BOOK_DELTA, capture_deltas(45)), "book_deltas")
    return settings


def _stored(settings: Settings) -> list[dict[str, Any]]:
    table = ensure_tables(load_catalog(settings), settings)["book_snapshots"]
    table.refresh()
    rows = table.scan().to_arrow()
    return rows.drop_columns(["written_ts"]).sort_by("last_update_id").to_pylist() if rows.num_rows else []


@pytest.mark.parametrize("incremental", [False, True], ids=["one-off", "scheduled"])
def test_a_writer_that_loses_the_commit_race_writes_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, incremental: bool
) -> None:
    alone = _lake(tmp_path / "alone")
    write_book_snapshots(alone)
    expected = _stored(alone)
    assert len(expected) >= 4  # a start plus one row per 10 s of the capture

    settings = _lake(tmp_path / "raced")
    real_append = module.append
    outcomes: list[str] = []

    def racing_append(table: Any, data: pa.Table, short: str, properties: Any) -> int:
        if not outcomes:
            outcomes.append("other writer first")
            assert write_book_snapshots(settings)  # the second writer commits the same rows first
        try:
            return real_append(table, data, short, properties)
        except CommitFailedException:
            outcomes.append("conflict")
            raise

    monkeypatch.setattr(module, "append", racing_append)
    state = BookSnapshotter(settings).state if incremental else None
    written = write_book_snapshots(settings, state=state, sleep=lambda _: None)
    assert outcomes == ["other writer first", "conflict"], outcomes
    assert written == {}  # after re-reading the table, nothing was left to write
    stored = _stored(settings)
    keys = Counter((r["exchange"], r["symbol"], r["last_update_id"]) for r in stored)
    assert max(keys.values()) == 1, "a book_snapshots row was written twice"
    assert stored == expected  # the same rows a single writer writes
