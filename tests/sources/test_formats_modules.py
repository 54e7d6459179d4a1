"""The vendor file formats live one vendor a module (issue 13 item 2) and the old import paths still work."""

from __future__ import annotations

import importlib

from k2.sources.files import FORMATS, ImportOptions

OLD_NAMES = [
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


def test_each_format_lives_in_its_vendor_module_and_formats_reexports_the_public_names() -> None:
    formats = importlib.import_module("k2.sources.files.formats")
    missing = [name for name in OLD_NAMES if not hasattr(formats, name)]
    assert not missing, f"expected k2.sources.files.formats to export {missing}, found them missing"
    owners = {name: type(fmt).__module__ for name, fmt in FORMATS.items()}
    assert owners == {
        "binance-trades": "k2.sources.files.binance",
        "binance-aggtrades": "k2.sources.files.binance",
        "binance-klines": "k2.sources.files.binance",
        "tardis-trades": "k2.sources.files.tardis",
        "tardis-quotes": "k2.sources.files.tardis",
        "asx-trades": "k2.sources.files.asx",
        "asx-quotes": "k2.sources.files.asx",
    }
    assert ImportOptions.__module__ == "k2.sources.files.layout"
