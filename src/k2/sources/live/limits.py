"""The venue's WebSocket limits: connection attempts per IP and control (subscribe) messages per connection.

Both are :class:`k2.pacing.TokenBucket` s sized by the adapter (:attr:`FeedAdapter.connect_rate`,
``connect_burst``, ``control_rate``). Binance allows 300 connection attempts per 5 minutes per IP and
5 incoming messages per second per connection (more: it closes the connection with 1008).

Hazard: the connection budget is per IP, so every feed of one venue in a process must share one bucket
(:class:`SharedConnectLimits`, as :func:`k2.sources.live.run_feeds` does); a bucket per feed would let
N feeds reconnect N times faster than the venue allows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from k2.pacing import TokenBucket
from k2.sources.live.adapter import ControlSender, FeedAdapter


def connect_bucket(adapter: FeedAdapter) -> TokenBucket:
    """A connection-attempt bucket at the venue's sustained rate and burst."""
    return TokenBucket(adapter.connect_rate, adapter.connect_burst)


class ConnectionLimits:
    """The two buckets of one runner: ``connect`` (may be shared by the venue's feeds) and ``control`` (its own)."""

    def __init__(self, adapter: FeedAdapter, connect: TokenBucket | None = None) -> None:
        self.connect = connect or connect_bucket(adapter)
        self.control = TokenBucket(adapter.control_rate, 1)

    def paced(self, send: Callable[[str], Awaitable[None]]) -> ControlSender:
        """``send`` paced to the venue's incoming-message limit (what :meth:`FeedAdapter.on_open` gets)."""

        async def paced_send(text: str) -> None:
            """Send one control message, paced to the venue's incoming-message limit."""
            await self.control.acquire()
            await send(text)

        return paced_send


class SharedConnectLimits:
    """One connection-attempt bucket per venue (``adapter.source``), for all of that venue's feeds."""

    def __init__(self) -> None:
        self._buckets: dict[str, TokenBucket] = {}

    def for_adapter(self, adapter: FeedAdapter) -> TokenBucket:
        """The bucket of ``adapter``'s venue (made at the first feed's rates)."""
        return self._buckets.setdefault(adapter.source, connect_bucket(adapter))
