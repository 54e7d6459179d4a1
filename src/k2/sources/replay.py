"""Replay: re-publish stored trades, quotes or book deltas to a Kafka topic in exchange-time order, at a chosen speed.

For backtests and for rebuilding downstream systems. Rows are read from K2's Iceberg table with a
pyiceberg scan filtered on exchange, symbols and a time window, **one window at a time** (default 15
minutes of exchange time; windows holding no data file are skipped from the files' column bounds
without a scan), so a long range is never loaded at once. Each window is sorted by
``(exchange_ts, id, exchange, symbol)``: exchange-time order with deterministic ties. Windows are
half-open ``[a, b)``, so no row is sent twice.

Pacing: ``speed`` ``10x`` sends the rows so that exchange-time deltas take a tenth of the time
(``due = t0 + (ts - ts0) / speed``; a row is never sent before it is due); ``max`` sends as fast as the
producer goes. The rows due at once go out as one batch (``send_many``, column-wise, at most 10,000 rows),
sent before the replay waits for the next row. Rows are sent as Avro with :class:`k2.bus.MarketDataProducer`
(``receipt_ts`` and every other column as stored; ``ingest_ts`` is the new production time) with a ``k2.replay`` header naming the
source table.

Example:
    >>> parse_speed("10x"), parse_speed("1x"), parse_speed("max")
    (10.0, 1.0, None)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
from pyiceberg import expressions
from pyiceberg.conversions import from_bytes
from pyiceberg.table import Table
from pyiceberg.types import TimestamptzType

from k2.bus.producer import MarketDataProducer
from k2.config import Settings
from k2.lake.catalog import TABLES, ensure_tables, load_catalog
from k2.model import RecordType
from k2.model.arrow import arrow_to_records
from k2.model.values import datetime_to_micros
from k2.telemetry.metrics import metric

# pyiceberg's expression classes are pydantic models whose positional constructors mypy cannot see.
_X: Any = expressions

_BATCH_ROWS = 10_000  # rows sent per send_many call at most

_ID_COLUMN = {"trades": "trade_id", "quotes": "update_id", "book_deltas": "last_update_id"}


def parse_speed(text: str) -> float | None:
    """``"10x"`` -> 10.0, ``"0.5x"`` -> 0.5, ``"max"`` -> None (no pacing); ValueError otherwise.

    >>> parse_speed("2.5X")
    2.5
    >>> parse_speed("fast")
    Traceback (most recent call last):
    ...
    ValueError: expected a speed like 10x, 1x, 0.5x or max, found 'fast'
    """
    value = text.strip().lower()
    if value == "max":
        return None
    number = value.removesuffix("x")
    try:
        speed = float(number)
    except ValueError:
        raise ValueError(f"expected a speed like 10x, 1x, 0.5x or max, found {text!r}") from None
    if not speed > 0 or speed == float("inf"):
        raise ValueError(f"expected a positive finite speed, found {text!r}")
    return speed


@dataclass
class ReplayStats:
    """What one replay did."""

    rows: int = 0
    windows: int = 0  # windows scanned (windows without any data file are skipped unscanned)
    first_ts: int | None = None
    last_ts: int | None = None
    seconds: float = 0.0
    slept_seconds: float = 0.0


def _file_spans(table: Table, row_filter: Any, field_id: int) -> list[tuple[int, int]]:
    """Exchange-time ``[min, max]`` (µs) of each data file the filter may touch, merged into disjoint spans."""
    spans: list[tuple[int, int]] = []
    ts_type = TimestamptzType()
    for task in table.scan(row_filter=row_filter).plan_files():
        lower = task.file.lower_bounds.get(field_id) if task.file.lower_bounds else None
        upper = task.file.upper_bounds.get(field_id) if task.file.upper_bounds else None
        if lower is None or upper is None:
            return [(-(2**62), 2**62)]  # no statistics: scan every window
        spans.append((int(from_bytes(ts_type, lower)), int(from_bytes(ts_type, upper))))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for low, high in spans:
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def iter_windows(
    table: Table,
    short_name: str,
    symbols: Sequence[str],
    start_us: int,
    end_us: int,
    exchange: str | None = None,
    window_us: int = 900_000_000,
    stats: ReplayStats | None = None,
) -> Iterator[pa.Table]:
    """Sorted tables of the rows in ``[start_us, end_us)``, one per exchange-time window (empty ones skipped).

    Example (needs a catalog)::

        for window in iter_windows(tables["trades"], "trades", ["BTCUSDT"], start, end):
            print(window.num_rows)
    """
    if end_us <= start_us:
        raise ValueError(f"expected start < end, found start={start_us} end={end_us} (µs)")
    if window_us <= 0:
        raise ValueError(f"expected a positive window, found {window_us} µs")
    id_column = _ID_COLUMN[short_name]
    base: Any = _X.In("symbol", list(symbols))
    if exchange:
        base = _X.And(_X.EqualTo("exchange", exchange), base)
    field_id = table.schema().find_field("exchange_ts").field_id
    spans = _file_spans(
        table,
        _X.And(
            base, _X.And(_X.GreaterThanOrEqual("exchange_ts", start_us), _X.LessThan("exchange_ts", end_us))
        ),
        field_id,
    )
    order = [
        ("exchange_ts", "ascending"),
        (id_column, "ascending"),
        ("exchange", "ascending"),
        ("symbol", "ascending"),
    ]
    if short_name == "book_deltas":  # rows of one event together, its end row last
        order = [
            ("exchange_ts", "ascending"),
            ("exchange", "ascending"),
            ("symbol", "ascending"),
            (id_column, "ascending"),
            ("is_event_end", "ascending"),
        ]
    cursor = start_us
    for low, high in spans:
        cursor = max(cursor, min(low, end_us))
        while cursor <= high and cursor < end_us:
            upper = min(cursor + window_us, end_us)
            if stats is not None:
                stats.windows += 1
            window_filter = _X.And(
                base, _X.And(_X.GreaterThanOrEqual("exchange_ts", cursor), _X.LessThan("exchange_ts", upper))
            )
            data = table.scan(row_filter=window_filter).to_arrow()
            cursor = upper
            if data.num_rows:
                yield data.sort_by(order)


def replay(
    settings: Settings,
    symbols: Sequence[str],
    start: datetime,
    end: datetime,
    to_topic: str,
    speed: float | None = None,
    table: str = "trades",
    exchange: str | None = None,
    window_seconds: float = 900.0,
    producer: MarketDataProducer | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> ReplayStats:
    """Re-publish the stored rows of ``symbols`` in ``[start, end)`` to ``to_topic`` (see the module docstring).

    Example (needs a broker, registry and catalog)::

        stats = replay(settings, ["BTCUSDT"], start, end, "replay.trades", speed=10.0)
    """
    if table not in _ID_COLUMN:
        raise ValueError(f"expected table trades, quotes or book_deltas, found {table!r}")
    if not symbols:
        raise ValueError("expected at least one symbol, found none")
    if speed is not None and not speed > 0:
        raise ValueError(f"expected a positive speed or None (max), found {speed}")
    record = TABLES[table].record
    iceberg_table = ensure_tables(load_catalog(settings), settings)[table]
    args = (
        record,
        iceberg_table,
        table,
        symbols,
        start,
        end,
        to_topic,
        speed,
        exchange,
        window_seconds,
        on_row,
    )
    if producer is None:
        with MarketDataProducer(settings) as own:
            return _replay(own, *args)
    stats = _replay(producer, *args)
    producer.flush()
    return stats


def _send_columns(
    out: MarketDataProducer, record: RecordType, window: pa.Table, topic: str, headers: dict[str, str]
) -> int:
    """Send a window's rows in order from its columns (:meth:`MarketDataProducer.send_arrow`); ``ingest_ts``
    is nulled so the producer stamps the new production time."""
    if "ingest_ts" in window.column_names:
        index = window.schema.get_field_index("ingest_ts")
        field = pa.field("ingest_ts", window.schema.field(index).type)  # nullable: nulls are restamped
        window = window.set_column(index, field, pa.nulls(window.num_rows, field.type))
    return out.send_arrow(record, window, topic=topic, headers=headers)


def _replay(
    out: MarketDataProducer,
    record: RecordType,
    iceberg_table: Table,
    table: str,
    symbols: Sequence[str],
    start: datetime,
    end: datetime,
    to_topic: str,
    speed: float | None,
    exchange: str | None,
    window_seconds: float,
    on_row: Callable[[dict[str, Any]], None] | None,
) -> ReplayStats:
    stats = ReplayStats()
    headers = {"k2.replay": TABLES[table].full_name}
    sent = metric("k2_replay_rows_total").labels(table=table)
    started = time.monotonic()
    anchor: tuple[float, int] | None = None
    windows = iter_windows(
        iceberg_table,
        table,
        symbols,
        datetime_to_micros(start),
        datetime_to_micros(end),
        exchange,
        int(window_seconds * 1e6),
        stats,
    )
    batch: list[dict[str, Any]] = []

    def send_batch() -> None:  # due rows go out together: one column-wise batch (send_many)
        out.send_many(record, batch, topic=to_topic, headers=headers)
        if on_row is not None:
            for row in batch:
                on_row(row)
        batch.clear()

    for window in windows:
        if speed is None and on_row is None:  # as fast as possible: encoded from the columns
            stats.rows += _send_columns(out, record, window, to_topic, headers)
            times = window["exchange_ts"].cast(pa.int64())
            stats.first_ts = times[0].as_py() if stats.first_ts is None else stats.first_ts
            stats.last_ts = times[-1].as_py()
            sent.inc(window.num_rows)
            continue
        for row in arrow_to_records(record, window):
            ts = row["exchange_ts"]
            if speed is not None:
                if anchor is None:
                    anchor = (time.monotonic(), ts)
                wait = anchor[0] + (ts - anchor[1]) / 1e6 / speed - time.monotonic()
                if wait > 0:
                    if batch:  # what is due now is sent before waiting for the next row
                        send_batch()
                    time.sleep(wait)
                    stats.slept_seconds += wait
            row["ingest_ts"] = None  # stamped by the producer: this is a new production
            batch.append(row)
            if len(batch) >= _BATCH_ROWS:
                send_batch()
            stats.rows += 1
            if stats.first_ts is None:
                stats.first_ts = ts
            stats.last_ts = ts
        if batch:
            send_batch()
        sent.inc(window.num_rows)
    stats.seconds = time.monotonic() - started
    return stats
