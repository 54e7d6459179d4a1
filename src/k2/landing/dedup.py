"""Dedup by natural key and gap detection, with bounded memory.

Per (exchange, symbol) K2 keeps a *high-water mark* (the largest id landed) in an LRU cache of at most
``landing_hwm_cache_size`` entries; a miss is recovered from the table itself, so memory stays bounded
whatever the number of symbols or the run length.

For each batch:

1. duplicates inside the batch are dropped (first occurrence wins);
2. ids above the high-water mark are new; on venues with contiguous ids (``landing_sequential_exchanges``)
   holes between consecutive new ids, or between the mark and the first new id, are gaps;
3. ids at or below the mark are looked up in the table: found means duplicate (dropped), not found means
   a late (out-of-order) arrival, which lands and may close a recorded gap.

Hazard: exactness of step 3 rests on the table being the truth, which it is because K2 resumes from the
offsets stored with the data (see :mod:`k2.landing.offsets`).

Example:
    >>> find_gaps(10, [11, 12, 15, 16, 20])
    [(13, 14), (17, 19)]
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, In, LessThanOrEqual
from pyiceberg.table import Table


def find_gaps(high_water_mark: int | None, new_ids: Iterable[int]) -> list[tuple[int, int]]:
    """Missing id ranges (inclusive) given the previous mark and the sorted-or-not new ids above it."""
    ids = np.unique(np.fromiter(new_ids, dtype=np.int64))
    if ids.size == 0:
        return []
    gaps: list[tuple[int, int]] = []
    if high_water_mark is not None and ids[0] > high_water_mark + 1:
        gaps.append((high_water_mark + 1, int(ids[0]) - 1))
    if ids.size > 1:
        jumps = np.flatnonzero(np.diff(ids) > 1)
        gaps.extend((int(ids[j]) + 1, int(ids[j + 1]) - 1) for j in jumps)
    return gaps


@dataclass
class DedupResult:
    """Outcome of deduplicating one batch of one table."""

    keep: np.ndarray  # boolean mask over the input rows
    duplicates: int
    late: int
    gaps: list[tuple[str, str, int, int, int | None, int | None]] = field(default_factory=list)
    # (exchange, symbol, first_missing, last_missing, ts_before, ts_after)
    per_symbol: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # (dups, late)
    late_keys: list[tuple[str, str, int]] = field(default_factory=list)


class HighWaterMarks:
    """Bounded LRU of (exchange, symbol) -> largest landed id, recovered from the table on a miss."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._marks: OrderedDict[tuple[str, str], int | None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._marks)

    def clear(self) -> None:
        """Forget everything (after a rebalance another consumer may have landed more)."""
        self._marks.clear()

    def get_many(self, table: Table, id_column: str, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], int | None]:
        """Marks for ``pairs``; missing ones are read from ``table`` in one scan."""
        result: dict[tuple[str, str], int | None] = {}
        missing = []
        for pair in pairs:
            if pair in self._marks:
                self._marks.move_to_end(pair)
                result[pair] = self._marks[pair]
            else:
                missing.append(pair)
        if missing:
            recovered = recover_marks(table, id_column, missing)
            for pair in missing:
                result[pair] = recovered.get(pair)
                self.put(pair, recovered.get(pair))
        return result

    def put(self, pair: tuple[str, str], mark: int | None) -> None:
        self._marks[pair] = mark
        self._marks.move_to_end(pair)
        while len(self._marks) > self.capacity:
            self._marks.popitem(last=False)


def recover_marks(table: Table, id_column: str, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Largest id per (exchange, symbol) already in the table (one scan, pruned by symbol)."""
    if table.current_snapshot() is None or not pairs:
        return {}
    exchanges = sorted({e for e, _ in pairs})
    symbols = sorted({s for _, s in pairs})
    row_filter = And(In("exchange", exchanges), In("symbol", symbols)) if len(exchanges) > 1 else And(
        EqualTo("exchange", exchanges[0]), In("symbol", symbols)
    )
    data = table.scan(row_filter=row_filter, selected_fields=("exchange", "symbol", id_column)).to_arrow()
    if data.num_rows == 0:
        return {}
    grouped = data.group_by(["exchange", "symbol"]).aggregate([(id_column, "max")])
    wanted = set(pairs)
    out: dict[tuple[str, str], int] = {}
    for exchange, symbol, mark in zip(
        grouped["exchange"].to_pylist(), grouped["symbol"].to_pylist(), grouped[f"{id_column}_max"].to_pylist(), strict=True
    ):
        if (exchange, symbol) in wanted:
            out[(exchange, symbol)] = int(mark)
    return out


def existing_keys(table: Table, id_column: str, candidates: pa.Table) -> set[tuple[str, str, int]]:
    """Which (exchange, symbol, id) of ``candidates`` are already in the table."""
    if candidates.num_rows == 0 or table.current_snapshot() is None:
        return set()
    found: set[tuple[str, str, int]] = set()
    grouped = candidates.group_by(["exchange", "symbol"]).aggregate([(id_column, "min"), (id_column, "max")])
    for exchange, symbol, low, high in zip(
        grouped["exchange"].to_pylist(),
        grouped["symbol"].to_pylist(),
        grouped[f"{id_column}_min"].to_pylist(),
        grouped[f"{id_column}_max"].to_pylist(),
        strict=True,
    ):
        row_filter = And(
            EqualTo("exchange", exchange),
            EqualTo("symbol", symbol),
            GreaterThanOrEqual(id_column, int(low)),
            LessThanOrEqual(id_column, int(high)),
        )
        data = table.scan(row_filter=row_filter, selected_fields=(id_column,)).to_arrow()
        found.update((exchange, symbol, int(i)) for i in data.column(id_column).to_pylist())
    return found


def deduplicate(
    data: pa.Table,
    id_column: str,
    table: Table,
    marks: HighWaterMarks,
    sequential_exchanges: frozenset[str],
    time_column: str = "exchange_ts",
) -> DedupResult:
    """Decide which rows of ``data`` land (see the module docstring); updates ``marks``."""
    n = data.num_rows
    if n == 0:
        return DedupResult(np.zeros(0, dtype=bool), 0, 0)
    index = pa.array(np.arange(n, dtype=np.int64))
    keyed = pa.table({"exchange": data["exchange"], "symbol": data["symbol"], "id": data[id_column], "i": index})
    first = keyed.group_by(["exchange", "symbol", "id"]).aggregate([("i", "min")])
    keep = np.zeros(n, dtype=bool)
    keep[np.asarray(first["i_min"])] = True
    first_mask = keep.copy()
    in_batch_dups = n - int(keep.sum())
    table_dups = 0
    per_symbol: dict[tuple[str, str], list[int]] = {}

    unique = keyed.filter(pa.array(keep))
    pairs_table = unique.group_by(["exchange", "symbol"]).aggregate([])
    pairs = list(zip(pairs_table["exchange"].to_pylist(), pairs_table["symbol"].to_pylist(), strict=True))
    current = marks.get_many(table, id_column, pairs)

    # Rows at or below their pair's mark need a look-up in the table.
    mark_values = pa.array([current[p] if current[p] is not None else -(2**63) for p in pairs], type=pa.int64())
    mark_table = pa.table({"exchange": pairs_table["exchange"], "symbol": pairs_table["symbol"], "mark": mark_values})
    joined = unique.join(mark_table, keys=["exchange", "symbol"], join_type="left outer")
    is_old = pc.less_equal(joined["id"], joined["mark"])
    old = joined.filter(is_old)
    duplicates_in_table: set[tuple[str, str, int]] = set()
    late_keys: list[tuple[str, str, int]] = []
    if old.num_rows:
        duplicates_in_table = existing_keys(
            table, id_column, pa.table({"exchange": old["exchange"], "symbol": old["symbol"], id_column: old["id"]})
        )
        for exchange, symbol, ident, row in zip(
            old["exchange"].to_pylist(), old["symbol"].to_pylist(), old["id"].to_pylist(), old["i"].to_pylist(), strict=True
        ):
            stats = per_symbol.setdefault((exchange, symbol), [0, 0])
            if (exchange, symbol, ident) in duplicates_in_table:
                keep[row] = False
                stats[0] += 1
                table_dups += 1
            else:
                late_keys.append((exchange, symbol, ident))
                stats[1] += 1

    # Count in-batch duplicates per symbol too.
    if in_batch_dups:
        dropped = keyed.filter(pa.array(~first_mask))
        for exchange, symbol in zip(dropped["exchange"].to_pylist(), dropped["symbol"].to_pylist(), strict=True):
            per_symbol.setdefault((exchange, symbol), [0, 0])[0] += 1

    # New ids: gaps and new marks.
    new_rows = joined.filter(pc.invert(is_old))
    gaps: list[tuple[str, str, int, int, int | None, int | None]] = []
    if new_rows.num_rows:
        new_rows = new_rows.sort_by([("exchange", "ascending"), ("symbol", "ascending"), ("id", "ascending")])
        ex = new_rows["exchange"].to_numpy(zero_copy_only=False)
        sy = new_rows["symbol"].to_numpy(zero_copy_only=False)
        ids = new_rows["id"].to_numpy()
        rows = new_rows["i"].to_numpy()
        times = np.asarray(data[time_column].cast(pa.int64())) if time_column in data.column_names else None
        boundaries = np.flatnonzero((ex[1:] != ex[:-1]) | (sy[1:] != sy[:-1])) + 1
        starts = np.concatenate(([0], boundaries))
        ends = np.concatenate((boundaries, [len(ids)]))
        for start, end in zip(starts, ends, strict=True):
            pair = (str(ex[start]), str(sy[start]))
            segment = ids[start:end]
            previous = current.get(pair)
            if pair[0] in sequential_exchanges:
                for low, high in find_gaps(previous, segment):
                    before = after = None
                    if times is not None:
                        after_pos = int(np.searchsorted(segment, high + 1))
                        if after_pos < len(segment):
                            after = int(times[rows[start + after_pos]])
                        if after_pos > 0:
                            before = int(times[rows[start + after_pos - 1]])
                    gaps.append((pair[0], pair[1], low, high, before, after))
            marks.put(pair, int(segment[-1]) if previous is None else max(previous, int(segment[-1])))
    return DedupResult(
        keep=keep,
        duplicates=in_batch_dups + table_dups,
        late=len(late_keys),
        gaps=gaps,
        per_symbol={k: (v[0], v[1]) for k, v in per_symbol.items()},
        late_keys=late_keys,
    )
