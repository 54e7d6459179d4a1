"""Tardis.dev ``incremental_book_L2`` CSV -> BOOK_DELTA rows, produced to Kafka for the landing consumer.

The CSV (header ``exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount``, times in
microseconds) lists one changed level a row: ``side`` ``bid``/``ask``, ``amount`` the level's new absolute
size (0 removes it), ``is_snapshot`` true for the rows of an order-book snapshot. Tardis' rule: when a
snapshot row follows a non-snapshot row, the book so far is discarded - here that run of snapshot rows is
one restart (``is_snapshot=True`` rows sharing one update id).

Rows are built by :func:`k2.sources.tardis_depth.book_row`, shared with the ``book_snapshot_N`` importer.

Update ids: the files carry none, so K2 synthesises a monotonic id per (exchange, symbol), as for Coinbase
(:func:`k2.sources.coinbase_depth.synthetic_update_id`): ``timestamp x 1000``, raised to ``previous + 1``
when that would not increase. One event = the consecutive rows of a symbol with the same timestamp (one
id; its last row ``is_event_end``); a snapshot run is one event whatever its timestamps. The same file therefore always gets the same ids (a re-import lands nothing
twice: the landing dedups on exchange, symbol, update id, side, price). No chain is checkable, so no gaps.

Bad rows go to the depth DLQ with a reason (``unknown_side``, ``bad_number``, ``negative_size``,
``non_positive_price``, ``no_snapshot`` for an update before the symbol's first snapshot,
``bad_field``); nothing else is affected.

Hazard: rows of one symbol must be in time order in the file (Tardis writes them so); a symbol's event
split across non-consecutive lines becomes two events with two ids.

Example::

    report = import_tardis_book([Path("binance_incremental_book_L2_2024-08-08_BTCUSDT.csv.gz")], settings)
"""

from __future__ import annotations

import csv
import gzip
import io
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k2.bus.producer import MarketDataProducer
from k2.config import Settings
from k2.model.values import to_unscaled
from k2.sources.coinbase_depth import synthetic_update_id
from k2.sources.live import MalformedMessage
from k2.sources.tardis_depth import Emit, Reject, book_row, producer_sinks

COLUMNS = ("exchange", "symbol", "timestamp", "local_timestamp", "is_snapshot", "side", "price", "amount")
_SIDES = {"bid": "BID", "ask": "ASK"}


@dataclass
class _Symbol:
    last_id: int | None = None
    in_snapshot: bool = False
    event: list[dict[str, Any]] = field(default_factory=list)
    event_key: tuple[int, bool] | None = None  # (timestamp, snapshot) of the open event


class TardisL2Reader:
    """Turns ``incremental_book_L2`` rows (dicts by column name) into BOOK_DELTA rows, event by event."""

    def __init__(self, emit: Emit, reject: Reject) -> None:
        self.emit, self.reject = emit, reject
        self.symbols: dict[tuple[str, str], _Symbol] = {}
        self.snapshots = 0

    def feed(self, row: dict[str, str], raw: bytes) -> None:
        exchange, symbol = (row.get("exchange") or "").lower(), row.get("symbol") or ""
        try:
            parsed = _parse(row, exchange, symbol)
        except MalformedMessage as exc:
            self.reject(exchange, symbol, exc.reason, exc.detail, raw)
            return
        state = self.symbols.setdefault((exchange, symbol), _Symbol())
        micros, snapshot = parsed["exchange_ts"], parsed["is_snapshot"]
        if not snapshot and state.last_id is None and not state.event:
            self.reject(exchange, symbol, "no_snapshot", f"expected a snapshot of {symbol} first", raw)
            return
        key = (micros if not snapshot else -1, snapshot)  # a snapshot run is one event
        if state.event_key != key:
            self._flush(state)
            state.event_key = key
            if snapshot and not state.in_snapshot:
                self.snapshots += 1
            state.in_snapshot = snapshot
        state.event.append(parsed)

    def finish(self) -> None:
        for state in self.symbols.values():
            self._flush(state)

    def _flush(self, state: _Symbol) -> None:
        if not state.event:
            return
        ident = state.last_id = synthetic_update_id(state.last_id, state.event[0]["exchange_ts"])
        for i, row in enumerate(state.event):
            row["first_update_id"] = row["last_update_id"] = ident
            row["is_event_end"] = i == len(state.event) - 1
            self.emit(row)
        state.event = []


def _parse(row: dict[str, str], exchange: str, symbol: str) -> dict[str, Any]:
    if not exchange or not symbol:
        raise MalformedMessage("bad_field", f"expected exchange and symbol, found {exchange!r}, {symbol!r}")
    side = _SIDES.get((row.get("side") or "").lower())
    if side is None:
        raise MalformedMessage("unknown_side", f"expected side bid or ask, found {row.get('side')!r}")
    try:
        price, size = to_unscaled(row.get("price") or ""), to_unscaled(row.get("amount") or "")
        micros, local = int(row.get("timestamp") or ""), int(row.get("local_timestamp") or "")
    except ValueError as exc:
        raise MalformedMessage("bad_number", str(exc)) from None
    if price <= 0:
        raise MalformedMessage("non_positive_price", f"price must be > 0, found {row.get('price')!r}")
    if size < 0:
        raise MalformedMessage("negative_size", f"amount must be >= 0, found {row.get('amount')!r}")
    snapshot_text = (row.get("is_snapshot") or "").lower()
    if snapshot_text not in ("true", "false"):
        raise MalformedMessage("bad_field", f"expected is_snapshot true or false, found {snapshot_text!r}")
    return book_row(
        exchange,
        symbol,
        exchange_ts=micros,
        receipt_ts=local,
        side=side,
        price=price,
        size=size,
        is_snapshot=snapshot_text == "true",
    )


def iter_rows(path: Path) -> Iterator[tuple[dict[str, str], bytes]]:
    """(row by column name, the raw line) of a CSV file (``.gz`` or plain); the header is checked."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as binary:
        header = binary.readline().decode().strip().split(",")
        if tuple(header) != COLUMNS:
            raise ValueError(
                f"{path.name}: expected the incremental_book_L2 header {','.join(COLUMNS)}, found {','.join(header)}"
            )
        for line in binary:
            if line.strip():
                values = next(csv.reader(io.StringIO(line.decode())))
                yield dict(zip(COLUMNS, values, strict=False)), line.rstrip(b"\r\n")


@dataclass
class TardisBookReport:
    rows: int = 0
    lines: int = 0
    snapshots: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)


def import_tardis_book(paths: Iterable[Path], settings: Settings) -> TardisBookReport:
    """Produce the files' book deltas to Kafka (``market.<asset_class>.depth.<exchange>``); bad rows to its DLQ."""
    report = TardisBookReport()
    with MarketDataProducer(settings) as producer:
        reader = TardisL2Reader(*producer_sinks(producer, report))
        for path in paths:
            for row, raw in iter_rows(Path(path)):
                reader.feed(row, raw)
                report.lines += 1
        reader.finish()
    report.snapshots = reader.snapshots
    return report
