"""The registry of vendor file formats (``FORMATS``: ``k2 import <name>`` -> its :class:`FileFormat`).

Each vendor's layouts and their mapping to K2's canonical records are documented in their own module:
:mod:`~k2.sources.files.binance` (data.binance.vision trades, aggTrades, klines),
:mod:`~k2.sources.files.tardis` (Tardis.dev trades and quotes CSV, Tardis exchange/symbol naming),
:mod:`~k2.sources.files.asx` (the 2014 ASX sample, Sydney wall-clock times); what they share (options,
layout, the :class:`FileFormat` interface, synthetic ids) is :mod:`~k2.sources.files.layout`. The
names below are re-exported so ``from k2.sources.files.formats import ...`` keeps working.

Example:
    >>> sorted(FORMATS)[:3]
    ['asx-quotes', 'asx-trades', 'binance-aggtrades']
    >>> parse_binance_name("BTCUSDT-1m-2024-09-21.zip")
    ('BTCUSDT', 'klines', '1m')
"""

from __future__ import annotations

from k2.sources.files.asx import (
    ASX_QUOTES,
    ASX_TRADES,
    SYDNEY,
    AsxQuotes,
    AsxTrades,
    asx_local_micros,
    sydney_to_utc_micros,
)
from k2.sources.files.binance import (
    AGG_TRADES,
    KLINES,
    SPOT_TRADES,
    USDM_TRADES,
    BinanceAggTrades,
    BinanceKlines,
    BinanceTrades,
    parse_binance_name,
)
from k2.sources.files.layout import FileFormat, ImportOptions, Layout
from k2.sources.files.tardis import (
    TARDIS_QUOTES,
    TARDIS_TRADES,
    TardisQuotes,
    TardisTrades,
    tardis_asset_class,
    tardis_instrument,
)

__all__ = [
    "AGG_TRADES",
    "ASX_QUOTES",
    "ASX_TRADES",
    "FORMATS",
    "KLINES",
    "SPOT_TRADES",
    "SYDNEY",
    "TARDIS_QUOTES",
    "TARDIS_TRADES",
    "USDM_TRADES",
    "AsxQuotes",
    "AsxTrades",
    "BinanceAggTrades",
    "BinanceKlines",
    "BinanceTrades",
    "FileFormat",
    "ImportOptions",
    "Layout",
    "TardisQuotes",
    "TardisTrades",
    "asx_local_micros",
    "parse_binance_name",
    "sydney_to_utc_micros",
    "tardis_asset_class",
    "tardis_instrument",
]

FORMATS: dict[str, FileFormat] = {
    f.name: f
    for f in (
        BinanceTrades(),
        BinanceAggTrades(),
        BinanceKlines(),
        TardisTrades(),
        TardisQuotes(),
        AsxTrades(),
        AsxQuotes(),
    )
}
