"""Binance public-data files (trades, aggTrades, klines) -> K2's canonical tables.

**Binance public data** (data.binance.vision), symbol from the file name (``BTCUSDT-trades-2021-01-03.csv``,
``futures-um-BTCUSDT-trades-...``, ``BTCUSDT-aggTrades-...``, ``BTCUSDT-1m-2024-09-21.csv``), Binance's
directory layout (``.../futures/um/daily/trades/BTCUSDT/...``) or ``--symbol``:

* trades, spot: no header, 7 columns ``trade_id,price,qty,quote_qty,time,is_buyer_maker,is_best_match``,
  booleans ``True``/``False``; USD-M futures: a header row, 6 columns (no ``is_best_match``), lowercase
  booleans. The market (spot: exchange ``binance``, asset class ``crypto``; USD-M: ``binance-futures``,
  ``futures``) is decided from the column count, the boolean style, the path and ``--market`` together;
  they must agree (:mod:`k2.sources.files.detect`). A headerless USD-M file is still USD-M (6 columns).
* ``time`` is epoch **milliseconds** until 2024-12-31 and **microseconds** from 2025-01-01 (spot). K2
  decides per value by magnitude among s, ms, us and ns (:func:`~k2.sources.files.columns.epoch_to_micros`):
  unambiguous for every real date from 1973 to 5138.
* side: ``is_buyer_maker`` true means the buyer was the resting order, so the aggressor SOLD
  (``SELL``), else ``BUY``; ``is_best_match`` true adds the ``BEST_MATCH`` condition.
* aggTrades (8 columns spot, 7 futures without ``is_best_match``) go to the trades table under the
  exchange code ``<exchange>-agg`` (``binance-agg``, ``binance-futures-agg``): aggregate ids are a
  different id space from trade ids and must never collide with them; ``first_trade_id`` and
  ``last_trade_id`` go to ``vendor``; ``quote_quantity`` is null (not published).
* klines (12 columns, the last ``ignore``) go to ``market_data.klines``; the interval comes from the
  file name or ``--interval``. A headerless klines file says nothing of its market: the path or
  ``--market`` must.

Example:
    >>> parse_binance_name("BTCUSDT-trades-2021-01-03.first-minute.csv")
    ('BTCUSDT', 'trades', None)
    >>> parse_binance_name("BTCUSDT-1m-2024-09-21.zip")
    ('BTCUSDT', 'klines', '1m')
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from k2.lake.writer import conform
from k2.model import KLINE
from k2.model.values import canonical_instrument
from k2.sources.files.columns import const_strings, epoch_to_micros, flag_list, string_map, timestamps_us
from k2.sources.files.detect import binance_path, boolean_style, decide_market
from k2.sources.files.layout import (
    FileFormat,
    ImportOptions,
    Layout,
    check_asset_class,
    column_count,
    currency_column,
)
from k2.sources.files.parse import Col, Parsed, detect_header
from k2.sources.files.source import FileImportError, Sniff

_BINANCE_NAME = re.compile(
    r"^(?P<symbol>[A-Z0-9]{2,30})-(?P<kind>trades|aggTrades|(?P<interval>\d+[smhdw]|1mo|1M))-\d{4}-\d{2}(-\d{2})?(\.|$)"
)


def parse_binance_name(name: str) -> tuple[str, str, str | None] | None:
    """(symbol, kind, interval) from an official Binance file name, or None."""
    match = _BINANCE_NAME.match(name)
    if match is None:
        return None
    kind = match.group("kind")
    if match.group("interval"):
        return match.group("symbol"), "klines", match.group("interval")
    return match.group("symbol"), kind, None


class _Binance(FileFormat):
    kind = ""
    agg_suffix = ""
    spot_width = 0  # column count of the spot layout (futures: one fewer); 0 = width says nothing
    bool_column = -1  # index of is_buyer_maker (boolean style is evidence), -1 = none

    def _identity(
        self, sniff: Sniff, source_file: str, options: ImportOptions, import_us: int, cols: list[Col]
    ) -> Layout:
        """Header, market (content + path + --market, see :mod:`k2.sources.files.detect`), symbol."""
        header = detect_header(sniff.first)
        hints = binance_path(sniff.path)
        if hints.kind is not None and hints.kind != self.kind:
            raise FileImportError(
                f"{source_file}: expected Binance {self.kind} for k2 import {self.name}, found {hints.kind} in the path "
                f"({sniff.path}); use k2 import binance-{hints.kind.lower()}"
            )
        symbol = options.symbol.upper() if options.symbol else hints.symbol
        if options.symbol and hints.symbol and hints.symbol != symbol:
            raise FileImportError(
                f"{source_file}: expected --symbol {symbol} to match the path, found {hints.symbol} in it"
            )
        if not symbol:
            raise FileImportError(
                f"{source_file}: expected the symbol in the file name (e.g. BTCUSDT-{self.kind}-2021-01-03.csv, "
                f"futures-um-BTCUSDT-{self.kind}-...) or Binance's directory layout (.../{self.kind}/BTCUSDT/...) or --symbol, "
                "found none"
            )
        market = decide_market(
            self._content_evidence(sniff, header, len(cols))
            + [(f"path {hints.market_clue}" if hints.market else "no market in the path", hints.market)],
            options.market,
            source_file,
        )
        check_asset_class(options.asset_class)
        exchange = ("binance-futures" if market == "usdm" else "binance") + self.agg_suffix
        asset_class = options.asset_class or ("futures" if market == "usdm" else "crypto")
        return Layout(cols, header, source_file, import_us, exchange, asset_class, symbol.upper())

    def _content_evidence(self, sniff: Sniff, header: bool, width: int) -> list[tuple[str, str | None]]:
        evidence: list[tuple[str, str | None]] = []
        if self.spot_width:
            evidence.append((f"{width} columns", "spot" if width == self.spot_width else "usdm"))
        if self.bool_column >= 0 and self.bool_column < width:
            lines = sniff.sample if header else [sniff.first, *sniff.sample]
            style = boolean_style(lines, self.bool_column)
            evidence.append(
                (
                    "booleans "
                    + (
                        "True/False"
                        if style == "spot"
                        else "true/false"
                        if style == "usdm"
                        else "of unknown style"
                    ),
                    style,
                )
            )
        if not self.spot_width:
            evidence.append(("a header row" if header else "no header row", "usdm" if header else None))
        return evidence


SPOT_TRADES = [
    Col("trade_id", "int"),
    Col("price", "dec"),
    Col("qty", "dec"),
    Col("quote_qty", "dec"),
    Col("time", "int"),
    Col("is_buyer_maker", "bool"),
    Col("is_best_match", "bool"),
]
USDM_TRADES = SPOT_TRADES[:6]
AGG_TRADES = [
    Col("agg_trade_id", "int"),
    Col("price", "dec"),
    Col("qty", "dec"),
    Col("first_trade_id", "int"),
    Col("last_trade_id", "int"),
    Col("transact_time", "int"),
    Col("is_buyer_maker", "bool"),
    Col("is_best_match", "bool"),
]
KLINES = [
    Col("open_time", "int"),
    Col("open", "dec"),
    Col("high", "dec"),
    Col("low", "dec"),
    Col("close", "dec"),
    Col("volume", "dec"),
    Col("close_time", "int"),
    Col("quote_volume", "dec"),
    Col("count", "int"),
    Col("taker_buy_base", "dec"),
    Col("taker_buy_quote", "dec"),
    Col("ignore", "str"),
]


def _trade_table(
    layout: Layout,
    ids: pa.Array,
    price: pa.Array,
    qty: pa.Array,
    quote_qty: pa.Array | None,
    times_us: np.ndarray,
    buyer_maker: pa.Array,
    best_match: pa.Array | None,
    vendor: dict[str, pa.Array],
) -> pa.Table:
    n = len(ids)
    best = np.asarray(best_match.fill_null(False)) if best_match is not None else np.zeros(n, dtype=bool)
    now = timestamps_us(np.full(n, layout.import_us, dtype=np.int64))
    data = {
        "exchange": const_strings(layout.exchange, n),
        "symbol": const_strings(layout.symbol, n),
        "instrument": const_strings(canonical_instrument(layout.symbol), n),
        "asset_class": const_strings(layout.asset_class, n),
        "trade_id": ids,
        "price": price,
        "quantity": qty,
        "quote_quantity": quote_qty if quote_qty is not None else pa.nulls(n, price.type),
        "side": pc.if_else(buyer_maker, "SELL", "BUY"),
        "exchange_ts": timestamps_us(times_us),
        "receipt_ts": now,
        "ingest_ts": now,
        "source_sequence": ids,
        "conditions": flag_list(best, "BEST_MATCH"),
        "vendor": string_map({"source_file": const_strings(layout.source_file, n), **vendor}),
        "currency": currency_column(layout.exchange, layout.symbol, n),
    }
    return conform(pa.table(data), "trades")


class BinanceTrades(_Binance):
    """Binance public-data trades (spot 7 columns, USD-M futures 6 columns with a header)."""

    name = "binance-trades"
    kind = "trades"
    spot_width = 7
    bool_column = 5

    def layout(self, sniff: Sniff, source_file: str, options: ImportOptions, import_us: int) -> Layout:
        first = sniff.first
        width = column_count(first)
        if width not in (6, 7):
            raise FileImportError(
                f"{source_file}: expected Binance trades with 7 columns (spot: {','.join(c.name for c in SPOT_TRADES)}) "
                f"or 6 (USD-M futures, header row), found {width} columns"
            )
        return self._identity(
            sniff, source_file, options, import_us, SPOT_TRADES if width == 7 else USDM_TRADES
        )

    def build(self, parsed: Parsed, layout: Layout) -> tuple[pa.Table, list[tuple[int, str, str]]]:
        c = parsed.columns
        table = _trade_table(
            layout,
            c["trade_id"],
            c["price"],
            c["qty"],
            c["quote_qty"],
            epoch_to_micros(np.asarray(c["time"])),
            c["is_buyer_maker"],
            c.get("is_best_match"),
            {},
        )
        return table, []


class BinanceAggTrades(_Binance):
    """Binance public-data aggTrades (8 columns spot, 7 with a header on USD-M futures)."""

    name = "binance-aggtrades"
    kind = "aggTrades"
    agg_suffix = "-agg"
    spot_width = 8
    bool_column = 6

    def layout(self, sniff: Sniff, source_file: str, options: ImportOptions, import_us: int) -> Layout:
        width = column_count(sniff.first)
        if width not in (7, 8):
            raise FileImportError(
                f"{source_file}: expected Binance aggTrades with 8 columns ({','.join(c.name for c in AGG_TRADES)}) "
                f"or 7 (futures, no is_best_match), found {width} columns"
            )
        return self._identity(sniff, source_file, options, import_us, AGG_TRADES[:width])

    def build(self, parsed: Parsed, layout: Layout) -> tuple[pa.Table, list[tuple[int, str, str]]]:
        c = parsed.columns
        vendor = {"first_trade_id": c["first_trade_id"], "last_trade_id": c["last_trade_id"]}
        table = _trade_table(
            layout,
            c["agg_trade_id"],
            c["price"],
            c["qty"],
            None,
            epoch_to_micros(np.asarray(c["transact_time"])),
            c["is_buyer_maker"],
            c.get("is_best_match"),
            vendor,
        )
        return table, []


class BinanceKlines(_Binance):
    """Binance public-data klines (12 columns) -> ``market_data.klines``."""

    name = "binance-klines"
    kind = "klines"
    table = "klines"
    record = KLINE

    def layout(self, sniff: Sniff, source_file: str, options: ImportOptions, import_us: int) -> Layout:
        width = column_count(sniff.first)
        if width != 12:
            raise FileImportError(
                f"{source_file}: expected Binance klines with 12 columns ({','.join(c.name for c in KLINES)}), found {width}"
            )
        layout = self._identity(sniff, source_file, options, import_us, KLINES)
        interval = options.interval or binance_path(sniff.path).interval
        if not interval:
            raise FileImportError(
                f"{source_file}: expected the interval in the file name (e.g. BTCUSDT-1m-2024-09-21.csv) or --interval, found neither"
            )
        layout.interval = interval
        return layout

    def build(self, parsed: Parsed, layout: Layout) -> tuple[pa.Table, list[tuple[int, str, str]]]:
        c = parsed.columns
        n = parsed.num_rows
        data = {
            "exchange": const_strings(layout.exchange, n),
            "symbol": const_strings(layout.symbol, n),
            "instrument": const_strings(canonical_instrument(layout.symbol), n),
            "asset_class": const_strings(layout.asset_class, n),
            "interval": const_strings(layout.interval, n),
            "open_time": timestamps_us(epoch_to_micros(np.asarray(c["open_time"]))),
            "close_time": timestamps_us(epoch_to_micros(np.asarray(c["close_time"]))),
            "open": c["open"],
            "high": c["high"],
            "low": c["low"],
            "close": c["close"],
            "volume": c["volume"],
            "quote_volume": c["quote_volume"],
            "trade_count": c["count"],
            "taker_buy_base": c["taker_buy_base"],
            "taker_buy_quote": c["taker_buy_quote"],
            "receipt_ts": timestamps_us(np.full(n, layout.import_us, dtype=np.int64)),
            "vendor": string_map({"source_file": const_strings(layout.source_file, n)}),
        }
        return conform(pa.table(data), "klines"), []
