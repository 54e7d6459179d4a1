"""What goes wrong at the fake exchange, and when (:class:`Faults`), and what it did (:class:`FakeStats`).

Positions count the *eligible* messages (subscribed ones) the server reached. Malformed frames are
copies of a real message broken one of four ways, in turn (:func:`malformed_copy`): truncated JSON, a
missing field, a bad number, binary garbage; they are sent *in addition to* the real message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import orjson

from k2.sources.fake_exchange.captures import CaptureMessage

# Which field a "missing field" / "bad number" malformed copy of each message kind breaks.
_MISSING_FIELD = {
    "trade": "p",
    "aggTrade": "p",
    "bookTicker": "b",
    "match": "price",
    "last_match": "price",
    "ticker": "sequence",
}
_BAD_NUMBER = {
    "trade": "q",
    "aggTrade": "q",
    "bookTicker": "B",
    "match": "size",
    "last_match": "size",
    "ticker": "best_bid",
}


@dataclass
class Faults:
    """What goes wrong, and when. Positions count the *eligible* messages (subscribed ones) the server reached.

    >>> Faults(drop_every=100, max_drops=20).drop_every
    100
    """

    drop_every: int = 0
    drop_at: frozenset[int] = frozenset()
    max_drops: int | None = None
    drop_mode: Literal["close", "abort", "mixed"] = "mixed"
    skip_every: int = 0
    skip_at: frozenset[int] = frozenset()
    skip_count: int = 1
    stall_every: int = 0
    stall_at: frozenset[int] = frozenset()
    stall_seconds: float = 0.0
    max_stalls: int | None = None
    malformed_every: int = 0
    malformed_at: frozenset[int] = frozenset()
    reconnect_advance: int = 0
    rest_missing: tuple[tuple[int, int], ...] = ()
    rest_weight_limit: int = 6000
    rest_weight_window_seconds: float = 60.0
    rest_requests_per_second: float = 10.0
    control_limit_per_second: float = 5.0
    ping_interval: float | None = None
    ping_timeout: float = 10.0
    max_messages: int | None = None
    at_end: Literal["idle", "close"] = "idle"
    # Depth faults: an eligible message held back and sent right after the next one (a reordered pair);
    # which ``GET /api/v3/depth`` answers (0 = the first, per symbol) are stale: the capture's own REST
    # snapshot instead of the book at the replay cursor.
    reorder_at: frozenset[int] = frozenset()
    stale_depth_snapshots: frozenset[int] = frozenset()
    # (position, answers): the replay sends nothing from that eligible position on until that many REST
    # depth snapshots were answered in all (waiting at most ``hold_seconds``). However far a slow client
    # lags behind its socket, its book is then synced from a snapshot taken before that position, so a
    # test of what a fault does to a synced book cannot race the sync.
    hold_for_depth_snapshots: tuple[tuple[int, int], ...] = ()
    hold_seconds: float = 30.0

    def _due(self, every: int, at: frozenset[int], index: int) -> bool:
        return (every > 0 and index > 0 and index % every == 0) or index in at


@dataclass
class FakeStats:
    """What the fake exchange did (read by tests)."""

    connections: int = 0
    sent: int = 0
    sent_trade_ids: int = 0
    skipped: int = 0
    skipped_trade_ids: list[int] = field(default_factory=list)
    advanced: int = 0
    drops: int = 0
    stalls: int = 0
    malformed: list[str | bytes] = field(default_factory=list)
    rest_requests: int = 0
    rest_api_keys: list[str] = field(default_factory=list)  # X-MBX-APIKEY header values seen
    rest_429: int = 0
    rest_418: int = 0
    pings: int = 0
    pongs: int = 0
    ping_timeouts: int = 0
    control_messages: int = 0
    reordered: int = 0
    stale_depth_snapshots: int = 0
    control_violations: int = 0


def malformed_copy(msg: CaptureMessage, variant: int) -> str | bytes:
    """``msg`` broken the ``variant`` way (0 truncated, 1 missing field, 2 bad number, 3 binary garbage).

    A kind without the field to break is truncated instead.

    >>> malformed_copy(CaptureMessage(0, "matches", "BTC-USD", "match", '{"price":"1"}', 1, None), 3)
    b'\\x00\\xfe\\xff binary garbage'
    """
    if variant == 1 or variant == 2:
        obj = orjson.loads(msg.text)
        target = obj["data"] if isinstance(obj.get("data"), dict) else obj
        key = (_MISSING_FIELD if variant == 1 else _BAD_NUMBER).get(msg.kind)
        if key is None or key not in target:
            variant = 0
        elif variant == 1:
            del target[key]
        else:
            target[key] = "12,5 not a number"
        return orjson.dumps(obj).decode() if variant else msg.text[: max(1, len(msg.text) // 2)]
    if variant == 3:
        return b"\x00\xfe\xff binary garbage"
    return msg.text[: max(1, len(msg.text) // 2)]


def parse_ranges(text: str) -> tuple[tuple[int, int], ...]:
    """``"5-9,12-12"`` -> ``((5, 9), (12, 12))`` (for the CLI's ``--rest-missing``).

    >>> parse_ranges("5-9, 12")
    ((5, 9), (12, 12))
    """
    out: list[tuple[int, int]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise ValueError(f"expected id ranges like 5-9,12, found {part!r}") from None
        if first > last:
            raise ValueError(f"expected first <= last in {part!r}")
        out.append((first, last))
    return tuple(out)
