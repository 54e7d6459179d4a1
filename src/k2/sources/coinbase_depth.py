"""Coinbase ``level2``: ``snapshot`` and ``l2update`` messages -> BOOK_DELTA rows (shared by live feed and captures).

A ``snapshot`` (``bids``/``asks`` as ``[price, size]``) (re)starts a product's book: its rows carry
``is_snapshot=True``. Each ``l2update`` lists ``changes`` as ``[side, price, new size]`` with ``side`` the
resting side (``buy`` -> BID, ``sell`` -> ASK) and the size absolute (0 removes the level).

Update ids: Coinbase's level2 channel carries no sequence number, so K2 synthesises a monotonic one per
product: ``exchange time in microseconds x 1000`` (an l2update's ``time``; a snapshot, which has no time,
uses its receipt time), raised to ``previous id + 1`` when that would not increase. The same message
stream therefore always gets the same ids (re-imports dedup), and the readers' "latest id wins" rule
works as for Binance. A snapshot's rows carry ``first_update_id = last_update_id``; no chain is
checkable (no sequence), so no gaps are derived here.

An ``l2update`` for a product without a snapshot cannot be applied: :class:`CoinbaseBooks` raises
:class:`MalformedMessage` with reason ``no_snapshot`` (the caller dead-letters it).

Example:
    >>> books = CoinbaseBooks()
    >>> rows = books.on_message({"type": "snapshot", "product_id": "BTC-USD", "bids": [["100.5", "2"]], "asks": []}, 5)
    >>> [(r["side"], r["is_snapshot"], r["last_update_id"]) for r in rows]
    [('BID', True, 5000)]
    >>> rows = books.on_message({"type": "l2update", "product_id": "BTC-USD", "changes": [["sell", "101", "1.5"]],
    ...     "time": "2021-04-17T16:43:37.075687Z"}, 6)
    >>> rows[0]["side"], rows[0]["last_update_id"], rows[0]["is_event_end"]
    ('ASK', 1618677817075687000, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from k2.model import DataType
from k2.model.values import canonical_instrument, to_unscaled
from k2.sources.coinbase.parse import ASSET_CLASS, EXCHANGE, parse_time
from k2.sources.live import MalformedMessage

_SIDES = {"buy": "BID", "sell": "ASK"}


def _decimal(value: Any, what: str, product: str) -> int:
    if not isinstance(value, str):
        raise MalformedMessage(
            "bad_number", f"expected {what} as a decimal string, found {value!r}", DataType.DEPTH, product
        )
    try:
        return to_unscaled(value)
    except ValueError as exc:
        raise MalformedMessage("bad_number", f"{what}: {exc}", DataType.DEPTH, product) from None


def _level(side: str, price_text: Any, size_text: Any, product: str) -> tuple[str, int, int]:
    price, size = _decimal(price_text, "price", product), _decimal(size_text, "size", product)
    if price <= 0:
        raise MalformedMessage(
            "non_positive_price", f"price must be > 0, found {price_text!r}", DataType.DEPTH, product
        )
    if size < 0:
        raise MalformedMessage(
            "negative_size", f"size must be >= 0, found {size_text!r}", DataType.DEPTH, product
        )
    return side, price, size


def parse_l2update(msg: Mapping[str, Any], product: str) -> tuple[int, list[tuple[str, int, int]]]:
    """``(exchange time µs, [(side, price, size)])`` of an ``l2update`` (raises :class:`MalformedMessage`)."""
    try:
        micros, _ = parse_time(msg.get("time"))  # type: ignore[arg-type]
    except ValueError as exc:
        raise MalformedMessage("bad_field", str(exc), DataType.DEPTH, product) from None
    changes = msg.get("changes")
    if not isinstance(changes, list) or not changes:
        raise MalformedMessage(
            "missing_field",
            f"expected 'changes' as a non-empty list, found {changes!r}"[:300],
            DataType.DEPTH,
            product,
        )
    levels = []
    for change in changes:
        if not isinstance(change, list) or len(change) != 3:
            raise MalformedMessage(
                "bad_field", f"expected [side, price, size], found {change!r}"[:300], DataType.DEPTH, product
            )
        side = _SIDES.get(change[0]) if isinstance(change[0], str) else None
        if side is None:
            raise MalformedMessage(
                "unknown_side", f"expected side buy or sell, found {change[0]!r}", DataType.DEPTH, product
            )
        levels.append(_level(side, change[1], change[2], product))
    return micros, levels


def parse_snapshot(msg: Mapping[str, Any], product: str) -> list[tuple[str, int, int]]:
    """``[(side, price, size)]`` of a ``snapshot`` (bids first)."""
    levels = []
    for key, side in (("bids", "BID"), ("asks", "ASK")):
        entries = msg.get(key)
        if not isinstance(entries, list):
            raise MalformedMessage(
                "missing_field",
                f"expected {key!r} as a list, found {entries!r}"[:300],
                DataType.DEPTH,
                product,
            )
        for entry in entries:
            if not isinstance(entry, list) or len(entry) < 2:
                raise MalformedMessage(
                    "bad_field",
                    f"expected [price, size] in {key}, found {entry!r}"[:300],
                    DataType.DEPTH,
                    product,
                )
            levels.append(_level(side, entry[0], entry[1], product))
    return levels


def synthetic_update_id(previous: int | None, micros: int) -> int:
    """The update id of an event at ``micros`` after ``previous`` (None: the first) for a venue that sends
    no sequence: ``micros x 1000``, raised to ``previous + 1`` when that would not increase.

    >>> synthetic_update_id(None, 5), synthetic_update_id(5000, 5), synthetic_update_id(5001, 6)
    (5000, 5001, 6000)
    """
    candidate = micros * 1000
    return candidate if previous is None or candidate > previous else previous + 1


@dataclass
class DepthStep:
    """What one level2 message produced for the live runner: rows (no gaps: the channel has no sequence)."""

    rows: list[dict[str, Any]]
    gaps: list[tuple[int, int, int | None, int | None]] = field(default_factory=list)
    needs_snapshot: bool = False  # Coinbase resends a snapshot on every (re)subscription


class CoinbaseBooks:
    """Per-product update-id state; turns ``snapshot``/``l2update`` messages into BOOK_DELTA rows."""

    def __init__(self) -> None:
        self.last_ids: dict[str, int] = {}

    def _next_id(self, product: str, micros: int) -> int:
        ident = self.last_ids[product] = synthetic_update_id(self.last_ids.get(product), micros)
        return ident

    def on_message(self, msg: Mapping[str, Any], receipt_us: int) -> list[dict[str, Any]]:
        """Rows of one ``snapshot`` or ``l2update`` (other types: no rows)."""
        kind = msg.get("type")
        if kind not in ("snapshot", "l2update"):
            return []
        product = msg.get("product_id")
        if not isinstance(product, str) or not product:
            raise MalformedMessage(
                "missing_field", f"expected a product_id string, found {product!r}", DataType.DEPTH, None
            )
        if kind == "snapshot":
            levels = parse_snapshot(msg, product)
            ident = self._next_id(product, receipt_us)
            return _rows(product, levels, ident, receipt_us, receipt_us, True)
        if product not in self.last_ids:
            raise MalformedMessage(
                "no_snapshot",
                f"expected a level2 snapshot of {product} before its l2update, found none",
                DataType.DEPTH,
                product,
            )
        micros, levels = parse_l2update(msg, product)
        return _rows(product, levels, self._next_id(product, micros), micros, receipt_us, False)


def _rows(
    product: str,
    levels: list[tuple[str, int, int]],
    ident: int,
    exchange_ts: int,
    receipt_ts: int,
    snapshot: bool,
) -> list[dict[str, Any]]:
    instrument = canonical_instrument(product)
    return [
        {
            "exchange": EXCHANGE,
            "symbol": product,
            "instrument": instrument,
            "asset_class": ASSET_CLASS,
            "exchange_ts": exchange_ts,
            "transaction_ts": None,
            "receipt_ts": receipt_ts,
            "ingest_ts": None,
            "first_update_id": ident,
            "last_update_id": ident,
            "prev_update_id": None,
            "side": side,
            "price": price,
            "size": size,
            "is_snapshot": snapshot,
            "is_event_end": i == len(levels) - 1,
        }
        for i, (side, price, size) in enumerate(levels)
    ]
