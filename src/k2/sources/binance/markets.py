"""Binance markets (spot, Binance US, USD-M futures): where each is, its K2 names and published limits."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from k2.sources.live import (
    normalise_names,
)


@dataclass(frozen=True)
class BinanceMarket:
    """One Binance market: where it is, what it is called in K2, and its published limits."""

    name: str
    exchange: str
    asset_class: str
    ws_url: str
    rest_url: str
    trade_stream: str  # "trade" or "aggTrade"
    trades_path: str  # REST endpoint for backfill by id
    trades_weight: int  # request weight of one backfill call
    weight_limit: int  # request weight per minute per IP
    control_rate: float  # incoming messages per second the server accepts from a client
    max_streams: int = 1024


SPOT = BinanceMarket(
    "spot",
    "binance",
    "crypto",
    "wss://stream.binance.com:9443",
    "https://api.binance.com",
    "trade",
    "/api/v3/historicalTrades",
    25,
    6000,
    5.0,
)
US = BinanceMarket(
    "us",
    "binance-us",
    "crypto",
    "wss://stream.binance.us:9443",
    "https://api.binance.us",
    "trade",
    "/api/v3/historicalTrades",
    25,
    1200,
    5.0,
)
USDM = BinanceMarket(
    "usdm",
    "binance-futures",
    "futures",
    "wss://fstream.binance.com",
    "https://fapi.binance.com",
    "aggTrade",
    "/fapi/v1/aggTrades",
    20,
    2400,
    10.0,
)
MARKETS: dict[str, BinanceMarket] = {m.name: m for m in (SPOT, US, USDM)}
URL_STREAM_LIMIT = 200
_SYMBOL = re.compile(r"^[A-Z0-9]{2,30}$")


def market_for_url(url: str) -> BinanceMarket:
    """The market a WebSocket or REST URL belongs to (spot for anything unrecognised, e.g. a local fake).

    >>> market_for_url("wss://fstream.binance.com").name, market_for_url("wss://stream.binance.us:9443").name
    ('usdm', 'us')
    """
    host = re.sub(r"^[a-z]+://", "", url.lower()).split("/", 1)[0]
    if host.startswith(("fstream.", "fapi.")):
        return USDM
    if host.endswith("binance.us") or ".binance.us:" in host:
        return US
    return SPOT


def normalise_symbols(symbols: Iterable[str]) -> list[str]:
    """Upper-cased, de-duplicated symbols in order; raises ValueError on anything that is not a Binance symbol.

    >>> normalise_symbols(["btcusdt", " ETHUSDT", "BTCUSDT"])
    ['BTCUSDT', 'ETHUSDT']
    """
    return normalise_names(symbols, _SYMBOL, "a Binance symbol like BTCUSDT", "symbol")
