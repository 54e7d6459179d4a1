"""Comparing Arrow answers row by row without paying Python's price when they are identical.

``table.to_pylist()`` of 130,000 trades costs about 6 s of CPU (a dict per row, a ``Decimal`` and a
``datetime`` per cell); the large-answer tests compared two or three such lists per answer. Here the
comparison first asks Arrow: equal schemas and ``Table.equals`` mean every cell is the same value of the
same type, so any Python view of the rows (``to_pylist``, a normalised form) is equal too. Only when Arrow
says "not equal" are the Python rows built and compared: the assertion is then exactly the one the test
wrote (so a difference Arrow sees but the Python view does not, e.g. nullability flags, still passes),
and its message names the first differing row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

Rows = Callable[[pa.Table], list[dict[str, Any]]]


def _pylist(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist()  # type: ignore[no-any-return]


def identical(got: pa.Table, expected: pa.Table) -> bool:
    """True when Arrow finds the same schema and the same cells (chunking does not matter)."""
    return bool(got.schema.equals(expected.schema) and got.equals(expected))


def assert_same_rows(got: pa.Table, expected: pa.Table, message: str = "", rows: Rows = _pylist) -> None:
    """``rows(got) == rows(expected)``, checked by Arrow first (see the module docstring)."""
    if identical(got, expected):
        return
    got_rows, expected_rows = rows(got), rows(expected)
    if got_rows == expected_rows:
        return
    first = next(
        (i for i, (a, b) in enumerate(zip(got_rows, expected_rows, strict=False)) if a != b),
        min(len(got_rows), len(expected_rows)),
    )
    detail = (
        f"expected {len(expected_rows)} rows, found {len(got_rows)}; first difference at row {first}: "
        f"expected {expected_rows[first] if first < len(expected_rows) else None!r}, "
        f"found {got_rows[first] if first < len(got_rows) else None!r}"
    )
    raise AssertionError(f"{message}: {detail}" if message else detail)


def assert_rows_differ(got: pa.Table, expected: pa.Table, message: str = "", rows: Rows = _pylist) -> None:
    """``rows(got) != rows(expected)``: identical tables fail at once; otherwise the Python views decide."""
    assert not identical(got, expected) and rows(got) != rows(expected), message
