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

Before dedup, :func:`screen_ids` takes out ids that would poison the marks: negative ids and ids more than
``landing_max_id_jump`` above their pair's mark (with no mark yet: that far from the median id of the pair's
rows in the batch). They go to the DLQ and never move a mark, so one ``2**63 - 1`` cannot open a gap of
9.2e18 ids nor make every later id look late. Ids far *below* the mark are not screened: they cannot move
the mark or open a gap (they take the late path), and a legacy poisoned mark then still lets real ids land.

Hazard: exactness of step 3 rests on the table being the truth, which it is because K2 resumes from the
offsets stored with the data (see :mod:`k2.lake.summary`).

Example:
    >>> find_gaps(10, [11, 12, 15, 16, 20])
    [(13, 14), (17, 19)]
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg import expressions as _expressions
from pyiceberg.table import Table

from k2.config import Settings

# pyiceberg's expression classes are positional at runtime; their stubs only describe keywords.
_X: Any = _expressions


def sequential_exchanges(settings: Settings, short: str) -> frozenset[str]:
    """The venues whose ids in table ``short`` are contiguous (gaps recorded, ids windowed): those named
    in ``landing_sequential_exchanges`` for ``trades``, none for any other table.

    >>> settings = Settings(landing_sequential_exchanges=" binance, ,coinbase")
    >>> sorted(sequential_exchanges(settings, "trades")), sequential_exchanges(settings, "quotes")
    (['binance', 'coinbase'], frozenset())
    """
    if short != "trades":
        return frozenset()
    return frozenset(e.strip() for e in settings.landing_sequential_exchanges.split(",") if e.strip())


def find_gaps(high_water_mark: int | None, new_ids: Iterable[int]) -> list[tuple[int, int]]:
    """Missing id ranges (inclusive) given the previous mark and the sorted-or-not new ids above it."""
    # Sort, then drop repeats: numpy 2.4's hash-based np.unique took 0.85 s per 1M ids here, this 0.015 s.
    ids = np.sort(np.fromiter(new_ids, dtype=np.int64))
    if ids.size == 0:
        return []
    ids = ids[np.concatenate(([True], ids[1:] != ids[:-1]))]
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

    def get_many(
        self, table: Table, id_column: str, pairs: list[tuple[str, str]]
    ) -> dict[tuple[str, str], int | None]:
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
    row_filter = (
        _X.And(_X.In("exchange", exchanges), _X.In("symbol", symbols))
        if len(exchanges) > 1
        else _X.And(_X.EqualTo("exchange", exchanges[0]), _X.In("symbol", symbols))
    )
    data = table.scan(row_filter=row_filter, selected_fields=("exchange", "symbol", id_column)).to_arrow()
    if data.num_rows == 0:
        return {}
    grouped = data.group_by(["exchange", "symbol"]).aggregate([(id_column, "max")])
    wanted = set(pairs)
    out: dict[tuple[str, str], int] = {}
    for exchange, symbol, mark in zip(
        grouped["exchange"].to_pylist(),
        grouped["symbol"].to_pylist(),
        grouped[f"{id_column}_max"].to_pylist(),
        strict=True,
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
        row_filter = _X.And(
            _X.EqualTo("exchange", exchange),
            _X.EqualTo("symbol", symbol),
            _X.GreaterThanOrEqual(id_column, int(low)),
            _X.LessThanOrEqual(id_column, int(high)),
        )
        data = table.scan(row_filter=row_filter, selected_fields=(id_column,)).to_arrow()
        found.update((exchange, symbol, int(i)) for i in data.column(id_column).to_pylist())
    return found


def _pair_codes(data: pa.Table) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Integer code per row for its (exchange, symbol) and the pairs in code order (no per-row Python)."""
    joined = pc.binary_join_element_wise(data["exchange"], data["symbol"], "\x1f")
    encoded = pc.dictionary_encode(joined)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    codes = np.asarray(encoded.indices, dtype=np.int64)
    pairs = [(p.split("\x1f", 1)[0], p.split("\x1f", 1)[1]) for p in encoded.dictionary.to_pylist()]
    return codes, pairs


ID_OUT_OF_WINDOW = "id_out_of_window"
NEGATIVE_ID = "negative_id"


def _ids(data: pa.Table, id_column: str) -> np.ndarray:
    column = data[id_column]
    return np.asarray(
        column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column, dtype=np.int64
    )


def screen_ids(
    data: pa.Table,
    id_column: str,
    table: Table,
    marks: HighWaterMarks,
    max_jump: int,
    windowed: frozenset[str] | None = None,
) -> list[tuple[int, str, str]]:
    """Rows of ``data`` whose id must not land: ``(row, reason, detail)`` for the DLQ (see module docstring).

    Pure over the batch, the table (marks recovered on a miss) and ``marks`` (read, never updated): the
    landing and direct imports can both call it before :func:`deduplicate`.

    Example (needs a table)::

        rejects = screen_ids(batch, "trade_id", trades_table, HighWaterMarks(1000), 100_000_000)
    """
    if data.num_rows == 0:
        return []
    codes, pairs = _pair_codes(data)
    ids = _ids(data, id_column)
    current = marks.get_many(table, id_column, pairs)
    rejects: list[tuple[int, str, str]] = []
    for row in np.flatnonzero(ids < 0).tolist():
        exchange, symbol = pairs[codes[row]]
        rejects.append(
            (row, NEGATIVE_ID, f"expected {id_column} >= 0 for {exchange}/{symbol}, found {int(ids[row])}")
        )
    for code, pair in enumerate(pairs):
        rows = np.flatnonzero((codes == code) & (ids >= 0))
        # The window guards the gap ledger: only venues with contiguous ids (``windowed``) have one; others
        # (time-derived ids of vendor files, update ids) may jump freely.
        if rows.size == 0 or (windowed is not None and pair[0] not in windowed):
            continue
        pair_ids = ids[rows]
        mark = current.get(pair)
        # Nothing landed for the pair: the batch's own median (exact, no float) is the reference.
        if mark is None:
            reference = int(np.sort(pair_ids)[(pair_ids.size - 1) // 2])
            outside = np.abs(pair_ids - reference) > max_jump  # no overflow: both are >= 0
            where = f"the median {reference} of its batch (nothing landed yet)"
        else:
            reference = max(int(mark), 0)
            outside = pair_ids - reference > max_jump
            where = f"the high-water mark {reference}"
        for row in rows[outside].tolist():
            rejects.append(
                (
                    int(row),
                    ID_OUT_OF_WINDOW,
                    f"expected {id_column} within {max_jump} of {where} for {pair[0]}/{pair[1]} "
                    f"(K2_LANDING_MAX_ID_JUMP), found {int(ids[row])}",
                )
            )
    return sorted(rejects)


def deduplicate(
    data: pa.Table,
    id_column: str,
    table: Table,
    marks: HighWaterMarks,
    sequential_exchanges: frozenset[str],
    time_column: str = "exchange_ts",
) -> DedupResult:
    """Decide which rows of ``data`` land (see the module docstring); updates ``marks``.

    Vectorised: rows are reduced to (pair code, id) integers; Python loops run per (exchange, symbol)
    and per row only for ids at or below their mark (duplicates and late arrivals).

    Example (needs a table)::

        result = deduplicate(batch, "trade_id", trades_table, HighWaterMarks(1000), frozenset({"binance"}))
    """
    n = data.num_rows
    if n == 0:
        return DedupResult(np.zeros(0, dtype=bool), 0, 0)
    codes, pairs = _pair_codes(data)
    ids = _ids(data, id_column)
    index = np.arange(n, dtype=np.int64)

    # 1. In-batch duplicates: first occurrence of each (pair, id) wins.
    order = np.lexsort((index, ids, codes))
    sorted_codes, sorted_ids = codes[order], ids[order]
    first_sorted = np.ones(n, dtype=bool)
    first_sorted[1:] = (sorted_codes[1:] != sorted_codes[:-1]) | (sorted_ids[1:] != sorted_ids[:-1])
    keep = np.zeros(n, dtype=bool)
    keep[order[first_sorted]] = True
    dups_per_pair = np.bincount(codes[~keep], minlength=len(pairs))
    late_per_pair = np.zeros(len(pairs), dtype=np.int64)

    # 2. Rows at or below their pair's mark need a look-up in the table.
    current = marks.get_many(table, id_column, pairs)
    mark_of_pair = np.array([-(2**63) if current[p] is None else current[p] for p in pairs], dtype=np.int64)
    is_old = keep & (ids <= mark_of_pair[codes])
    coded = _Coded(codes, pairs, ids)
    late_keys = _check_old(coded, is_old, keep, table, id_column, dups_per_pair, late_per_pair)

    # 3. New ids: gaps (sequential venues) and new marks, per pair on sorted ids.
    times = np.asarray(data[time_column].cast(pa.int64())) if time_column in data.column_names else None
    gaps = _new_ids(coded, keep & ~is_old, times, current, marks, sequential_exchanges)
    per_symbol = {
        pairs[c]: (int(dups_per_pair[c]), int(late_per_pair[c]))
        for c in range(len(pairs))
        if dups_per_pair[c] or late_per_pair[c]
    }
    return DedupResult(
        keep=keep,
        duplicates=int(n - int(keep.sum())),
        late=len(late_keys),
        gaps=gaps,
        per_symbol=per_symbol,
        late_keys=late_keys,
    )


@dataclass
class _Coded:
    """A batch reduced to integers: (exchange, symbol) code per row, the pairs in code order, the ids."""

    codes: np.ndarray
    pairs: list[tuple[str, str]]
    ids: np.ndarray


def _check_old(
    rows_: _Coded,
    is_old: np.ndarray,
    keep: np.ndarray,
    table: Table,
    id_column: str,
    dups_per_pair: np.ndarray,
    late_per_pair: np.ndarray,
) -> list[tuple[str, str, int]]:
    """Step 2: look ids at or below their mark up in the table; found = duplicate (``keep`` cleared),
    not found = late. Updates the per-pair counters in place; returns the late keys."""
    codes, pairs, ids = rows_.codes, rows_.pairs, rows_.ids
    late_keys: list[tuple[str, str, int]] = []
    if not is_old.any():
        return late_keys
    rows = np.flatnonzero(is_old)
    old = pa.table(
        {
            "exchange": pa.array([pairs[c][0] for c in codes[rows]], pa.string()),
            "symbol": pa.array([pairs[c][1] for c in codes[rows]], pa.string()),
            id_column: pa.array(ids[rows], pa.int64()),
        }
    )
    found = existing_keys(table, id_column, old)
    for row in rows.tolist():
        exchange, symbol = pairs[codes[row]]
        ident = int(ids[row])
        if (exchange, symbol, ident) in found:
            keep[row] = False
            dups_per_pair[codes[row]] += 1
        else:
            late_keys.append((exchange, symbol, ident))
            late_per_pair[codes[row]] += 1
    return late_keys


def _new_ids(
    rows_: _Coded,
    new: np.ndarray,
    times: np.ndarray | None,
    current: dict[tuple[str, str], int | None],
    marks: HighWaterMarks,
    sequential_exchanges: frozenset[str],
) -> list[tuple[str, str, int, int, int | None, int | None]]:
    """Step 3: gaps among the new ids of sequential venues (with the times around each), new marks."""
    codes, pairs, ids = rows_.codes, rows_.pairs, rows_.ids
    gaps: list[tuple[str, str, int, int, int | None, int | None]] = []
    if not new.any():
        return gaps
    new_rows = np.flatnonzero(new)
    by_pair = new_rows[np.lexsort((ids[new_rows], codes[new_rows]))]
    pair_of = codes[by_pair]
    bounds = np.flatnonzero(pair_of[1:] != pair_of[:-1]) + 1
    for start, end in zip(
        np.concatenate(([0], bounds)), np.concatenate((bounds, [len(by_pair)])), strict=True
    ):
        pair = pairs[int(pair_of[start])]
        segment_rows = by_pair[start:end]
        segment = ids[segment_rows]
        previous = current.get(pair)
        if pair[0] in sequential_exchanges:
            for low, high in find_gaps(previous, segment):
                before = after = None
                if times is not None:
                    after_pos = int(np.searchsorted(segment, high + 1))
                    if after_pos < len(segment):
                        after = int(times[segment_rows[after_pos]])
                    if after_pos > 0:
                        before = int(times[segment_rows[after_pos - 1]])
                gaps.append((pair[0], pair[1], low, high, before, after))
        top = int(segment[-1])
        marks.put(pair, top if previous is None else max(previous, top))
    return gaps
