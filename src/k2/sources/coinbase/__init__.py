"""Coinbase Exchange: WebSocket ``matches`` and ``ticker`` -> wire-form TRADE/QUOTE, the live feed, captures.

Connection: ``wss://ws-feed.exchange.coinbase.com``; after connecting the client sends one
``{"type": "subscribe", "product_ids": [...], "channels": ["matches", "ticker", "heartbeat"]}`` and
the server confirms with a ``subscriptions`` message. ``heartbeat`` (one per product per second) keeps
quiet products from looking like a stalled connection. An ``error`` answer to the subscription (e.g.
an unknown product) is fatal: reconnecting would not change it.

Mapping (exact; times parse to the microsecond, the published text is kept in ``vendor["time"]``
when it has sub-microsecond digits):

* ``match`` / ``last_match`` -> TRADE: ``trade_id`` (contiguous per product: gaps are detected and
  backfilled from ``GET /products/<id>/trades``), ``price``, ``size`` -> quantity, ``time`` ->
  ``exchange_ts``, ``sequence`` -> ``source_sequence``. **Side**: Coinbase's ``side`` is the *maker*
  order's side, so the aggressor is the opposite: ``side="sell"`` (a resting sell was hit) -> ``BUY``,
  ``side="buy"`` -> ``SELL``. ``last_match`` (the last trade before we subscribed, sent on every
  (re)subscription) is a trade too; source dedup drops it when it was already produced.
* ``ticker`` -> QUOTE: ``sequence`` -> ``update_id``, ``best_bid``/``best_ask`` -> prices,
  ``best_bid_size``/``best_ask_size`` -> sizes when present (the 2021 API did not send them), ``time``
  -> ``exchange_ts``; the other fields (last price, 24 h stats) go to ``vendor``.
* ``level2`` (subscribed unless ``CoinbaseFeed(depth=False)`` / ``k2 stream coinbase --no-depth``):
  ``snapshot`` and ``l2update`` -> BOOK_DELTA rows through :mod:`k2.sources.coinbase_depth` (the parser
  the capture tests use); Coinbase sends a fresh ``snapshot`` on every (re)subscription, which restarts
  the product's book, so a reconnect needs no REST call. An ``l2update`` before any snapshot of its
  product is dead-lettered (``no_snapshot``).
* Canonical instrument: Coinbase product ids already are ``BASE-QUOTE`` (``BTC-USD``); the product id
  is also the ``symbol``.

Example:
    >>> row = parse_match({"type": "match", "trade_id": 1568268, "side": "sell", "size": "450", "price": "0.791",
    ...     "product_id": "SKL-USD", "sequence": 201390075, "time": "2021-04-17T16:43:37.121358Z"}, 0)
    >>> row["side"], row["price"], row["exchange_ts"], row["source_sequence"]
    ('BUY', 79100000, 1618677817121358, 201390075)
"""

from k2.sources.coinbase.captures import iter_capture, iter_capture_lines
from k2.sources.coinbase.feed import DEFAULT_CHANNELS, DEPTH_CHANNEL, CoinbaseFeed
from k2.sources.coinbase.parse import (
    ASSET_CLASS,
    EXCHANGE,
    normalise_products,
    parse_frame,
    parse_match,
    parse_message,
    parse_rest_trade,
    parse_ticker,
    parse_time,
)

__all__ = [
    "ASSET_CLASS",
    "DEFAULT_CHANNELS",
    "DEPTH_CHANNEL",
    "EXCHANGE",
    "CoinbaseFeed",
    "iter_capture",
    "iter_capture_lines",
    "normalise_products",
    "parse_frame",
    "parse_match",
    "parse_message",
    "parse_rest_trade",
    "parse_ticker",
    "parse_time",
]
