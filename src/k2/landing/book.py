"""Dedup of book deltas for the landing consumer: natural key (exchange, symbol, update id, side, price).

Trades and quotes have one row per id; a book event has many rows sharing its ``last_update_id`` (one per
changed level), and one event may be split across two landing batches (one Kafka message per row). So the
key is the full level key, and the high-water mark (largest ``last_update_id`` landed per exchange/symbol,
the same bounded :class:`~k2.landing.dedup.HighWaterMarks` cache) only decides which rows need a look-up:

1. duplicates inside the batch are dropped (first occurrence of a key wins);
2. rows whose id is above the mark are new;
3. rows at or below the mark are looked up in the table (one pruned scan per exchange/symbol over the id
   range, reading the key columns): found means duplicate, not found means it lands (the rest of an event
   split across batches has ``id == mark``; an id below the mark is counted as late).

No gaps are derived here: update ids of depth streams are not contiguous per row; the sources' sync
(:mod:`k2.sources.binance_depth`) detects breaks in the event chain and records them.

Example (needs a table)::

    result = deduplicate_book(batch, "last_update_id", book_deltas_table, HighWaterMarks(1000), frozenset())
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from pyiceberg import expressions as _expressions
from pyiceberg.table import Table

from k2.landing.dedup import DedupResult, HighWaterMarks, _pair_codes
from k2.model.arrow import unscaled_from_decimal

_X: Any = _expressions


def _existing(table: Table, exchange: str, symbol: str, low: int, high: int) -> set[tuple[int, str, int]]:
    """(update id, side, unscaled price) of the table's rows of one pair in [low, high]."""
    if table.current_snapshot() is None:
        return set()
    row_filter = _X.And(
        _X.EqualTo("exchange", exchange),
        _X.EqualTo("symbol", symbol),
        _X.GreaterThanOrEqual("last_update_id", low),
        _X.LessThanOrEqual("last_update_id", high),
    )
    data = table.scan(row_filter=row_filter, selected_fields=("last_update_id", "side", "price")).to_arrow()
    if data.num_rows == 0:
        return set()
    prices = unscaled_from_decimal(data.column("price")).tolist()
    return set(
        zip(data.column("last_update_id").to_pylist(), data.column("side").to_pylist(), prices, strict=True)
    )


def deduplicate_book(
    data: pa.Table, id_column: str, table: Table, marks: HighWaterMarks, sequential_exchanges: frozenset[str]
) -> DedupResult:
    """Decide which book-delta rows land (see the module docstring); updates ``marks``.

    Same signature as :func:`k2.landing.dedup.deduplicate` (``sequential_exchanges`` is unused: depth
    ids are not contiguous per row).
    """
    n = data.num_rows
    if n == 0:
        return DedupResult(np.zeros(0, dtype=bool), 0, 0)
    codes, pairs = _pair_codes(data)
    ids = np.asarray(data.column(id_column).combine_chunks(), dtype=np.int64)
    sides = np.asarray(
        data.column("side").combine_chunks().to_numpy(zero_copy_only=False) == "ASK", dtype=np.int64
    )
    prices = unscaled_from_decimal(data.column("price"))
    index = np.arange(n, dtype=np.int64)
    order = np.lexsort((index, prices, sides, ids, codes))
    same = np.zeros(n, dtype=bool)
    same[1:] = (
        (codes[order][1:] == codes[order][:-1])
        & (ids[order][1:] == ids[order][:-1])
        & (sides[order][1:] == sides[order][:-1])
        & (prices[order][1:] == prices[order][:-1])
    )
    keep = np.zeros(n, dtype=bool)
    keep[order[~same]] = True
    dups = np.bincount(codes[~keep], minlength=len(pairs))
    late = np.zeros(len(pairs), dtype=np.int64)

    current = marks.get_many(table, id_column, pairs)
    mark_of_pair = np.array([-(2**63) if current[p] is None else current[p] for p in pairs], dtype=np.int64)
    old = keep & (ids <= mark_of_pair[codes])
    late_keys: list[tuple[str, str, int]] = []
    for code in np.unique(codes[old]):
        rows = np.flatnonzero(old & (codes == code))
        exchange, symbol = pairs[int(code)]
        found = _existing(table, exchange, symbol, int(ids[rows].min()), int(ids[rows].max()))
        for row in rows.tolist():
            if (int(ids[row]), "ASK" if sides[row] else "BID", int(prices[row])) in found:
                keep[row] = False
                dups[code] += 1
            elif ids[row] < mark_of_pair[code]:
                late[code] += 1
                late_keys.append((exchange, symbol, int(ids[row])))
    for code, pair in enumerate(pairs):
        fresh = keep & (codes == code)
        if fresh.any():
            top = int(ids[fresh].max())
            previous = current.get(pair)
            marks.put(pair, top if previous is None else max(previous, top))
    per_symbol = {pairs[c]: (int(dups[c]), int(late[c])) for c in range(len(pairs)) if dups[c] or late[c]}
    return DedupResult(
        keep=keep, duplicates=int(n - int(keep.sum())), late=len(late_keys), per_symbol=per_symbol
    )
