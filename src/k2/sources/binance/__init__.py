"""Binance: market presets, WebSocket/REST message -> wire-form parsing, the live feed adapter, capture files.

Streams used: ``<symbol>@trade`` (spot, Binance US) or ``<symbol>@aggTrade`` (USD-M futures, whose
public trade stream is the aggregate one) and ``<symbol>@bookTicker``, over *combined streams*
(``/stream?streams=a/b``; payloads arrive as ``{"stream": ..., "data": ...}``). Up to 200 streams go
in the URL; more are added with ``SUBSCRIBE`` messages sent at most ``control_rate`` per second
(Binance allows 5/s on spot, 10/s on futures, and disconnects clients that send more); one
connection carries at most 1024 streams, so :func:`feeds_for_symbols` shards larger symbol lists.

Mapping (all exact: decimals via :func:`k2.model.values.to_unscaled`, times in epoch microseconds):

* trade: ``t`` -> ``trade_id`` and ``source_sequence``; ``p``/``q`` -> price/quantity; ``T`` (ms) ->
  ``exchange_ts``; ``m`` true means the *buyer is the maker*, so the aggressor SOLD (``side=SELL``),
  else BUY; ``M`` true -> ``conditions=["BEST_MATCH"]``; other fields (``E``...) -> ``vendor`` as strings.
* aggTrade: ``a`` is the (contiguous) aggregate id used as ``trade_id``; ``f``/``l`` go to ``vendor``.
* bookTicker: ``u`` -> ``update_id``; ``b``/``B``/``a``/``A`` -> bid/ask price/size. Spot sends no event
  time, so ``exchange_ts`` is the receipt time and ``vendor={"ts_source": "receipt"}``; futures send
  ``T`` (transaction time), which is used.
* REST ``/api/v3/historicalTrades`` rows (backfill) map the same way (``isBuyerMaker`` -> side) and
  carry the published ``quoteQty`` and ``vendor={"backfill": "rest"}``.

Example:
    >>> row = parse_trade({"e": "trade", "E": 1723161255343, "s": "BTCUSDT", "t": 3735683259,
    ...     "p": "61837.63000000", "q": "0.02000000", "T": 1723161255342, "m": True, "M": True}, 1723161254087896)
    >>> row["price"], row["side"], row["exchange_ts"], row["conditions"], row["vendor"]
    (6183763000000, 'SELL', 1723161255342000, ['BEST_MATCH'], {'E': '1723161255343'})
"""

from k2.sources.binance.captures import iter_capture, iter_capture_lines, iter_capture_trades
from k2.sources.binance.feed import BinanceFeed, feeds_for_symbols
from k2.sources.binance.markets import (
    MARKETS,
    SPOT,
    URL_STREAM_LIMIT,
    US,
    USDM,
    BinanceMarket,
    market_for_url,
    normalise_symbols,
)
from k2.sources.binance.parse import (
    parse_agg_trade,
    parse_book_ticker,
    parse_frame,
    parse_payload,
    parse_rest_agg_trade,
    parse_rest_trade,
    parse_trade,
)

__all__ = [
    "MARKETS",
    "SPOT",
    "URL_STREAM_LIMIT",
    "US",
    "USDM",
    "BinanceFeed",
    "BinanceMarket",
    "feeds_for_symbols",
    "iter_capture",
    "iter_capture_lines",
    "iter_capture_trades",
    "market_for_url",
    "normalise_symbols",
    "parse_agg_trade",
    "parse_book_ticker",
    "parse_frame",
    "parse_payload",
    "parse_rest_agg_trade",
    "parse_rest_trade",
    "parse_trade",
]
