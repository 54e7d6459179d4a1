"""Reference data: Binance instruments (``exchangeInfo``) into ``reference.instruments``, and unknown symbols.

``GET /api/v3/exchangeInfo`` (spot, Binance US; ``/fapi/v1/exchangeInfo`` on USD-M futures) lists every
symbol with ``baseAsset``, ``quoteAsset``, ``status`` and ``filters``. One INSTRUMENT row per symbol:

* ``instrument``: canonical ``BASE-QUOTE`` from the venue's own ``baseAsset``/``quoteAsset`` (not guessed);
* ``tick_size`` = ``PRICE_FILTER.tickSize``, ``lot_size`` = ``LOT_SIZE.stepSize`` (exact decimals);
* ``active`` = ``status == "TRADING"``; ``currency`` = the quote asset; futures ``onboardDate`` ->
  ``listing_date``; the status, precisions and the other limits (min/max price and quantity, minimum
  notional, contract type) are kept as strings in ``vendor``.

Loading **replaces** the rows of the same ``(exchange, symbol)`` in one Iceberg commit (an overwrite with
a filter: delete + append in one transaction), so loading twice leaves one row per symbol and rows of
other exchanges (ASX reference files, loaded by ``k2 import``) are untouched.

:func:`unknown_symbols` reports ``(exchange, symbol)`` pairs that have trades in ``market_data.trades``
but no row in ``reference.instruments`` (read column-wise, batch by batch, so a large trades table is
never held in memory).

Example:
    >>> doc = {"symbols": [{"symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT",
    ...     "filters": [{"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000",
    ...     "tickSize": "0.01000000"}, {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000",
    ...     "stepSize": "0.00001000"}]}]}
    >>> row = parse_exchange_info(doc, updated_us=0)[0]
    >>> row["instrument"], row["tick_size"], row["lot_size"], row["active"]
    ('BTC-USDT', 1000000, 1000, True)
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg import expressions
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.lake.summary import REFERENCE_KEY, commit_summary
from k2.lake.writer import conform, sort_for_table
from k2.model import INSTRUMENT
from k2.model.arrow import records_to_arrow
from k2.model.values import canonical_instrument, micros_to_datetime, now_micros, to_unscaled
from k2.pacing import Backoff, retrying
from k2.sources.binance import SPOT, BinanceMarket, market_for_url, normalise_symbols
from k2.sources.live import RestClient

# pyiceberg's expression classes are pydantic models whose positional constructors mypy cannot see.
_X: Any = expressions

#: exchangeInfo endpoint and request weight per market kind (Binance's published weights).
_EXCHANGE_INFO = {"trade": ("/api/v3/exchangeInfo", 20), "aggTrade": ("/fapi/v1/exchangeInfo", 1)}
_VENDOR_KEYS = (
    "baseAssetPrecision",
    "quoteAssetPrecision",
    "quotePrecision",
    "pricePrecision",
    "quantityPrecision",
    "contractType",
    "marginAsset",
    "pair",
)


class ReferenceDataError(ValueError):
    """An exchange-info document that does not have the documented layout."""


def exchange_info_path(market: BinanceMarket) -> tuple[str, int]:
    """``(path, request weight)`` of the market's exchange-info endpoint.

    >>> from k2.sources.binance import USDM
    >>> exchange_info_path(SPOT), exchange_info_path(USDM)
    (('/api/v3/exchangeInfo', 20), ('/fapi/v1/exchangeInfo', 1))
    """
    return _EXCHANGE_INFO[market.trade_stream]


def _filter(filters: list[Any], kind: str) -> Mapping[str, Any]:
    for item in filters:
        if isinstance(item, dict) and item.get("filterType") == kind:
            return item
    return {}


def _decimal(value: Any, what: str, symbol: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ReferenceDataError(f"{symbol}: expected {what} as a decimal string, found {value!r}")
    try:
        return to_unscaled(value)
    except ValueError as exc:
        raise ReferenceDataError(f"{symbol}: {what}: {exc}") from None


def parse_symbol(
    item: Mapping[str, Any], market: BinanceMarket = SPOT, updated_us: int | None = None
) -> dict[str, Any]:
    """One ``symbols[]`` entry of exchangeInfo -> a wire-form INSTRUMENT row (raises :class:`ReferenceDataError`).

    >>> parse_symbol({"symbol": "BLZETH", "status": "BREAK", "baseAsset": "BLZ", "quoteAsset": "ETH", "filters": []},
    ...     updated_us=0)["active"]
    False
    """
    symbol = item.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise ReferenceDataError(
            f"expected a 'symbol' string in an exchangeInfo entry, found {str(dict(item))[:200]}"
        )
    missing = [k for k in ("status", "baseAsset", "quoteAsset") if not isinstance(item.get(k), str)]
    if missing:
        raise ReferenceDataError(
            f"{symbol}: expected string fields {missing} in the exchangeInfo entry, found keys {sorted(item)}"
        )
    filters = item.get("filters", [])
    if not isinstance(filters, list):
        raise ReferenceDataError(f"{symbol}: expected 'filters' as a list, found {filters!r}")
    base, quote, status = item["baseAsset"], item["quoteAsset"], item["status"]
    price_filter, lot_filter = _filter(filters, "PRICE_FILTER"), _filter(filters, "LOT_SIZE")
    notional = _filter(filters, "NOTIONAL") or _filter(filters, "MIN_NOTIONAL")
    vendor = {"status": status}
    for key in _VENDOR_KEYS:
        if key in item:
            vendor[key] = str(item[key])
    for source, key in (
        (price_filter, "minPrice"),
        (price_filter, "maxPrice"),
        (lot_filter, "minQty"),
        (lot_filter, "maxQty"),
    ):
        if key in source:
            vendor[key] = str(source[key])
    for key in ("minNotional", "notional"):
        if key in notional:
            vendor["minNotional"] = str(notional[key])
    listing: date | None = None
    onboard = item.get("onboardDate")
    if type(onboard) is int and onboard > 0:
        listing = micros_to_datetime(onboard * 1000).date()
    return {
        "exchange": market.exchange,
        "symbol": symbol,
        "instrument": canonical_instrument(symbol, base, quote),
        "asset_class": market.asset_class,
        "base": base,
        "quote": quote,
        "isin": None,
        "currency": quote,
        "tick_size": _decimal(price_filter.get("tickSize"), "PRICE_FILTER.tickSize", symbol),
        "lot_size": _decimal(lot_filter.get("stepSize"), "LOT_SIZE.stepSize", symbol),
        "listing_date": listing,
        "delisting_date": None,
        "active": status == "TRADING",
        "name": f"{base}/{quote}",
        "updated_ts": now_micros() if updated_us is None else updated_us,
        "vendor": vendor,
    }


def parse_exchange_info(
    doc: Any, market: BinanceMarket = SPOT, updated_us: int | None = None
) -> list[dict[str, Any]]:
    """Every symbol of an exchangeInfo document as wire-form INSTRUMENT rows (see the module docstring)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("symbols"), list):
        raise ReferenceDataError(
            f"expected an exchangeInfo object with a 'symbols' list, found {str(doc)[:200]!r}"
        )
    stamp = now_micros() if updated_us is None else updated_us
    rows = [parse_symbol(item, market, stamp) for item in doc["symbols"] if isinstance(item, dict)]
    if len(rows) != len(doc["symbols"]):
        raise ReferenceDataError(
            f"expected every 'symbols' entry to be an object, found {len(doc['symbols']) - len(rows)} that are not"
        )
    return rows


async def _fetch(rest_url: str, market: BinanceMarket, symbols: list[str] | None, verify: Any) -> Any:
    path, weight = exchange_info_path(market)
    params: dict[str, str] = {}
    if symbols:
        # Binance takes several symbols as a JSON array literal.
        params["symbols"] = orjson.dumps(symbols).decode()
    rest = RestClient(rest_url, weight_limit=market.weight_limit, verify=verify)
    try:
        data, _ = await rest.get_json(path, params, weight=weight)
    finally:
        await rest.aclose()
    return data


def fetch_exchange_info(
    rest_url: str,
    market: BinanceMarket | None = None,
    symbols: Iterable[str] | None = None,
    verify: Any = True,
) -> Any:
    """GET the market's exchangeInfo (TLS verified, Retry-After and request weight honoured).

    Example::

        doc = fetch_exchange_info("https://api.binance.com", symbols=["BTCUSDT"])
    """
    chosen = market or market_for_url(rest_url)
    wanted = normalise_symbols(symbols) if symbols is not None else None
    return asyncio.run(_fetch(rest_url, chosen, wanted, verify))


def write_instruments(table: Table, rows: list[dict[str, Any]], attempts: int = 10) -> int:
    """Replace the rows of the same ``(exchange, symbol)`` by ``rows`` in one commit; returns rows written.

    Example (needs a catalog)::

        write_instruments(tables["instruments"], parse_exchange_info(doc))
    """
    if not rows:
        return 0
    data = sort_for_table(conform(records_to_arrow(INSTRUMENT, rows), "instruments"), "instruments")
    by_exchange: dict[str, list[str]] = {}
    for row in rows:
        by_exchange.setdefault(row["exchange"], []).append(row["symbol"])
    duplicates = [s for ex, syms in by_exchange.items() for s in {x for x in syms if syms.count(x) > 1}]
    if duplicates:
        raise ReferenceDataError(
            f"expected each symbol once per load, found duplicates {sorted(duplicates)[:10]}"
        )
    if len(by_exchange) != 1:
        # One overwrite per exchange would be several commits; callers load one venue at a time.
        raise ReferenceDataError(f"expected the rows of one exchange per load, found {sorted(by_exchange)}")
    exchange, symbols = next(iter(by_exchange.items()))
    condition = _X.And(_X.EqualTo("exchange", exchange), _X.In("symbol", symbols))
    for attempt in retrying(CommitFailedException, attempts=attempts, backoff=Backoff(0.05, 1.0)):
        with attempt:
            table.refresh()
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Delete operation did not match any records")
                table.overwrite(
                    data,
                    overwrite_filter=condition,
                    snapshot_properties=commit_summary(
                        table.current_snapshot(), "k2-reference", {REFERENCE_KEY: exchange}
                    ),
                )
            return data.num_rows
    return 0  # pragma: no cover - the loop returns or raises


@dataclass
class ReferenceLoad:
    """What one ``k2 reference binance`` did."""

    exchange: str
    symbols: int
    active: int
    written: int


def load_binance_instruments(
    settings: Settings,
    symbols: Iterable[str] | None = None,
    market: BinanceMarket | None = None,
    rest_url: str | None = None,
    verify: Any = True,
) -> ReferenceLoad:
    """Fetch Binance's exchangeInfo and replace those instruments in ``reference.instruments``.

    URL: ``rest_url``, else the market preset, else ``binance_rest_url`` (market inferred from it).

    Example (needs a catalog and the venue or the fake exchange)::

        load_binance_instruments(settings, ["BTCUSDT", "ETHUSDT"])
    """
    if market is None:
        url = rest_url or settings.binance_rest_url
        market = market_for_url(url)
    else:
        url = rest_url or market.rest_url
    doc = fetch_exchange_info(url, market, symbols, verify)
    rows = parse_exchange_info(doc, market)
    if symbols is not None:
        wanted = set(normalise_symbols(symbols))
        found = {r["symbol"] for r in rows}
        if wanted - found:
            raise ReferenceDataError(
                f"expected exchangeInfo for {sorted(wanted)}, found no entry for {sorted(wanted - found)}"
            )
    table = ensure_tables(load_catalog(settings), settings)["instruments"]
    written = write_instruments(table, rows)
    return ReferenceLoad(market.exchange, len(rows), sum(1 for r in rows if r["active"]), written)


def unknown_symbols(settings: Settings, exchange: str | None = None) -> list[tuple[str, str, int]]:
    """``(exchange, symbol, trades)`` seen in ``market_data.trades`` but absent from ``reference.instruments``.

    Example (needs a catalog)::

        for exchange, symbol, count in unknown_symbols(settings):
            print(exchange, symbol, count)
    """
    tables = ensure_tables(load_catalog(settings), settings)
    row_filter: Any = _X.EqualTo("exchange", exchange) if exchange else None
    known: set[tuple[str, str]] = set()
    scan_args: dict[str, Any] = {"selected_fields": ("exchange", "symbol")}
    if row_filter is not None:
        scan_args["row_filter"] = row_filter
    ref = tables["instruments"].scan(**scan_args).to_arrow()
    known.update(zip(ref["exchange"].to_pylist(), ref["symbol"].to_pylist(), strict=True))
    counts: dict[tuple[str, str], int] = {}
    for batch in tables["trades"].scan(**scan_args).to_arrow_batch_reader():
        if batch.num_rows == 0:
            continue
        grouped = (
            pa.Table.from_batches([batch]).group_by(["exchange", "symbol"]).aggregate([("symbol", "count")])
        )
        for ex, sym, n in zip(
            grouped["exchange"].to_pylist(),
            grouped["symbol"].to_pylist(),
            grouped["symbol_count"].to_pylist(),
            strict=True,
        ):
            counts[(ex, sym)] = counts.get((ex, sym), 0) + int(n)
    return sorted((ex, sym, n) for (ex, sym), n in counts.items() if (ex, sym) not in known)


def instruments(settings: Settings, exchange: str | None = None) -> pa.Table:
    """The current ``reference.instruments`` rows (optionally one exchange), sorted by exchange and symbol.

    Example (needs a catalog)::

        instruments(settings, "binance").to_pylist()
    """
    table = ensure_tables(load_catalog(settings), settings)["instruments"]
    scan = table.scan(row_filter=_X.EqualTo("exchange", exchange)) if exchange else table.scan()
    data = scan.to_arrow()
    if data.num_rows == 0:
        return data
    return data.take(pc.sort_indices(data, [("exchange", "ascending"), ("symbol", "ascending")]))
