"""What the two Tardis depth importers share: the BOOK_DELTA row, the depth DLQ topic, the producer sinks.

``incremental_book_L2`` (:mod:`k2.sources.tardis_book`) and ``book_snapshot_N``
(:mod:`k2.sources.tardis_book_snapshot`) read different layouts but land the same thing - one
``market_data.book_deltas`` row per level - so the row is built here, once: a level of ``exchange``/``symbol``
at ``exchange_ts`` with its Tardis instrument and asset class, no transaction time, no previous update id
(the files carry no chain), ``first_update_id == last_update_id`` (one synthetic id per event).

Hazard: the L2 reader learns a row's update id and whether it ends its event only when the event is
complete, so :func:`book_row` accepts ``update_id=None`` and the caller fills both in before emitting; a
row emitted with ``None`` ids would be rejected by the Avro schema at the producer.

Example::

    >>> row = book_row("binance", "BTCUSDT", exchange_ts=5, receipt_ts=6, side="BID", price=1, size=2,
    ...                is_snapshot=True, update_id=5000, is_event_end=True)
    >>> row["instrument"], row["first_update_id"], row["last_update_id"]
    ('BTC-USDT', 5000, 5000)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from k2.bus.producer import MarketDataProducer
from k2.bus.topics import topic_name
from k2.model import BOOK_DELTA, DataType
from k2.sources.files.tardis import tardis_asset_class, tardis_instrument

Emit = Callable[[dict[str, Any]], None]
Reject = Callable[[str, str, str, str, bytes], None]  # exchange, symbol, reason, detail, raw line


def book_row(
    exchange: str,
    symbol: str,
    *,
    exchange_ts: int,
    receipt_ts: int,
    side: str,
    price: int,
    size: int,
    is_snapshot: bool,
    update_id: int | None = None,
    is_event_end: bool = False,
) -> dict[str, Any]:
    """One BOOK_DELTA row of a Tardis file (prices and sizes unscaled ``decimal(18,8)``, times in µs)."""
    return {
        "exchange": exchange,
        "symbol": symbol,
        "instrument": tardis_instrument(f"{exchange}\x1f{symbol}"),
        "asset_class": tardis_asset_class(exchange),
        "exchange_ts": exchange_ts,
        "transaction_ts": None,
        "receipt_ts": receipt_ts,
        "ingest_ts": None,
        "first_update_id": update_id,
        "last_update_id": update_id,
        "prev_update_id": None,
        "side": side,
        "price": price,
        "size": size,
        "is_snapshot": is_snapshot,
        "is_event_end": is_event_end,
    }


def depth_source(exchange: str) -> str:
    """The depth topic a bad row of ``exchange`` is dead-lettered for (``tardis`` when the row names none)."""
    venue = exchange or "tardis"
    return topic_name(tardis_asset_class(venue), DataType.DEPTH.value, venue)


class Tally(Protocol):
    """What an import report counts: rows produced and rows dead-lettered by reason."""

    rows: int
    dead_lettered: Counter[str]


def producer_sinks(producer: MarketDataProducer, report: Tally) -> tuple[Emit, Reject]:
    """``emit`` (produce one row to its depth topic) and ``reject`` (to the DLQ with its raw bytes), counted.

    Rows are held and produced in batches (:meth:`MarketDataProducer.send_buffered`, the column-wise path):
    the producer's ``flush`` (its ``with`` block's end) sends the last held rows."""

    def emit(row: dict[str, Any]) -> None:
        producer.send_buffered(BOOK_DELTA, row)
        report.rows += 1

    def reject(exchange: str, symbol: str, reason: str, detail: str, raw: bytes) -> None:
        producer.dead_letter(depth_source(exchange), symbol.encode(), raw, reason, detail)
        report.dead_lettered[reason] += 1

    return emit, reject
