"""A local fake exchange: real captures served as a Binance or Coinbase WebSocket feed plus their REST trade APIs.

Made for tests and demos without internet. One server (``websockets``; REST is answered in its
``process_request`` hook, so one port serves both) replays a capture in order:

* **binance** mode: the spot captures (``<local_receive_ns> <json>`` lines) as a combined stream at
  ``/stream?streams=btcusdt@trade/btcusdt@bookTicker`` (only subscribed streams are sent; the REST
  depth snapshot line is never sent), ``SUBSCRIBE``/``UNSUBSCRIBE`` messages (more than
  ``control_limit_per_second`` client messages in a second -> close 1008, as Binance does), and
  ``GET /api/v3/historicalTrades`` / ``/api/v3/trades`` from the capture's trades with Binance's
  request-weight accounting (``X-MBX-USED-WEIGHT-<n><unit>`` header, 429 + ``Retry-After`` over the
  limit, 418 for a client that keeps asking during ``Retry-After``), and ``GET /api/v3/exchangeInfo``
  (``symbol=``/``symbols=[...]``) from an exchange-info document (default: the test fixture).
* **coinbase** mode: the cryptofeed raw capture with the subscribe handshake (``subscriptions``
  reply, ``error`` + close for unknown products, ``last_match`` per product on every subscription)
  and ``GET /products/<id>/trades`` (newest first, ``after`` cursor, ``CB-AFTER`` header, 10 req/s).

The replay position is **one cursor for the server**, not per connection: a client that reconnects
resumes where the previous connection stopped, moved on by ``reconnect_advance`` messages (the
messages that "happened" while it was away, so it must backfill them from REST; negative values
re-send messages to exercise dedup). A newer connection takes the stream over from an older one. The
REST API only serves trades the cursor has passed (no trades from the future).

Faults (:class:`Faults`): drop the connection every N messages or at given positions (clean close
or TCP abort), skip messages (the client sees id jumps), stall for S seconds, inject malformed frames
(truncated JSON, a missing field, a bad number, binary garbage) *in addition to* the real messages,
make some trade ids unavailable from REST, ping the client and count its pongs.

The package, one room per concern: :mod:`~k2.sources.fake_exchange.captures` (loading captures),
:mod:`~k2.sources.fake_exchange.faults` (:class:`Faults`, :class:`FakeStats`),
:mod:`~k2.sources.fake_exchange.state` (the cursor and REST trade index),
:mod:`~k2.sources.fake_exchange.replay` (a WebSocket session and its faults),
:mod:`~k2.sources.fake_exchange.binance_venue` / :mod:`~k2.sources.fake_exchange.coinbase_venue`
(each venue's protocol and REST API), :mod:`~k2.sources.fake_exchange.server` (:class:`FakeExchange`).
It ships in the wheel (``k2 fake-exchange``, ``k2 demo``), with its default captures as package data.

Example::

    with FakeExchange("binance", faults=Faults(drop_every=2000, reconnect_advance=40)) as fake:
        feed = BinanceFeed(["BTCUSDT"], ws_url=fake.ws_url, rest_url=fake.rest_url)
"""

from k2.sources.fake_exchange.captures import (
    DEFAULT_BINANCE_CAPTURES,
    DEFAULT_EXCHANGE_INFO,
    CaptureMessage,
    load_binance,
    load_binance_depth_snapshots,
    load_coinbase,
)
from k2.sources.fake_exchange.faults import FakeStats, Faults, parse_ranges
from k2.sources.fake_exchange.server import FakeExchange, Mode

__all__ = [
    "DEFAULT_BINANCE_CAPTURES",
    "DEFAULT_EXCHANGE_INFO",
    "CaptureMessage",
    "FakeExchange",
    "FakeStats",
    "Faults",
    "Mode",
    "load_binance",
    "load_binance_depth_snapshots",
    "load_coinbase",
    "parse_ranges",
]
