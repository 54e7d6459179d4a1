"""Value checks on decoded batches, vectorised: every rejected row gets a reason code for the DLQ.

Reasons: ``non_positive_price``, ``non_positive_quantity``, ``unknown_side``, ``unknown_asset_class``,
``empty_symbol``, ``timestamp_out_of_window``, ``crossed_quote``, ``negative_size``,
``decimal_out_of_range``, ``topic_mismatch``, ``negative_id`` (a negative id in the natural key),
``bad_update_ids`` (book deltas: ``first_update_id`` above
``last_update_id``). Book deltas also use ``unknown_side`` (not BID/ASK), ``non_positive_price`` and
``negative_size`` (0 is valid: it removes the level). A non-numeric price never reaches this module:
the parsers refuse it (``bad_number``) and the producer-side DLQ keeps the original message.

Example:
    >>> import pyarrow as pa
    >>> from k2.model import TRADE
    >>> from k2.model.arrow import records_to_arrow
    >>> row = dict(exchange="binance", symbol="BTCUSDT", instrument="BTC-USDT", asset_class="crypto",
    ...     trade_id=1, price=0, quantity=1, quote_quantity=None, side="BUY", exchange_ts=1_700_000_000_000_000,
    ...     receipt_ts=1_700_000_000_000_000, ingest_ts=0, source_sequence=None, conditions=[], vendor={})
    >>> validate(TRADE, records_to_arrow(TRADE, [row]), now_us=1_700_000_000_000_000, max_future_us=10**9)
    [(0, 'non_positive_price', 'price must be > 0, found 0E-8')]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from k2.model import AssetClass, BookSide, RecordType, Side
from k2.model.arrow import unscaled_from_decimal
from k2.model.schema import PRICE_PRECISION

MIN_EXCHANGE_US = 631_152_000_000_000  # 1990-01-01T00:00:00Z
_MAX_UNSCALED = 10**PRICE_PRECISION - 1
_SIDES = pa.array([s.value for s in Side])
_ASSET_CLASSES = pa.array([a.value for a in AssetClass])
_BOOK_SIDES = pa.array([s.value for s in BookSide])


# long: one vectorised check per rule, in the order of the DLQ reasons table; splitting hides the order.
def validate(
    record: RecordType,
    table: pa.Table,
    now_us: int,
    max_future_us: int,
    expected_exchange: str | None = None,
    expected_asset_class: str | None = None,
) -> list[tuple[int, str, str]]:
    """Rows of ``table`` that must not land: ``(row index, reason, detail)``, first failing rule per row."""
    n = table.num_rows
    if n == 0:
        return []
    bad = np.zeros(n, dtype=bool)
    problems: list[tuple[int, str, str]] = []

    def flag(mask: np.ndarray, reason: str, describe: str) -> None:
        fresh = mask & ~bad
        if fresh.any():
            for index in np.flatnonzero(fresh):
                problems.append((int(index), reason, describe.format(**_row(table, int(index)))))
            bad[:] = bad | fresh

    def decimal_col(name: str) -> tuple[np.ndarray, np.ndarray]:
        column = table.column(name)
        valid = np.asarray(column.is_valid())
        return unscaled_from_decimal(column), valid

    for spec in record.fields:
        if spec.kind == "decimal":
            values, valid = decimal_col(spec.name)
            flag(
                valid & (np.abs(values) > _MAX_UNSCALED),
                "decimal_out_of_range",
                f"{spec.name} does not fit decimal(18,8)",
            )

    for name in record.key:  # trade_id, update_id: venues number from 0 or 1, never below
        if record.field(name).kind == "long":
            ids = table.column(name)
            flag(
                np.asarray(pc.fill_null(pc.less(ids, 0), False)),
                "negative_id",
                f"expected {name} >= 0, found {{{name}}}",
            )

    flag(np.asarray(pc.equal(pc.utf8_length(table.column("symbol")), 0)), "empty_symbol", "symbol is empty")
    flag(
        ~np.asarray(pc.is_in(table.column("asset_class"), value_set=_ASSET_CLASSES)),
        "unknown_asset_class",
        "expected one of crypto/equities/futures/options, found {asset_class!r}",
    )
    if expected_exchange is not None:
        flag(
            np.asarray(pc.not_equal(table.column("exchange"), expected_exchange)),
            "topic_mismatch",
            f"expected exchange {expected_exchange!r} for this topic, found {{exchange!r}}",
        )
    if expected_asset_class is not None:
        flag(
            np.asarray(pc.not_equal(table.column("asset_class"), expected_asset_class)),
            "topic_mismatch",
            f"expected asset_class {expected_asset_class!r} for this topic, found {{asset_class!r}}",
        )

    if record.time_field:
        ts = np.asarray(table.column(record.time_field).cast(pa.int64()))
        flag(
            (ts < MIN_EXCHANGE_US) | (ts > now_us + max_future_us),
            "timestamp_out_of_window",
            f"{record.time_field} outside [1990-01-01, now + {max_future_us // 1_000_000}s], found {{{record.time_field}}}",
        )

    if record.name == "Trade":
        price, _ = decimal_col("price")
        qty, _ = decimal_col("quantity")
        flag(price <= 0, "non_positive_price", "price must be > 0, found {price}")
        flag(qty <= 0, "non_positive_quantity", "quantity must be > 0, found {quantity}")
        flag(
            ~np.asarray(pc.is_in(table.column("side"), value_set=_SIDES)),
            "unknown_side",
            "expected BUY, SELL or UNKNOWN, found {side!r}",
        )
    elif record.name == "Quote":
        bid, bid_valid = decimal_col("bid_price")
        ask, ask_valid = decimal_col("ask_price")
        bid_size, bid_size_valid = decimal_col("bid_size")
        ask_size, ask_size_valid = decimal_col("ask_size")
        flag(
            (bid_valid & (bid < 0)) | (ask_valid & (ask < 0)),
            "non_positive_price",
            "quote prices must be >= 0 (0 = no price), found bid {bid_price} ask {ask_price}",
        )
        flag(
            (bid_size_valid & (bid_size < 0)) | (ask_size_valid & (ask_size < 0)),
            "negative_size",
            "quote sizes must be >= 0, found bid {bid_size} ask {ask_size}",
        )
        # Zero means "no price" on some venues (ASX pre-open); only two real prices can cross.
        crossed = bid_valid & ask_valid & (bid > 0) & (ask > 0) & (bid > ask)
        flag(crossed, "crossed_quote", "bid {bid_price} is above ask {ask_price}")
    elif record.name == "BookDelta":
        _validate_book_delta(table, flag, decimal_col)
    problems.sort()
    return problems


def _validate_book_delta(table: pa.Table, flag: Any, decimal_col: Any) -> None:
    """Rules of one book level change (the sequence rules live in the sources' sync, which sees order)."""
    flag(
        ~np.asarray(pc.is_in(table.column("side"), value_set=_BOOK_SIDES)),
        "unknown_side",
        "expected BID or ASK, found {side!r}",
    )
    price, _ = decimal_col("price")
    size, _ = decimal_col("size")
    flag(price <= 0, "non_positive_price", "price must be > 0, found {price}")
    flag(size < 0, "negative_size", "size must be >= 0 (0 removes the level), found {size}")
    first = np.asarray(table.column("first_update_id").cast(pa.int64()))
    last = np.asarray(table.column("last_update_id").cast(pa.int64()))
    flag(
        first > last,
        "bad_update_ids",
        "expected first_update_id <= last_update_id, found {first_update_id} > {last_update_id}",
    )


def _row(table: pa.Table, index: int) -> dict[str, object]:
    return {name: table.column(name)[index].as_py() for name in table.column_names}
