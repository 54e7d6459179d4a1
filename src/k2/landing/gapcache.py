"""The open gaps of the gap ledger (k2.landing.ledger) as one landing process knows them.

Loaded per (table, exchange, symbol) when a pair is first seen in a batch, grown by the gaps dedup records,
and closed (a ``backfilled`` row) once late arrivals have filled every id of a gap. The cache is this
process's view only: another writer may open or close gaps meanwhile, so the consumer clears it on every
assignment and forgets a table's pairs when a partition was moved under it (re-read from the ledger with
the next batch of each pair).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from k2.landing.errors import LandingError
from k2.landing.ledger import append_gap_rows, filled_gaps, gap_row, open_gaps
from k2.landing.routes import TABLE_ROUTES
from k2.model.values import now_micros
from k2.telemetry.metrics import metric

_OPEN_GAPS_PER_PAIR = 1000


class OpenGaps:
    """The ledger's open gaps of the pairs this landing has seen; records new gaps and closes filled ones.

    Example (needs a catalog)::

        gaps = OpenGaps(tables, writer="landing-1")
        gaps.load("trades", batch_rows, frozenset({"binance"}))
        recorded = gaps.record("trades", result.gaps)  # before the data commit: see k2.landing.ledger
    """

    def __init__(self, tables: dict[str, Table], writer: str) -> None:
        self.tables = tables
        self.writer = writer
        # (table, exchange, symbol) -> open gaps (low, high) of the ledger, loaded when a pair is first seen.
        self._open_gaps: dict[tuple[str, str, str], list[tuple[int, int]]] = {}
        self._m_gaps = metric("k2_landing_gaps_total")

    def clear(self) -> None:
        """Forget every pair (another consumer may have opened or closed gaps meanwhile)."""
        self._open_gaps.clear()

    def forget(self, short: str) -> None:
        """Forget the pairs of table ``short``: re-read from the ledger with the next batch of each pair."""
        for pair in [p for p in self._open_gaps if p[0] == short]:
            del self._open_gaps[pair]

    def load(self, short: str, good: pa.Table, sequential: frozenset[str]) -> None:
        """Read the ledger's open gaps of the pairs this process has not seen yet, and close at once those
        whose ids are all in the table already (a close lost to a crash, or an ``open`` row written just
        before a data commit that never happened)."""
        # The pairs of the batch, vectorised.
        unique = good.select(["exchange", "symbol"]).group_by(["exchange", "symbol"]).aggregate([])
        pairs = {
            (e, s)
            for e, s in zip(unique["exchange"].to_pylist(), unique["symbol"].to_pylist(), strict=True)
            if e in sequential
        }
        new = sorted(p for p in pairs if (short, *p) not in self._open_gaps)
        if not new:
            return
        found = open_gaps(self.tables["gaps"], short, new)
        for pair in new:
            self._open_gaps[(short, *pair)] = sorted(found[pair])
            if found[pair]:
                self._close(short, pair, found[pair], "its ids were already in the table (checked on start)")

    def close_filled(self, short: str, data: pa.Table) -> None:
        """Close the open gaps that ids of this commit fell into, once all their ids are in the table."""
        if not self._open_gaps or short != "trades":
            return
        _, _, id_column = TABLE_ROUTES[short]
        touched: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for (table_short, exchange, symbol), gaps in self._open_gaps.items():
            if table_short != short or not gaps:
                continue
            mask = pc.and_(pc.equal(data["exchange"], exchange), pc.equal(data["symbol"], symbol))
            ids = np.sort(np.asarray(data[id_column].filter(mask), dtype=np.int64))
            if ids.size == 0:
                continue
            hit = [
                (low, high)
                for low, high in gaps
                if np.searchsorted(ids, high, side="right") > np.searchsorted(ids, low, side="left")
            ]
            if hit:
                touched[(exchange, symbol)] = hit
        for pair, hit in touched.items():
            self._close(short, pair, hit, "late arrivals filled it")

    def _close(
        self, short: str, pair: tuple[str, str], candidates: list[tuple[int, int]], detail: str
    ) -> None:
        _, _, id_column = TABLE_ROUTES[short]
        filled = filled_gaps(self.tables[short], id_column, pair[0], pair[1], candidates)
        if not filled:
            return
        detected = now_micros()
        self._append(
            [
                gap_row(pair[0], pair[1], short, low, high, detected, "backfilled", detail=detail)
                for low, high in filled
            ]
        )
        remaining = self._open_gaps[(short, *pair)]
        self._open_gaps[(short, *pair)] = [g for g in remaining if g not in set(filled)]

    def record(self, short: str, gaps: list[tuple[str, str, int, int, int | None, int | None]]) -> int:
        """Append ``open`` rows for the gaps dedup found and remember them; returns how many."""
        detected = now_micros()
        rows = []
        for exchange, symbol, low, high, before, after in gaps:
            rows.append(gap_row(exchange, symbol, short, low, high, detected, "open", before, after))
            bucket = self._open_gaps.setdefault((short, exchange, symbol), [])
            if (low, high) not in bucket:
                bucket.append((low, high))
            # Memory bound; older ones are re-read from the ledger on restart.
            del bucket[:-_OPEN_GAPS_PER_PAIR]
        self._append(rows)
        self._m_gaps.labels(table=short).inc(len(rows))
        return len(rows)

    def _append(self, rows: list[dict[str, Any]]) -> None:
        try:
            append_gap_rows(self.tables["gaps"], rows, self.writer, attempts=20)
        except CommitFailedException as exc:
            raise LandingError(
                "expected a quality.gaps commit within 20 attempts, found continuous conflicts"
            ) from exc
