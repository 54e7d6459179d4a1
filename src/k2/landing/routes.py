"""Which table a market topic lands into: the routes of the landing consumer (and of the DLQ replay).

A topic's data type picks the table, the record type its messages are decoded and validated as, and the
id column that dedup, the high-water marks and the gap ledger key on.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
from pyiceberg.table import Table

from k2.bus.topics import parse_topic
from k2.landing.book import deduplicate_book
from k2.landing.dedup import DedupResult, HighWaterMarks
from k2.model import BOOK_DELTA, QUOTE, TRADE, RecordType

TOPIC_REGEX = r"^market\.[a-z]+\.(trades|quotes|depth)\.[a-z0-9_-]+$"
ROUTES: dict[str, tuple[str, RecordType, str]] = {
    "trades": ("trades", TRADE, "trade_id"),
    "quotes": ("quotes", QUOTE, "update_id"),
    "depth": ("book_deltas", BOOK_DELTA, "last_update_id"),
}
# The same routes by table short name (a topic's data type "depth" lands in the table "book_deltas").
TABLE_ROUTES: dict[str, tuple[str, RecordType, str]] = {route[0]: route for route in ROUTES.values()}
# Tables whose natural key is more than (exchange, symbol, id): their own dedup (same signature).
DEDUP: dict[str, Callable[[pa.Table, str, Table, HighWaterMarks, frozenset[str]], DedupResult]] = {
    "book_deltas": deduplicate_book
}


def route(topic: str) -> tuple[str, RecordType, str]:
    """(table short name, record type, id column) that a market topic lands into (ValueError/KeyError otherwise).

    Example:
        >>> route("market.crypto.trades.binance")[0], route("market.crypto.quotes.binance")[2]
        ('trades', 'update_id')
    """
    _, data_type, _ = parse_topic(topic)
    return ROUTES[data_type]
