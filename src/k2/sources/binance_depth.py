"""Binance depth: ``depthUpdate`` diff events and REST depth snapshots -> BOOK_DELTA rows, with the sync.

One parser and one sync, shared by the live feed and ``k2 import binance-capture``. The sync follows
Binance's documented procedure ("How to manage a local order book correctly"):

1. Buffer diff events until a REST snapshot (``lastUpdateId`` = L) is available.
2. Drop buffered events with ``u <= L``.
3. The first applied event straddles the snapshot: spot ``U <= L + 1 <= u``; USD-M ``U <= L <= u``.
   If the first remaining event starts after that, the snapshot is stale: ask for a newer one.
4. Afterwards every event continues the chain: spot ``U == previous u + 1``; USD-M ``pu == previous u``.
   A break means ids were lost: the sync reports the lost range (a ``quality.gaps`` row, kind ``depth``),
   forgets the chain, buffers the breaking event and asks for a fresh snapshot. Nothing is emitted from a
   broken chain.

Rows: a snapshot becomes one row per level with ``is_snapshot=True`` and ``first_update_id =
last_update_id = L``. Binance's REST snapshot has no event time, so its rows carry the exchange time
(``E``) of the first event applied on top of it; they are emitted together with that event. Each event
becomes one row per changed level (bids first, then asks) in the order Binance sent them, the last one
with ``is_event_end=True``. Sizes are absolute (0 removes the level).

Hazards: an event with no changed level emits no row, so a reader checking ``U == previous u + 1`` on
stored rows could see a false hole; K2's readers rely on the sync instead. Events at or below the last
applied ``u`` (a redelivery) are dropped silently.

Example:
    >>> sync = DepthSync("BTCUSDT")
    >>> ev = parse_depth_update({"e": "depthUpdate", "E": 5, "s": "BTCUSDT", "U": 10, "u": 12,
    ...     "b": [["1.5", "2"]], "a": []}, 7)
    >>> sync.on_event(ev).rows, sync.needs_snapshot
    ([], True)
    >>> out = sync.on_snapshot(DepthSnapshot("BTCUSDT", 10, [(100000000, 1)], [(200000000, 3)], 6))
    >>> [(r["side"], r["is_snapshot"], r["last_update_id"]) for r in out.rows]
    [('BID', True, 10), ('ASK', True, 10), ('BID', False, 12)]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from k2.model import DataType
from k2.model.values import canonical_instrument, to_unscaled
from k2.sources.binance.markets import SPOT, BinanceMarket
from k2.sources.live import MalformedMessage

Levels = list[tuple[int, int]]


@dataclass(frozen=True)
class DepthEvent:
    """One parsed ``depthUpdate`` (prices and sizes unscaled, times in epoch microseconds)."""

    symbol: str
    first_update_id: int
    last_update_id: int
    prev_update_id: int | None
    exchange_ts: int
    transaction_ts: int | None
    bids: Levels
    asks: Levels
    receipt_ts: int
    raw: bytes = field(default=b"", compare=False, repr=False)  # the original message (DLQ if never applied)


@dataclass(frozen=True)
class DepthSnapshot:
    """A REST depth snapshot of one symbol (``lastUpdateId`` and levels)."""

    symbol: str
    last_update_id: int
    bids: Levels
    asks: Levels
    receipt_ts: int


@dataclass
class SyncOutput:
    """What one step of the sync produced: rows to store, lost id ranges, whether a snapshot is needed."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[tuple[int, int, int | None, int | None]] = field(default_factory=list)
    # (first lost id, last lost id, exchange time before, exchange time after)
    needs_snapshot: bool = False  # set by the live feed adapter: the sync waits for a REST snapshot


def _levels(value: Any, key: str, symbol: str) -> Levels:
    if not isinstance(value, list):
        raise MalformedMessage(
            "missing_field",
            f"expected {key!r} as a list of [price, size], found {value!r}"[:300],
            DataType.DEPTH,
            symbol,
        )
    out: Levels = []
    for item in value:
        if (
            not isinstance(item, list)
            or len(item) < 2
            or not isinstance(item[0], str)
            or not isinstance(item[1], str)
        ):
            raise MalformedMessage(
                "bad_field",
                f"expected a [price, size] pair of strings in {key!r}, found {item!r}"[:300],
                DataType.DEPTH,
                symbol,
            )
        try:
            price, size = to_unscaled(item[0]), to_unscaled(item[1])
        except ValueError as exc:
            raise MalformedMessage("bad_number", f"{key}: {exc}", DataType.DEPTH, symbol) from None
        if price <= 0:
            raise MalformedMessage(
                "non_positive_price", f"{key}: price must be > 0, found {item[0]!r}", DataType.DEPTH, symbol
            )
        if size < 0:
            raise MalformedMessage(
                "negative_size", f"{key}: size must be >= 0, found {item[1]!r}", DataType.DEPTH, symbol
            )
        out.append((price, size))
    return out


def _int(data: Mapping[str, Any], key: str, symbol: str | None, required: bool = True) -> int | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if type(value) is not int:
        raise MalformedMessage(
            "bad_field" if key in data else "missing_field",
            f"expected {key!r} as an integer, found {value!r}",
            DataType.DEPTH,
            symbol,
        )
    return value


def parse_depth_update(data: Mapping[str, Any], receipt_us: int, raw: bytes = b"") -> DepthEvent:
    """A ``depthUpdate`` payload (spot, US or USD-M) -> :class:`DepthEvent` (raises :class:`MalformedMessage`).

    >>> parse_depth_update({"e": "depthUpdate", "E": 2, "T": 1, "s": "BTCUSDT", "U": 5, "u": 6, "pu": 4,
    ...     "b": [], "a": [["1", "0"]]}, 3).prev_update_id
    4
    """
    symbol = data.get("s")
    if not isinstance(symbol, str) or not symbol:
        raise MalformedMessage(
            "missing_field", f"expected 's' (symbol) in a depthUpdate, found {symbol!r}", DataType.DEPTH, None
        )
    first = _int(data, "U", symbol)
    last = _int(data, "u", symbol)
    event_ms = _int(data, "E", symbol)
    assert first is not None and last is not None and event_ms is not None
    if first > last:
        raise MalformedMessage(
            "bad_update_ids", f"expected U <= u, found U={first} u={last}", DataType.DEPTH, symbol
        )
    transaction_ms = _int(data, "T", symbol, required=False)
    return DepthEvent(
        symbol=symbol,
        first_update_id=first,
        last_update_id=last,
        prev_update_id=_int(data, "pu", symbol, required=False),
        exchange_ts=event_ms * 1000,
        transaction_ts=None if transaction_ms is None else transaction_ms * 1000,
        bids=_levels(data.get("b"), "b", symbol),
        asks=_levels(data.get("a"), "a", symbol),
        receipt_ts=receipt_us,
        raw=raw,
    )


def parse_depth_snapshot(obj: Mapping[str, Any], symbol: str, receipt_us: int) -> DepthSnapshot:
    """A REST ``/api/v3/depth`` (or ``/fapi/v1/depth``) answer -> :class:`DepthSnapshot`.

    >>> parse_depth_snapshot({"lastUpdateId": 9, "bids": [["2", "1"]], "asks": []}, "BTCUSDT", 0).bids
    [(200000000, 100000000)]
    """
    last = _int(obj, "lastUpdateId", symbol)
    assert last is not None
    return DepthSnapshot(
        symbol,
        last,
        _levels(obj.get("bids"), "bids", symbol),
        _levels(obj.get("asks"), "asks", symbol),
        receipt_us,
    )


def _row(
    market: BinanceMarket,
    symbol: str,
    side: str,
    price: int,
    size: int,
    first: int,
    last: int,
    prev: int | None,
    exchange_ts: int,
    transaction_ts: int | None,
    receipt_ts: int,
    is_snapshot: bool,
    is_end: bool,
) -> dict[str, Any]:
    return {
        "exchange": market.exchange,
        "symbol": symbol,
        "instrument": canonical_instrument(symbol),
        "asset_class": market.asset_class,
        "exchange_ts": exchange_ts,
        "transaction_ts": transaction_ts,
        "receipt_ts": receipt_ts,
        "ingest_ts": None,
        "first_update_id": first,
        "last_update_id": last,
        "prev_update_id": prev,
        "side": side,
        "price": price,
        "size": size,
        "is_snapshot": is_snapshot,
        "is_event_end": is_end,
    }


def event_rows(event: DepthEvent, market: BinanceMarket = SPOT) -> list[dict[str, Any]]:
    """Wire-form BOOK_DELTA rows of one event (bids then asks; the last row ends the event)."""
    levels = [("BID", p, s) for p, s in event.bids] + [("ASK", p, s) for p, s in event.asks]
    return [
        _row(
            market,
            event.symbol,
            side,
            price,
            size,
            event.first_update_id,
            event.last_update_id,
            event.prev_update_id,
            event.exchange_ts,
            event.transaction_ts,
            event.receipt_ts,
            False,
            i == len(levels) - 1,
        )
        for i, (side, price, size) in enumerate(levels)
    ]


def snapshot_rows(
    snapshot: DepthSnapshot, exchange_ts: int, market: BinanceMarket = SPOT
) -> list[dict[str, Any]]:
    """Wire-form BOOK_DELTA rows of a snapshot (``exchange_ts``: see the module docstring)."""
    levels = [("BID", p, s) for p, s in snapshot.bids] + [("ASK", p, s) for p, s in snapshot.asks]
    last = snapshot.last_update_id
    return [
        _row(
            market,
            snapshot.symbol,
            side,
            price,
            size,
            last,
            last,
            None,
            exchange_ts,
            None,
            snapshot.receipt_ts,
            True,
            i == len(levels) - 1,
        )
        for i, (side, price, size) in enumerate(levels)
    ]


class DepthSync:
    """The documented local-book sync of one symbol; feed it events and snapshots in arrival order.

    ``needs_snapshot`` says when the caller must fetch (live) or wait for (capture) a REST snapshot.
    ``futures`` selects USD-M's chaining (``pu``) instead of spot's (``U == previous u + 1``).
    """

    def __init__(self, symbol: str, market: BinanceMarket = SPOT) -> None:
        self.symbol = symbol
        self.market = market
        self.futures = market.asset_class == "futures"
        self.buffer: list[DepthEvent] = []
        self.last_applied: int | None = None  # u of the last applied event (None: not synced)
        self._last_ts: int | None = None
        self._pending: DepthSnapshot | None = None  # a snapshot waiting for its straddling event
        self.events_applied = 0

    @property
    def needs_snapshot(self) -> bool:
        return self.last_applied is None and self._pending is None

    @property
    def synced(self) -> bool:
        return self.last_applied is not None

    def on_event(self, event: DepthEvent) -> SyncOutput:
        """Apply or buffer one event; a chain break yields a gap and resets the sync."""
        out = SyncOutput()
        if self.last_applied is None:
            if self._pending is not None:
                self.buffer.append(event)
                return self._try_start(out)
            self.buffer.append(event)
            return out
        if event.last_update_id <= self.last_applied:
            return out  # already applied (redelivery)
        if self._continues(event, self.last_applied):
            self._apply(event, out)
            return out
        lost_to = (
            event.prev_update_id
            if self.futures and event.prev_update_id is not None
            else event.first_update_id - 1
        )
        if lost_to >= self.last_applied + 1:
            out.gaps.append((self.last_applied + 1, lost_to, self._last_ts, event.exchange_ts))
        else:  # the chain broke without a provable hole (e.g. overlapping ids): still resync
            out.gaps.append(
                (
                    self.last_applied + 1,
                    max(self.last_applied + 1, event.first_update_id - 1),
                    self._last_ts,
                    event.exchange_ts,
                )
            )
        self.last_applied = None
        self.buffer = [event]
        return out

    def on_snapshot(self, snapshot: DepthSnapshot) -> SyncOutput:
        """Start (or restart) the book from a REST snapshot and apply what the buffer allows."""
        self._pending = snapshot
        self.last_applied = None
        return self._try_start(SyncOutput())

    def _continues(self, event: DepthEvent, previous: int) -> bool:
        if self.futures and event.prev_update_id is not None:
            return event.prev_update_id == previous
        return event.first_update_id == previous + 1

    def _straddles(self, event: DepthEvent, last: int) -> bool:
        if self.futures:
            return event.first_update_id <= last <= event.last_update_id
        return event.first_update_id <= last + 1 <= event.last_update_id

    def _try_start(self, out: SyncOutput) -> SyncOutput:
        snapshot = self._pending
        assert snapshot is not None
        last = snapshot.last_update_id
        self.buffer = [e for e in self.buffer if e.last_update_id > last]
        if not self.buffer:
            return out  # wait for the event that straddles the snapshot
        first = self.buffer[0]
        if not self._straddles(first, last):
            # The buffer starts after the snapshot: events in between are unknown. Ask for a newer one.
            self._pending = None
            return out
        out.rows.extend(snapshot_rows(snapshot, first.exchange_ts, self.market))
        self._pending = None
        self.last_applied = last
        buffered, self.buffer = self.buffer, []
        self._apply(buffered[0], out)
        for event in buffered[1:]:
            step = self.on_event(event)
            out.rows.extend(step.rows)
            out.gaps.extend(step.gaps)
        return out

    def _apply(self, event: DepthEvent, out: SyncOutput) -> None:
        out.rows.extend(event_rows(event, self.market))
        self.last_applied = event.last_update_id
        self._last_ts = event.exchange_ts
        self.events_applied += 1
