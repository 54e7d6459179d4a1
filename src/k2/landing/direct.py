"""Direct imports land through the landing's own dedup and gap ledger (no Kafka in between).

A vendor file imported straight to Iceberg (``k2 import ...`` without ``--via-kafka``) must end up
exactly as if its rows had come through Kafka: the same natural-key dedup and the same gap detection
(:func:`k2.landing.dedup.deduplicate` with the same high-water marks and the same
``landing_sequential_exchanges``), the same ``quality.gaps`` rows (the landing consumer's own row
builder), and a snapshot summary that carries the landing's Kafka offsets forward
(:func:`k2.lake.summary.commit_summary`), so the landing never mistakes an import for a foreign writer
and re-reads its partitions.

The stage layers do not import each other: :mod:`k2.sources.files` parses a file into Arrow batches and
hands each to :meth:`DirectLanding.land`; the CLI (face layer) wires the two.

Hazards:

* Gaps are written *before* the data commit (as the landing consumer does): a crash in between leaves
  an open gap whose ids are then imported again; the retry rewrites the same ``gap_key``.
* A gap closes (``backfilled``) when a later import lands ids inside it and every id of the gap is
  then in the table (one pruned scan of the gap's id range).
* Importing an older file after a newer one: its rows are below the high-water mark, so they are
  "late" and no gap is searched among them -- the Kafka path behaves the same.

Example (needs a catalog)::

    landed = DirectLanding(settings, "trades").land(batch, {"k2.import.file": "BTCUSDT-trades-2021-01-03.csv"})
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg import expressions as _expressions
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.lake.summary import GAPS_KEY, IMPORT_ROWS_KEY, commit_summary
from k2.lake.writer import Landed, append_sorted
from k2.landing.currency import ReferenceCurrencies
from k2.landing.dedup import HighWaterMarks, deduplicate, sequential_exchanges
from k2.landing.ledger import append_gap_rows, filled_gaps, gap_row, open_gaps
from k2.model.values import now_micros
from k2.pacing import Backoff

_X: Any = _expressions  # pyiceberg's expression classes are positional at runtime; their stubs only describe keywords
WRITER = "k2-import"
ID_COLUMNS = {"trades": "trade_id", "quotes": "update_id"}
_ATTEMPTS = 20
Gap = tuple[str, str, int, int, int | None, int | None]


class DirectLanding:
    """Dedup, gap ledger and one commit per batch for one table (``trades`` or ``quotes``)."""

    def __init__(self, settings: Settings, short: str, writer: str = WRITER) -> None:
        if short not in ID_COLUMNS:
            raise ValueError(f"expected a table among {sorted(ID_COLUMNS)}, found {short!r}")
        tables = ensure_tables(load_catalog(settings), settings)
        self.short = short
        self.writer = writer
        self.table = tables[short]
        self.gaps_table = tables["gaps"]
        self.currencies = ReferenceCurrencies(tables["instruments"])
        self.id_column = ID_COLUMNS[short]
        self.marks = HighWaterMarks(settings.landing_hwm_cache_size)
        self.sequential = sequential_exchanges(settings, short)

    def land(self, data: pa.Table, adds: Mapping[str, str]) -> Landed:
        """Land one batch: dedup, record gaps, commit (retried on a concurrent commit, deduplicated again)."""
        data = self.currencies.fill(data)  # a currency the file did not state, from reference data
        backoff = Backoff(0.05, 1.0)
        for _attempt in range(_ATTEMPTS):
            self.table.refresh()
            fresh, known = _drop_known(self.table, data, self.id_column)
            result = deduplicate(fresh, self.id_column, self.table, self.marks, self.sequential)
            rows = fresh if result.keep.all() else fresh.filter(pa.array(result.keep))
            if rows.num_rows == 0:
                return Landed(duplicates=known + result.duplicates)
            opened = self._record_gaps(result.gaps)
            properties = commit_summary(
                self.table.current_snapshot(),
                self.writer,
                {**adds, IMPORT_ROWS_KEY: str(rows.num_rows), GAPS_KEY: str(opened)},
            )
            try:
                snapshot_id = append_sorted(self.table, rows, self.short, properties)
            except CommitFailedException:
                self.marks.clear()  # advanced for this attempt: recover them from the table
                time.sleep(backoff.next_delay())
                continue
            if result.late_keys:
                self._close_backfilled(result.late_keys)
            return Landed(rows.num_rows, known + result.duplicates, opened, snapshot_id)
        raise CommitFailedException(
            f"expected a commit to {self.short} within {_ATTEMPTS} attempts, found continuous conflicts"
        )

    def _record_gaps(self, gaps: list[Gap]) -> int:
        detected = now_micros()
        rows = [
            gap_row(e, s, self.short, low, high, detected, "open", before, after)
            for e, s, low, high, before, after in gaps
        ]
        append_gap_rows(self.gaps_table, rows, self.writer, _ATTEMPTS)
        return len(rows)

    def _close_backfilled(self, late_keys: list[tuple[str, str, int]]) -> None:
        """Open gaps that late ids fell into become ``backfilled`` once every id is in the table.

        The landing consumer's own ledger functions (:func:`k2.landing.ledger.open_gaps`,
        :func:`k2.landing.ledger.filled_gaps`, :func:`k2.landing.ledger.gap_row`) decide and write it.
        """
        pairs = sorted({(e, s) for e, s, _ in late_keys})
        detected = now_micros()
        rows = []
        for (exchange, symbol), gaps in open_gaps(self.gaps_table, self.short, pairs).items():
            ids = np.sort(
                np.array([i for e, s, i in late_keys if (e, s) == (exchange, symbol)], dtype=np.int64)
            )
            hit = [
                (lo, hi)
                for lo, hi in gaps
                if np.searchsorted(ids, hi, side="right") > np.searchsorted(ids, lo, side="left")
            ]
            for low, high in filled_gaps(self.table, self.id_column, exchange, symbol, hit):
                rows.append(
                    gap_row(
                        exchange,
                        symbol,
                        self.short,
                        low,
                        high,
                        detected,
                        "backfilled",
                        detail="late arrivals filled it",
                    )
                )
        append_gap_rows(self.gaps_table, rows, self.writer, _ATTEMPTS)


def _drop_known(table: Table, data: pa.Table, id_column: str) -> tuple[pa.Table, int]:
    """``data`` without the rows whose key is already in the table; (rows, dropped).

    A vectorised pre-filter (one pruned scan of the id range per (exchange, symbol), then an anti-join):
    re-importing a file is the common case, and :func:`deduplicate` looks rows below the high-water mark
    up one by one. Dropping known keys first changes none of its decisions (a key in the table is a
    duplicate there too, and never a gap).
    """
    if data.num_rows == 0 or table.current_snapshot() is None:
        return data, 0
    keep = np.ones(data.num_rows, dtype=bool)
    ids = np.asarray(
        data[id_column].combine_chunks() if isinstance(data[id_column], pa.ChunkedArray) else data[id_column],
        dtype=np.int64,
    )
    pairs = pc.binary_join_element_wise(data["exchange"], data["symbol"], "\x1f")
    for pair in pc.unique(pairs).to_pylist():
        rows = np.flatnonzero(np.asarray(pc.equal(pairs, pair)))
        exchange, symbol = pair.split("\x1f", 1)
        row_filter = _X.And(
            _X.And(_X.EqualTo("exchange", exchange), _X.EqualTo("symbol", symbol)),
            _X.And(
                _X.GreaterThanOrEqual(id_column, int(ids[rows].min())),
                _X.LessThanOrEqual(id_column, int(ids[rows].max())),
            ),
        )
        found = (
            table.scan(row_filter=row_filter, selected_fields=(id_column,))
            .to_arrow()
            .column(id_column)
            .combine_chunks()
        )
        if len(found):
            keep[rows[np.asarray(pc.is_in(pa.array(ids[rows]), value_set=found))]] = False
    dropped = int((~keep).sum())
    return (data.filter(pa.array(keep)) if dropped else data), dropped
