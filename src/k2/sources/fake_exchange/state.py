"""The replay state every part of the fake exchange shares: the messages, one cursor, the REST trade index.

The replay position is **one cursor for the server**, not per connection: a client that reconnects
resumes where the previous connection stopped. The REST side only serves trades the cursor has passed
(:meth:`ReplayState._happened`: no trades from the future), and depth/level2 snapshots are the book at
the cursor.

Hazard: the state is mutated from the server's event loop only (WebSocket sessions and REST requests
run on the same loop); tests read ``stats``/``position`` from other threads, which is fine for counters
but not for anything that needs a consistent view.
"""

from __future__ import annotations

import bisect
from collections import deque
from typing import Any

from k2.sources.fake_exchange.captures import CaptureMessage
from k2.sources.fake_exchange.faults import FakeStats, Faults


class ReplayState:
    """Messages, faults, the cursor and the per-symbol trade index (the base of every fake-exchange part)."""

    def __init__(
        self,
        messages: list[CaptureMessage],
        faults: Faults,
        *,
        speed: float,
        depth_snapshots: dict[str, dict[str, Any]] | None,
        exchange_info: dict[str, Any] | None,
    ) -> None:
        self.messages = messages
        self.faults = faults
        self.speed = speed
        self.exchange_info = exchange_info
        self.end = len(messages) if faults.max_messages is None else min(len(messages), faults.max_messages)
        self.stats = FakeStats()
        self.position = 0
        self.eligible_seen = 0
        self._generation = 0
        self._sessions = 0
        self._skip_left = 0
        self._stalled: set[int] = set()
        self._held: set[int] = set()  # positions of Faults.hold_for_depth_snapshots already held
        self._closing = False
        # REST depth: symbol -> [the capture's snapshot, book (price -> size per side), next message index]
        self._depth: dict[str, list[Any]] = {
            symbol: [snap, None, 0] for symbol, snap in (depth_snapshots or {}).items()
        }
        self._depth_answers: dict[str, int] = {}  # symbol -> REST depth answers given
        self._level2: dict[str, list[Any]] = {}  # product -> [book at the cursor, next message index]
        self._trades = self._index_trades()
        self.products = sorted({m.symbol for m in messages if m.symbol})
        self._weight_window = -1
        self._used_weight = 0
        self._banned_until = 0.0
        self._rest_times: deque[float] = deque()

    def _index_trades(self) -> dict[str, tuple[list[int], list[int], list[dict[str, Any]]]]:
        """REST index: symbol -> (trade ids, capture positions, payloads), in capture order."""
        trades: dict[str, tuple[list[int], list[int], list[dict[str, Any]]]] = {}
        for pos, msg in enumerate(self.messages[: self.end]):
            if msg.trade_id is not None and msg.payload is not None:
                ids, positions, payloads = trades.setdefault(msg.symbol, ([], [], []))
                if ids and msg.trade_id <= ids[-1]:
                    continue  # a replayed last_match
                ids.append(msg.trade_id)
                positions.append(pos)
                payloads.append(msg.payload)
        return trades

    def trade_ids(self, symbol: str) -> list[int]:
        """Every trade id of ``symbol`` in the served part of the capture."""
        return list(self._trades.get(symbol, ([], [], []))[0])

    def _happened(self, symbol: str) -> int:
        """How many of the symbol's trades the replay cursor has passed."""
        _, positions, _ = self._trades[symbol]
        return bisect.bisect_left(positions, self.position)

    def _rest_missing(self, ident: int) -> bool:
        return any(a <= ident <= b for a, b in self.faults.rest_missing)
