"""Live feeds: one WebSocket connection per venue feed at a time, kept alive, deduplicated, gap-free.

A venue adapter (:class:`FeedAdapter`: :class:`k2.sources.binance.BinanceFeed`,
:class:`k2.sources.coinbase.CoinbaseFeed`) says where to connect, what to send after connecting and
how to turn one frame into an :class:`Event` (wire-form TRADE/QUOTE row). :class:`LiveRunner` does the
rest, the same way for every venue. One room per concern:

* :mod:`~k2.sources.live.adapter` - the venue contract (:class:`FeedAdapter`, :class:`Event`,
  :class:`MalformedMessage`, :class:`FatalSourceError`) and the runner's counters (:class:`FeedStats`).
* :mod:`~k2.sources.live.connection` - connect with TLS verified, read (pongs never starve), reconnect
  with exponential backoff and equal jitter, stall detection (``source_stall_seconds``) and the
  proactive reconnect after ``source_max_connection_seconds`` (Binance cuts at 24 h: the next
  connection opens *first*, the two overlap, dedup removes the overlap).
* :mod:`~k2.sources.live.limits` - connection attempts per IP (Binance: 300 per 5 minutes) and
  subscribe messages per second, as token buckets.
* :mod:`~k2.sources.live.rest` - :class:`RestClient`: REST within the venue's limits (used-weight
  headers, request-rate bucket, ``Retry-After`` on 429/418 for *every* request).
* :mod:`~k2.sources.live.backfill` - a trade id above ``last + 1`` is a gap (``source="live"``, or
  ``"reconnect"`` for the first trade after a reconnect); the missing ids are fetched from REST
  *before* the trade that revealed the gap is produced, and the gap goes to the ledger
  (:mod:`k2.sources.gaps`) as ``backfilled``, ``lost`` (with the exact ranges) or ``open`` (API
  unavailable: retried later). After a reconnect, a symbol that has not traded within
  ``min(5 s, stall/2)`` is caught up from REST.
* :mod:`~k2.sources.live.runner` - :class:`LiveRunner`: routing, dedup, DLQ for malformed frames
  (they never stop the feed), housekeeping. Every message keeps its receipt time (``receipt_ts``).
* :mod:`~k2.sources.live.feeds` - :func:`run_feeds`: several feeds, one producer, one ledger.

Example (needs a broker, registry and the venue or the fake exchange)::

    feed = BinanceFeed(["BTCUSDT"], ws_url="ws://127.0.0.1:9000", rest_url="http://127.0.0.1:9000")
    stats = asyncio.run(run_feeds(settings, [feed]))
"""

from k2.sources.live.adapter import (
    ControlSender,
    Event,
    EventKind,
    FatalSourceError,
    FeedAdapter,
    FeedStats,
    Frame,
    MalformedMessage,
    normalise_names,
    now_us,
)
from k2.sources.live.feeds import run_feeds
from k2.sources.live.rest import RestClient, RestRefused, RestUnavailable, retry_after_seconds
from k2.sources.live.runner import LiveRunner
from k2.sources.live.tls import tls_context

__all__ = [
    "ControlSender",
    "Event",
    "EventKind",
    "FatalSourceError",
    "FeedAdapter",
    "FeedStats",
    "Frame",
    "LiveRunner",
    "MalformedMessage",
    "RestClient",
    "RestRefused",
    "RestUnavailable",
    "normalise_names",
    "now_us",
    "retry_after_seconds",
    "run_feeds",
    "tls_context",
]
