"""What a venue plugs into the live runner: the :class:`FeedAdapter` contract, its :class:`Event`, its errors.

A venue module (:mod:`k2.sources.binance`, :mod:`k2.sources.coinbase`) subclasses :class:`FeedAdapter`:
where to connect, what to send after connecting, how one frame becomes an :class:`Event` and how to
fetch missing trades from REST. Frames it cannot read raise :class:`MalformedMessage` (they go to the
DLQ, the feed goes on); a refusal no reconnect can fix raises :class:`FatalSourceError`.
:class:`FeedStats` are the counters a runner returns.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from k2.model import DataType
from k2.sources.live.rest import RestClient, RestRefused

Frame = str | bytes
EventKind = Literal["trade", "quote", "depth", "control", "reconnect", "error"]
ControlSender = Callable[[str], Awaitable[None]]


class MalformedMessage(ValueError):
    """A frame that cannot become a canonical record; ``reason`` is a short code for metrics and the DLQ.

    ``data_type``/``symbol`` say which topic's DLQ it belongs to, when the frame reveals it.

    >>> MalformedMessage("bad_number", "expected a decimal, found 'abc'").reason
    'bad_number'
    """

    def __init__(
        self, reason: str, detail: str, data_type: DataType | None = None, symbol: str | None = None
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.data_type = data_type
        self.symbol = symbol


class FatalSourceError(RuntimeError):
    """The venue refused what we asked for (e.g. an unknown product): reconnecting cannot help."""


@dataclass(slots=True)
class Event:
    """One parsed frame: a trade or quote (``row`` in wire form, ``ident`` its trade/update id), or control."""

    kind: EventKind
    symbol: str = ""
    ident: int = 0
    row: dict[str, Any] | None = None
    detail: str = ""


def now_us() -> int:
    """Wall-clock time in epoch microseconds (what ``receipt_ts`` holds).

    >>> now_us() > 1_700_000_000_000_000
    True
    """
    return time.time_ns() // 1000


def normalise_names(names: Iterable[str], pattern: re.Pattern[str], expected: str, noun: str) -> list[str]:
    """Upper-cased, de-duplicated venue names in order; ValueError naming ``expected`` for a bad one.

    The shared rule behind each venue's symbol list (Binance symbols, Coinbase product ids).

    >>> normalise_names(["btc-usd", "BTC-USD"], re.compile(r"^[A-Z]+-[A-Z]+$"), "BTC-USD", "product")
    ['BTC-USD']
    """
    out: list[str] = []
    for raw in names:
        name = raw.strip().upper()
        if not name:
            continue
        if not pattern.match(name):
            raise ValueError(f"expected {expected}, found {raw!r}")
        if name not in out:
            out.append(name)
    if not out:
        raise ValueError(f"expected at least one {noun}, found none")
    return out


class FeedAdapter(ABC):
    """What a venue contributes to :class:`LiveRunner`: URL, subscription, parsing, REST backfill.

    Subclasses set ``source`` (metrics label), ``exchange`` and ``asset_class`` (topic and rows).
    """

    source: str
    exchange: str
    asset_class: str
    #: outgoing control messages per second the venue allows (subscribe requests)
    control_rate: float = 5.0
    #: connection attempts per second (sustained) and burst, per IP
    connect_rate: float = 0.9
    connect_burst: float = 30.0

    @abstractmethod
    def url(self) -> str:
        """The WebSocket URL to connect to."""

    async def on_open(self, send: ControlSender) -> None:  # noqa: B027 - optional hook
        """Send subscriptions after connecting (``send`` is rate limited to ``control_rate``)."""

    @abstractmethod
    def parse(self, frame: Frame, receipt_us: int) -> Event | None:
        """One frame -> an :class:`Event` (or None to ignore); raise :class:`MalformedMessage` if broken."""

    @abstractmethod
    def rest_client(self) -> RestClient | None:
        """A REST client for backfill with the venue's limits (None: no backfill)."""

    async def fetch_trades(
        self, rest: RestClient, symbol: str, first: int, last: int | None
    ) -> list[dict[str, Any]]:
        """Wire-form trades with ids in ``first..last`` (``last=None``: up to the newest) from REST.

        Ids the API does not have are simply absent. Raise :class:`RestUnavailable` for transient
        failures and :class:`RestRefused` when the API refuses the request.
        """
        raise RestRefused(f"{type(self).__name__} has no REST backfill")

    def on_depth(self, event: Event) -> Any:
        """Apply a ``depth`` event to the adapter's book sync; returns an object with ``rows`` (BOOK_DELTA
        wire-form rows to produce), ``gaps`` ((first, last, ts before, ts after) lost id ranges) and
        ``needs_snapshot`` (fetch one with :meth:`fetch_depth_snapshot`). Venues without depth never emit it."""
        raise NotImplementedError(f"{type(self).__name__} has no depth stream")

    async def fetch_depth_snapshot(self, rest: RestClient, symbol: str) -> Any:
        """Fetch a REST depth snapshot and apply it to the sync; returns the same kind of object as :meth:`on_depth`."""
        raise RestRefused(f"{type(self).__name__} has no REST depth snapshot")


@dataclass
class FeedStats:
    """Counters of one runner (also exported as Prometheus metrics)."""

    connections: int = 0
    reconnects: dict[str, int] = field(default_factory=dict)
    trades: int = 0
    quotes: int = 0
    duplicates: int = 0
    backfilled_trades: int = 0
    malformed: int = 0
    venue_errors: int = 0
    gaps: dict[str, int] = field(default_factory=dict)  # outcome -> count (backfilled, lost, open)

    @property
    def total_reconnects(self) -> int:
        """Reconnects and failed connection attempts, all reasons.

        >>> FeedStats(reconnects={"stall": 1, "closed": 2}).total_reconnects
        3
        """
        return sum(self.reconnects.values())
