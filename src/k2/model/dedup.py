"""Natural-key dedup inside one batch: the first occurrence of each key wins (pure, no I/O).

This is step 1 of the landing's dedup (duplicates inside a batch are dropped, first occurrence wins) and
the whole in-batch dedup of the hybrid query's Kafka rows, so both read the same rule from one place.
Rows are kept in their input order; callers that need "first" to mean "first in the log" must pass the
rows in log order.

Example:
    >>> import pyarrow as pa
    >>> t = pa.table({"e": ["a", "a", "a", "a", "b"], "id": [3, 1, 1, 3, 3], "v": [0, 1, 2, 3, 4]})
    >>> first_of_each_key(t, ("e", "id"))["v"].to_pylist()
    [0, 1, 4]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa


def first_of_each_key_mask(table: pa.Table, key: Sequence[str]) -> np.ndarray:
    """Boolean mask over ``table``'s rows: True for the first row of each natural ``key``.

    >>> import pyarrow as pa
    >>> first_of_each_key_mask(pa.table({"id": [1, 1, 2]}), ("id",)).tolist()
    [True, False, True]
    """
    n = table.num_rows
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    indexed = table.select(list(key)).append_column("__i", pa.array(np.arange(n, dtype=np.int64)))
    first = indexed.group_by(list(key), use_threads=False).aggregate([("__i", "min")])["__i_min"]
    mask[first.to_numpy()] = True
    return mask


def first_of_each_key(table: pa.Table, key: Sequence[str]) -> pa.Table:
    """``table`` without rows whose natural ``key`` appeared earlier (order preserved)."""
    if table.num_rows <= 1:
        return table
    mask = first_of_each_key_mask(table, key)
    return table if mask.all() else table.filter(pa.array(mask))
