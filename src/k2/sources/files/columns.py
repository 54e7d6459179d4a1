"""Vectorised builders for canonical columns (constant strings, timestamps, conditions, vendor maps, ids).

Example:
    >>> const_strings("binance", 2).to_pylist()
    ['binance', 'binance']
    >>> flag_list(np.array([True, False]), "BEST_MATCH").to_pylist()
    [['BEST_MATCH'], []]
    >>> string_map({"source_file": const_strings("a.csv", 1), "id": pa.array(["x"])}).to_pylist()
    [[('source_file', 'a.csv'), ('id', 'x')]]
    >>> occurrence_rank(np.array([5, 5, 7, 5])).tolist()
    [0, 1, 0, 2]
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_LIST_TYPE = pa.list_(pa.field("element", pa.string(), nullable=False))
_MAP_TYPE = pa.map_(pa.string(), pa.field("value", pa.string(), nullable=False))
# Epoch units decided per value by magnitude. Each threshold is 1973-03-03 in the finer unit and the year
# 5138 in the coarser one, so no real time (1973..5138) is ambiguous: s < 1e11 <= ms < 1e14 <= us < 1e17 <= ns.
S_MS_THRESHOLD = 10**11
MS_US_THRESHOLD = 10**14
US_NS_THRESHOLD = 10**17


def const_strings(value: str, n: int) -> pa.Array:
    """``n`` copies of one string, built straight from buffers (no Python list, no gather)."""
    raw = value.encode()
    if n * len(raw) >= 2**31 - 1:
        return pc.take(pa.array([value], pa.string()), pa.array(np.zeros(n, dtype=np.int32)))
    offsets = (
        np.arange(0, (n + 1) * len(raw), len(raw) or 1, dtype=np.int32)[: n + 1]
        if raw
        else np.zeros(n + 1, np.int32)
    )
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(raw * n)])


def timestamps_us(micros: np.ndarray) -> pa.Array:
    """A ``timestamp[us, UTC]`` array from int64 microseconds."""
    return pa.array(np.ascontiguousarray(micros, dtype=np.int64), pa.int64()).cast(
        pa.timestamp("us", tz="UTC")
    )


def epoch_to_micros(values: np.ndarray) -> np.ndarray:
    """Vendor epoch times to microseconds, the unit decided per value: s, ms, us or ns (see the thresholds).

    Binance spot files switched from ms to us on 2025-01-01; other tools write seconds or nanoseconds.
    Deciding per value handles all of them and any file that mixes them. Nanoseconds are truncated to
    the microsecond (K2's resolution). Values before 1973 come out as seconds and are then rejected by
    the validator (times before 1990).

    >>> epoch_to_micros(np.array([1609632000, 1609632000039, 1735689600000123, 1735689600000123456])).tolist()
    [1609632000000000, 1609632000039000, 1735689600000123, 1735689600000123]
    """
    values = np.asarray(values, dtype=np.int64)
    scale = np.select(
        [values < S_MS_THRESHOLD, values < MS_US_THRESHOLD, values < US_NS_THRESHOLD],
        [1_000_000, 1_000, 1],
        0,
    ).astype(np.int64)
    return np.where(scale > 0, values * scale, values // 1000)


def flag_list(mask: np.ndarray, flag: str) -> pa.Array:
    """A ``list<string>`` column holding ``[flag]`` where ``mask`` is true and ``[]`` elsewhere."""
    mask = np.asarray(mask, dtype=bool)
    offsets = np.zeros(len(mask) + 1, dtype=np.int32)
    np.cumsum(mask, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), const_strings(flag, int(mask.sum())), type=_LIST_TYPE)


def string_map(entries: Mapping[str, pa.Array]) -> pa.Array:
    """A ``map<string, string>`` column with the same keys on every row, values column-wise."""
    keys = list(entries)
    k = len(keys)
    n = len(next(iter(entries.values()))) if entries else 0
    offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
    key_array = pc.take(pa.array(keys, pa.string()), pa.array(np.tile(np.arange(k, dtype=np.int32), n)))
    values = [pc.cast(entries[key], pa.string()) for key in keys]
    if k == 1:
        items = values[0]  # one entry per row: already in row order
    else:
        order = (np.arange(k, dtype=np.int64)[None, :] * n + np.arange(n, dtype=np.int64)[:, None]).ravel()
        items = pc.take(pa.concat_arrays(values) if k else pa.array([], pa.string()), pa.array(order))
    return pa.MapArray.from_arrays(offsets, key_array, items, type=_MAP_TYPE)


def occurrence_rank(keys: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """For each row, how many earlier rows (in file order) share its key (and group)."""
    n = len(keys)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    index = np.arange(n)
    order = np.lexsort((index, keys)) if groups is None else np.lexsort((index, keys, groups))
    sorted_keys = keys[order]
    new = np.ones(n, dtype=bool)
    new[1:] = sorted_keys[1:] != sorted_keys[:-1]
    if groups is not None:
        sorted_groups = groups[order]
        new[1:] |= sorted_groups[1:] != sorted_groups[:-1]
    starts = np.maximum.accumulate(np.where(new, index, 0))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = index - starts
    return rank


def stable_id(text: str) -> int:
    """A deterministic positive int64 for a non-numeric vendor id (blake2b, 63 bits).

    >>> stable_id("d202810a-ec78-0d65-8652-42c8168f127c") == stable_id("d202810a-ec78-0d65-8652-42c8168f127c")
    True
    """
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") & (2**63 - 1)
