"""Tardis.dev ``book_snapshot_25`` / ``book_snapshot_5`` CSV -> BOOK_DELTA snapshot rows, produced to Kafka.

The CSV (header ``exchange,symbol,timestamp,local_timestamp`` then, for each level ``i`` from 0,
``asks[i].price,asks[i].amount,bids[i].price,bids[i].amount``; times in microseconds) holds the whole top
N of one book a row, written whenever that top N changed. An empty pair is a level the book did not have
(a thin book).

How it lands: each row becomes one **restarting snapshot** in ``market_data.book_deltas`` - one row per
listed level with ``is_snapshot`` set, all sharing one update id, the last ``is_event_end``. A reader
therefore drops every earlier level at each file row and ``book()`` at any moment inside the file returns
exactly that row's levels: nothing below the top N is invented, and a level that left the top N is gone
rather than turned into a size-0 "removal" the venue never sent. (Diffing consecutive rows would store
fewer rows but would claim such removals; writing ``book_snapshots`` directly would break that table's
contract - written by K2 from the deltas, consistent with them - and leave the deltas without the book.)

Update ids: none in the files; as for ``incremental_book_L2`` (:mod:`k2.sources.tardis_book`) K2
synthesises a monotonic one per (exchange, symbol): ``timestamp x 1000``, raised to ``previous + 1`` when
that would not increase. A re-import gets the same ids and lands nothing twice.

Bad rows go to the depth DLQ with a reason, the rest of the file is unaffected: ``bad_field`` (no
exchange/symbol, wrong column count), ``bad_number`` (a non-numeric price/amount/time),
``missing_level`` (half a level, or a level after an empty one), ``empty_book`` (no level at all),
``non_positive_price``, ``non_positive_size`` (a listed level must hold something), ``unsorted_levels``
(asks not rising or bids not falling), ``crossed_book`` (best bid >= best ask).

Hazards: one row of N levels stores 2N delta rows (and, since every row restarts the book, the book
snapshotter writes a ``book_snapshots`` row per file row): a day of ``book_snapshot_25`` is far bigger than
the same day of ``incremental_book_L2``. Do not import both layouts for the same (exchange, symbol): their
synthetic ids come from the same clock and would collide in the landing's dedup.

Example::

    report = import_tardis_book_snapshots([Path("binance_book_snapshot_25_2024-08-08_BTCUSDT.csv.gz")], settings)
"""

from __future__ import annotations

import csv
import gzip
import io
import re
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

LEAD = ("exchange", "symbol", "timestamp", "local_timestamp")
DEPTHS = (5, 25)
Level = tuple[int, int]


def header(depth: int) -> tuple[str, ...]:
    """The columns of a ``book_snapshot_<depth>`` file.

    >>> header(1)
    ('exchange', 'symbol', 'timestamp', 'local_timestamp', 'asks[0].price', 'asks[0].amount', 'bids[0].price', 'bids[0].amount')
    """
    levels = (
        f"{side}[{i}].{what}"
        for i in range(depth)
        for side in ("asks", "bids")
        for what in ("price", "amount")
    )
    return (*LEAD, *levels)


def depth_of(columns: list[str], name: str, expected: int | None = None) -> int:
    """The N of a ``book_snapshot_N`` header (5 or 25, or ``expected``); ValueError naming what was found."""
    match = re.fullmatch(r"(asks|bids)\[(\d+)\]\.(price|amount)", columns[-1]) if columns else None
    depth = int(match.group(2)) + 1 if match else 0
    wanted = (expected,) if expected is not None else DEPTHS
    if depth not in wanted or tuple(columns) != header(depth):
        shown = ",".join(columns[:8]) + (",..." if len(columns) > 8 else "")
        raise ValueError(
            f"{name}: expected the book_snapshot_{'/'.join(map(str, wanted))} header "
            f"{','.join(header(1))},... ({'/'.join(str(len(header(d))) for d in wanted)} columns), "
            f"found {shown} ({len(columns)} columns)"
        )
    return depth


@dataclass
class SnapshotReader:
    """Turns ``book_snapshot_N`` rows (lists of cells) into BOOK_DELTA snapshot rows, one event a row."""

    emit: Emit
    reject: Reject
    depth: int
    last_ids: dict[tuple[str, str], int] = field(default_factory=dict)
    snapshots: int = 0

    def feed(self, cells: list[str], raw: bytes) -> None:
        exchange = (cells[0] if cells else "").lower()
        symbol = cells[1] if len(cells) > 1 else ""
        try:
            micros, local, asks, bids = _parse(cells, self.depth)
        except MalformedMessage as exc:
            self.reject(exchange, symbol, exc.reason, exc.detail, raw)
            return
        key = (exchange, symbol)
        ident = self.last_ids[key] = synthetic_update_id(self.last_ids.get(key), micros)
        levels = [("BID", p, s) for p, s in bids] + [("ASK", p, s) for p, s in asks]
        for i, (side, price, size) in enumerate(levels):
            self.emit(
                book_row(
                    exchange,
                    symbol,
                    exchange_ts=micros,
                    receipt_ts=local,
                    side=side,
                    price=price,
                    size=size,
                    is_snapshot=True,
                    update_id=ident,
                    is_event_end=i == len(levels) - 1,
                )
            )
        self.snapshots += 1


def _parse(cells: list[str], depth: int) -> tuple[int, int, list[Level], list[Level]]:
    """(timestamp, local_timestamp, asks, bids) of one row, checked; MalformedMessage says why not."""
    if len(cells) != 4 + 4 * depth:
        raise MalformedMessage("bad_field", f"expected {4 + 4 * depth} columns, found {len(cells)}")
    if not cells[0] or not cells[1]:
        raise MalformedMessage("bad_field", f"expected exchange and symbol, found {cells[0]!r}, {cells[1]!r}")
    try:
        micros, local = int(cells[2]), int(cells[3])
    except ValueError:
        raise MalformedMessage(
            "bad_number", f"expected microsecond times, found {cells[2]!r}, {cells[3]!r}"
        ) from None
    asks = _side(cells, depth, 0, "asks")
    bids = _side(cells, depth, 2, "bids")
    if not asks and not bids:
        raise MalformedMessage("empty_book", "expected at least one level, found none")
    if asks and bids and bids[0][0] >= asks[0][0]:
        raise MalformedMessage(
            "crossed_book", f"expected best bid < best ask, found bid {cells[6]} >= ask {cells[4]}"
        )
    return micros, local, asks, bids


def _side(cells: list[str], depth: int, offset: int, name: str) -> list[Level]:
    """The listed levels of one side, best first: contiguous, numeric, positive and in price order."""
    levels: list[Level] = []
    for i in range(depth):
        price_text, amount_text = cells[4 + 4 * i + offset], cells[5 + 4 * i + offset]
        if not price_text and not amount_text:
            continue
        if not price_text or not amount_text or len(levels) < i:
            raise MalformedMessage(
                "missing_level",
                f"expected {name}[{i}] with a price and an amount after {len(levels)} full level(s) "
                f"before it, found price {price_text!r}, amount {amount_text!r}",
            )
        try:
            price, size = to_unscaled(price_text), to_unscaled(amount_text)
        except ValueError as exc:
            raise MalformedMessage(
                "bad_number",
                f"expected {name}[{i}] decimal numbers, found {price_text!r}, {amount_text!r} ({exc})",
            ) from None
        if price <= 0:
            raise MalformedMessage(
                "non_positive_price", f"expected {name}[{i}].price > 0, found {price_text!r}"
            )
        if size <= 0:
            raise MalformedMessage(
                "non_positive_size", f"expected {name}[{i}].amount > 0, found {amount_text!r}"
            )
        if levels and (price <= levels[-1][0] if name == "asks" else price >= levels[-1][0]):
            order = "rising" if name == "asks" else "falling"
            raise MalformedMessage(
                "unsorted_levels", f"expected {name} prices {order}, found {name}[{i}].price {price_text}"
            )
        levels.append((price, size))
    return levels


def _open(path: Path) -> Any:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_depth(path: Path, depth: int | None = None) -> int:
    """The N of a ``book_snapshot_N`` file (``.gz`` or plain) from its header; ValueError when it is not one."""
    with _open(path) as binary:
        return depth_of(binary.readline().decode().strip().split(","), path.name, depth)


def iter_rows(path: Path) -> Iterator[tuple[list[str], bytes]]:
    """(cells, raw line) of each row after the header (check it with :func:`read_depth` first)."""
    with _open(path) as binary:
        binary.readline()
        for line in binary:
            if line.strip():
                yield next(csv.reader(io.StringIO(line.decode()))), line.rstrip(b"\r\n")


@dataclass
class TardisSnapshotReport:
    rows: int = 0
    lines: int = 0
    snapshots: int = 0
    depths: list[int] = field(default_factory=list)
    dead_lettered: Counter[str] = field(default_factory=Counter)


def import_tardis_book_snapshots(
    paths: Iterable[Path], settings: Settings, depth: int | None = None
) -> TardisSnapshotReport:
    """Produce the files' snapshots as book deltas to Kafka (``market.<asset_class>.depth.<exchange>``).

    Every header is checked before anything is produced (ValueError naming the file); bad rows go to the
    depth DLQ with their reason and original bytes.
    """
    files = [Path(p) for p in paths]
    depths = [read_depth(path, depth) for path in files]  # refuse a wrong layout before producing anything
    report = TardisSnapshotReport()
    with MarketDataProducer(settings) as producer:
        emit, reject = producer_sinks(producer, report)
        last_ids: dict[tuple[str, str], int] = {}
        for path, found in zip(files, depths, strict=True):
            reader = SnapshotReader(emit, reject, found, last_ids)
            for cells, raw in iter_rows(path):
                reader.feed(cells, raw)
                report.lines += 1
            report.snapshots += reader.snapshots
            report.depths.append(found)
    return report
