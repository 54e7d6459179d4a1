"""tests/support/tables.py: the Arrow shortcut the large-answer tests compare with gives the answers the
row-by-row Python comparisons it replaces gave."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
import pytest

from tests.support.tables import assert_rows_differ, assert_same_rows


def test_same_rows_whatever_the_chunks_and_named_when_not() -> None:
    table = pa.table(
        {"id": [1, 2, 3], "price": pa.array([Decimal("1.10"), None, Decimal("2")], pa.decimal128(18, 8))}
    )
    assert_same_rows(pa.concat_tables([table.slice(0, 1), table.slice(1)]), table)
    # Arrow sees a difference the Python rows do not (nullability): the rows decide, as before.
    strict = table.cast(pa.schema([pa.field("id", pa.int64(), nullable=False), table.schema.field("price")]))
    assert_same_rows(strict, table)
    changed = table.set_column(0, "id", pa.array([1, 2, 4]))
    with pytest.raises(AssertionError, match="first difference at row 2"):
        assert_same_rows(changed, table, "edited")
    assert_rows_differ(changed, table)
    with pytest.raises(AssertionError):
        assert_rows_differ(strict, table)
