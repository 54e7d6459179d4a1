"""The column-wise JSON body (k2.api.formats.json_rows) is byte-identical to orjson row by row (the per-row
reference: batch_rows), for random batches: nulls, all-null columns, strings that need escaping, lists, maps,
sliced batches, timestamps with and without a zone, exact decimals."""

from __future__ import annotations

import decimal
from datetime import UTC, datetime, timedelta

import orjson
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from k2.api.formats import batch_rows, json_rows

T0 = datetime(2024, 8, 8, 23, 54, 15, 342000, tzinfo=UTC)
TEXT = st.text(alphabet=st.sampled_from(["a", "Z", '"', "\\", "\n", "\x01", "é", "€", " ", "/"]), max_size=6)


def _reference(batch: pa.RecordBatch) -> bytes:
    return b",".join(orjson.dumps(row, default=str) for row in batch_rows(batch))


@st.composite
def batches(draw: st.DrawFn) -> pa.RecordBatch:
    n = draw(st.integers(1, 12))
    null = st.booleans() if draw(st.booleans()) else st.just(False)

    def values(strategy: st.SearchStrategy[object], nullable: bool = True) -> list[object]:
        all_null = nullable and draw(st.integers(0, 5)) == 0
        return [None if all_null or (nullable and draw(null)) else draw(strategy) for _ in range(n)]

    cents = st.integers(-(10**17), 10**17).map(lambda v: decimal.Decimal(v).scaleb(-8))
    stamps = st.integers(0, 10**12).map(lambda us: T0 + timedelta(microseconds=us))
    columns = {
        "i": pa.array(values(st.integers(-(2**62), 2**62)), pa.int64()),
        "price": pa.array(values(cents), pa.decimal128(18, 8)),
        "ts": pa.array(values(stamps), pa.timestamp("us", tz="UTC")),
        "naive": pa.array(
            [None if v is None else v.replace(tzinfo=None) for v in values(stamps)], pa.timestamp("us")
        ),
        "s": pa.array(values(TEXT), pa.string()),
        "plain": pa.array(values(st.sampled_from(["binance", "kraken"]), nullable=False), pa.string()),
        "flag": pa.array(values(st.booleans()), pa.bool_()),
        "x": pa.array(values(st.floats(allow_nan=True, allow_infinity=True, width=64)), pa.float64()),
        "tags": pa.array(values(st.lists(TEXT, max_size=3)), pa.list_(pa.string())),
        "vendor": pa.array(values(st.just([])), pa.map_(pa.string(), pa.string())),
    }
    batch = pa.RecordBatch.from_pydict(columns)
    start = draw(st.integers(0, n - 1))
    return batch.slice(start, draw(st.integers(1, n - start)))


@settings(max_examples=150, deadline=None)
@given(batches())
def test_json_rows_equal_orjson_row_by_row(batch: pa.RecordBatch) -> None:
    exact = batch.drop_columns(["x"])
    assert json_rows(exact) == _reference(exact)
    # Floats: Arrow prints 1.0 as 1 where orjson prints 1.0 (the same JSON number; unchanged by the
    # column-wise encoder's rewrite): compared as parsed values, non-finite ones as null.
    assert orjson.loads(b"[" + json_rows(batch) + b"]") == orjson.loads(b"[" + _reference(batch) + b"]")


def test_json_rows_of_non_empty_maps_and_all_null_rows() -> None:
    batch = pa.RecordBatch.from_pydict({
        "m": pa.array([[("k", 'v"1')], None, []], pa.map_(pa.string(), pa.string())),
        "n": pa.array([None, None, None], pa.string()),
    })  # fmt: skip
    assert json_rows(batch) == _reference(batch)
    only_nulls = pa.RecordBatch.from_pydict({"n": pa.array([None, None], pa.int64())})
    assert json_rows(only_nulls) == b'{"n":null},{"n":null}'
