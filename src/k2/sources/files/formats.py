"""Vendor file layouts and their mapping to K2's canonical records.

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

**Tardis.dev CSV** (header row, microsecond timestamps, exchange and symbol per row):

* trades ``exchange,symbol,timestamp,local_timestamp,id,side,price,amount``: ``side`` (buy/sell/unknown)
  is the aggressor; a numeric ``id`` (up to 18 digits) is the trade id; any other id (UUIDs, empty) gets
  a synthetic id ``timestamp_us * 1000 + n`` (``n`` = file order among the symbol's rows of that time),
  so ties keep the file's order; the original id is kept in ``vendor``. ``local_timestamp`` (when the
  collector received the message) is ``receipt_ts``. ``symbol`` is kept as the venue writes it
  (``XBTUSD``); ``instrument`` is K2's ``BASE-QUOTE`` where defined (``BTC-USD``). Amounts on contract
  venues (bitmex, deribit, ...) need ``--contract inverse|linear`` (and ``--multiplier``), see
  :func:`_contract_amounts`; the import is refused without it.
* times (``timestamp``, ``local_timestamp``) are read per value as s/ms/us/ns (Tardis writes us).
* quotes ``exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount`` (the
  Tardis "quotes" data type: top of book; an empty field means no level on that side and is stored
  as null). ``update_id`` is synthetic: ``local_timestamp * 1000 + n`` where ``n`` counts earlier rows
  of the same symbol with the same ``local_timestamp``.
* asset class ``futures`` for exchange ids containing futures/swap/delivery (and bitmex, deribit),
  else ``crypto`` (``--asset-class`` overrides).

**ASX** (the 2014 sample under ``shared/data/asx``; no header, CRLF, ``MM/DD/YYYY``, local Sydney
wall-clock times):

* times are converted with ``zoneinfo.ZoneInfo("Australia/Sydney")`` per local hour (exact across
  daylight-saving changes; an ambiguous hour takes the first, daylight-time, reading). Note: in
  March 2014 Sydney was on daylight time (AEDT, UTC+11, until 6 April 2014), so 10:06 local is
  23:06 UTC the previous day; a fixed UTC+10 would be an hour off.
* trades ``Date,Time,Price,Volume,Qualifiers,Venue,BuyerID``: rows with Venue ``X`` (auction and
  pre-open/after-hours crossings) get the ``AUCTION`` condition; side is ``UNKNOWN``; ``trade_id`` is
  synthetic ``exchange_ts_us * 1000 + n`` (``n`` = earlier rows of the symbol with the same time, in
  file order), deterministic for a given file; qualifiers, venue and BuyerID are kept in ``vendor``.
* quotes ``Date,Time,Bid,Ask,BidVolume,AskVolume``: ``update_id`` synthetic the same way; a zero price
  (no order on that side, e.g. pre-open) is kept as published, as the landing validator expects.
  Pre-open books where bid > ask (the auction overlap) fail the landing validator's
  ``crossed_quote`` rule and are rejected with their lines like any other bad row (25 of the first
  200 lines of RIO's file).
* the file name is the ASX company id (``7078.csv``), mapped to the ticker through
  ``reference-data/company_info.csv``.

Synthetic ids assume rows of one timestamp are contiguous in the file (true for Tardis and ASX files,
which are time-ordered); a run split across read blocks is continued, not restarted.

Example:
    >>> parse_binance_name("BTCUSDT-trades-2021-01-03.first-minute.csv")
    ('BTCUSDT', 'trades', None)
    >>> parse_binance_name("BTCUSDT-1m-2024-09-21.zip")
    ('BTCUSDT', 'klines', '1m')
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from k2.lake.writer import conform
from k2.model import KLINE, QUOTE, TRADE, AssetClass, RecordType
from k2.model.arrow import decimal_array
from k2.model.values import canonical_instrument, quote_currency, to_unscaled
from k2.sources.files.columns import (
    const_strings,
    epoch_to_micros,
    flag_list,
    occurrence_rank,
    string_map,
    timestamps_us,
)
from k2.sources.files.detect import binance_path, boolean_style, decide_market
from k2.sources.files.parse import Col, Parsed, detect_header
from k2.sources.files.source import FileImportError, Sniff

_BINANCE_NAME = re.compile(
    r"^(?P<symbol>[A-Z0-9]{2,30})-(?P<kind>trades|aggTrades|(?P<interval>\d+[smhdw]|1mo|1M))-\d{4}-\d{2}(-\d{2})?(\.|$)"
)
SYDNEY = ZoneInfo("Australia/Sydney")
_HOUR_US = 3_600_000_000
_DAY_US = 86_400_000_000


@dataclass
class ImportOptions:
    """What the user told the importer (CLI options)."""

    symbol: str | None = None
    market: str = "auto"  # auto | spot | usdm
    interval: str | None = None
    asset_class: str | None = None
    tickers: dict[str, str] = field(default_factory=dict)  # ASX company id -> ticker
    contract: str | None = None  # Tardis: inverse | linear (amounts are contracts)
    multiplier: str | None = None  # Tardis: contract multiplier (decimal text; default 1)


@dataclass
class Layout:
    """How one file is read and mapped: its columns, header, and the resolved identity."""

    cols: list[Col]
    header: bool
    source_file: str
    import_us: int
    exchange: str = ""
    asset_class: str = ""
    symbol: str = ""
    interval: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # told to the user (ImportReport.notes)
    carry: dict[tuple[str, int], int] = field(default_factory=dict)  # synthetic-id runs across blocks


class FileFormat:
    """A vendor layout: detect it from the first line, map parsed columns to a canonical table."""

    name = ""
    table = "trades"
    record: RecordType = TRADE

    def layout(self, sniff: Sniff, source_file: str, options: ImportOptions, import_us: int) -> Layout:
        """How to read the file (``sniff``: its first lines and path); raises FileImportError naming what was found."""
        raise NotImplementedError

    def build(self, parsed: Parsed, layout: Layout) -> tuple[pa.Table, list[tuple[int, str, str]]]:
        """The canonical table for the parsed rows and the rows to reject (index, reason, detail)."""
        raise NotImplementedError

    @property
    def parquet_columns(self) -> list[str] | None:
        """Column names when this layout is also read from Parquet (by name), else None (Parquet refused)."""
        return None

    def topic_identity(self, layout: Layout) -> tuple[str, str]:
        """(asset_class, exchange) of the topic this file's rows belong to (also names its DLQ)."""
        return layout.asset_class, layout.exchange


def parse_binance_name(name: str) -> tuple[str, str, str | None] | None:
    """(symbol, kind, interval) from an official Binance file name, or None."""
    match = _BINANCE_NAME.match(name)
    if match is None:
        return None
    kind = match.group("kind")
    if match.group("interval"):
        return match.group("symbol"), "klines", match.group("interval")
    return match.group("symbol"), kind, None


def _check_asset_class(value: str | None) -> None:
    if value is not None and value not in {a.value for a in AssetClass}:
        raise FileImportError(
            f"expected --asset-class among {[a.value for a in AssetClass]}, found {value!r}"
        )


def _width(first: bytes) -> int:
    return len(first.rstrip(b"\r").split(b","))


def _check_header(first: bytes, expected: list[str], source_file: str) -> None:
    found = [f.strip().decode("utf-8", errors="replace").lower() for f in first.rstrip(b"\r").split(b",")]
    if found != expected:
        raise FileImportError(
            f"{source_file}: expected the header {','.join(expected)}, found {','.join(found)}"
        )


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
        _check_asset_class(options.asset_class)
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
        "currency": _currency(layout.exchange, layout.symbol, n),
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
        width = _width(first)
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
        width = _width(sniff.first)
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
        width = _width(sniff.first)
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


# -- Tardis.dev ------------------------------------------------------------------------------------

TARDIS_TRADES = [
    Col("exchange", "str"),
    Col("symbol", "str"),
    Col("timestamp", "int"),
    Col("local_timestamp", "int"),
    Col("id", "str"),
    Col("side", "str"),
    Col("price", "dec"),
    Col("amount", "dec"),
]
TARDIS_QUOTES = [
    Col("exchange", "str"),
    Col("symbol", "str"),
    Col("timestamp", "int"),
    Col("local_timestamp", "int"),
    Col("ask_amount", "opt_dec"),
    Col("ask_price", "opt_dec"),
    Col("bid_price", "opt_dec"),
    Col("bid_amount", "opt_dec"),
]
_TARDIS_FUTURES = ("futures", "swap", "delivery", "perp")


def tardis_asset_class(exchange: str) -> str:
    """K2 asset class of a Tardis exchange id.

    >>> tardis_asset_class("binance-futures"), tardis_asset_class("binance"), tardis_asset_class("bitmex")
    ('futures', 'crypto', 'futures')
    """
    if any(word in exchange for word in _TARDIS_FUTURES) or exchange in ("bitmex", "deribit"):
        return "futures"
    return "crypto"


_TARDIS_BASES = {"XBT": "BTC"}  # BitMEX names bitcoin XBT
_CONTRACT_VENUES = (
    "bitmex",
    "deribit",
    "binance-delivery",
    "okex-swap",
    "okex-futures",
    "huobi-dm",
    "huobi-dm-swap",
)


def _currency(exchange: str, symbol: str, n: int) -> pa.Array:
    """The currency column of a one-symbol file: stated by the venue, else null (see quote_currency)."""
    currency = quote_currency(exchange, symbol)
    return const_strings(currency, n) if currency is not None else pa.nulls(n, pa.string())


def _pair_currency(exchange_and_symbol: str) -> str | None:
    exchange, _, symbol = exchange_and_symbol.partition("\x1f")
    return quote_currency(exchange, symbol)


def tardis_instrument(exchange_and_symbol: str) -> str:
    """K2's instrument for a Tardis (exchange, symbol): ``BASE-QUOTE`` where it is defined, else the venue's name.

    >>> tardis_instrument("bitmex\x1fXBTUSD"), tardis_instrument("binance\x1fBTCUSDT"), tardis_instrument("deribit\x1fBTC-PERPETUAL")
    ('BTC-USD', 'BTC-USDT', 'BTC-PERPETUAL')
    """
    exchange, _, symbol = exchange_and_symbol.partition("\x1f")
    if exchange == "bitmex":
        for base, canonical in _TARDIS_BASES.items():
            if (
                symbol.startswith(base)
                and symbol[len(base) :].isalpha()
                and symbol[len(base) :] in ("USD", "USDT", "EUR")
            ):
                return f"{canonical}-{symbol[len(base) :]}"
        return symbol
    return canonical_instrument(symbol)


def _contract_amounts(
    price: pa.Array, amount: pa.Array, layout: Layout
) -> tuple[pa.Array, pa.Array, dict[str, pa.Array]]:
    """(quantity in the base asset, quote quantity, vendor fields) from Tardis ``amount`` and ``--contract``.

    Linear (default for spot venues): quantity = amount x multiplier, quote = quantity x price. Inverse
    (BitMEX XBTUSD, Deribit BTC-PERPETUAL: amount is a number of USD contracts): quote = amount x
    multiplier, quantity = quote / price **rounded to 8 decimals** (the one inexact value; the contract
    count is kept in ``vendor.contracts``). Venues that quote contracts need ``--contract``.
    """
    contract = layout.extra.get("contract", "")
    if not contract:
        if layout.exchange in _CONTRACT_VENUES:
            raise FileImportError(
                f"{layout.source_file}: expected --contract inverse or --contract linear (and --multiplier) for {layout.exchange}, "
                "whose amounts are contracts, found neither; volume would be in the wrong unit"
            )
        return amount, pa.nulls(len(amount), price.type), {}
    multiplier = Decimal(layout.extra.get("multiplier") or "1")
    prices, amounts = price.to_pylist(), amount.to_pylist()
    quantities: list[int | None] = []
    quotes: list[int | None] = []
    for p, a in zip(prices, amounts, strict=True):
        if p is None or a is None or p == 0:
            quantities.append(None if a is None else to_unscaled(a))
            quotes.append(None)
            continue
        if contract == "inverse":
            quote = a * multiplier
            quantity = (quote / p).quantize(_EIGHT, rounding=ROUND_HALF_EVEN)
        else:
            quantity = a * multiplier
            quote = (quantity * p).quantize(_EIGHT, rounding=ROUND_HALF_EVEN)
        quantities.append(to_unscaled(quantity))
        quotes.append(to_unscaled(quote))
    vendor = {"contracts": pc.cast(amount, pa.string()), "contract": const_strings(contract, len(amount))}
    return decimal_array(quantities), decimal_array(quotes), vendor


_EIGHT = Decimal("0.00000001")


def _per_value(array: pa.Array, fn: Any) -> pa.Array:
    """Apply ``fn`` to each distinct value of a (low-cardinality) string column."""
    encoded = (
        pc.dictionary_encode(array).combine_chunks()
        if isinstance(array, pa.ChunkedArray)
        else pc.dictionary_encode(array)
    )
    mapped = pa.array([fn(v) for v in encoded.dictionary.to_pylist()], pa.string())
    return pc.take(mapped, encoded.indices)


def _synthetic_ids(times: np.ndarray, groups: pa.Array, layout: Layout) -> np.ndarray:
    """``time * 1000 + n``: ``n`` counts earlier rows of the group with the same time (runs continue across blocks)."""
    encoded = pc.dictionary_encode(groups)
    codes = np.asarray(encoded.indices, dtype=np.int64)
    names = encoded.dictionary.to_pylist()
    rank = occurrence_rank(times, codes)
    for code, name in enumerate(names):
        rows = np.flatnonzero(codes == code)
        first_time = int(times[rows[0]])
        previous = layout.carry.get((name, first_time))
        if previous:
            rank[rows[times[rows] == first_time]] += previous
    if rank.size and int(rank.max()) >= 1000:
        raise FileImportError(
            f"{layout.source_file}: more than 1000 rows share one timestamp; the synthetic id (time * 1000 + n) cannot hold them"
        )
    # Remember the run at each group's last time, for the next block.
    layout.carry = {}
    for code, name in enumerate(names):
        rows = np.flatnonzero(codes == code)
        last = rows[-1]
        layout.carry[(name, int(times[last]))] = int(rank[last]) + 1
    return times * 1000 + rank


class _Tardis(FileFormat):
    expected: list[Col] = []

    @property
    def parquet_columns(self) -> list[str] | None:
        return [c.name for c in self.expected]

    def layout(self, sniff: Sniff, source_file: str, options: ImportOptions, import_us: int) -> Layout:
        _check_header(sniff.first, [c.name for c in self.expected], source_file)
        _check_asset_class(options.asset_class)
        layout = Layout(self.expected, True, source_file, import_us, symbol=options.symbol or "")
        if options.asset_class:
            layout.asset_class = options.asset_class
        if options.contract not in (None, "inverse", "linear"):
            raise FileImportError(f"expected --contract inverse or linear, found {options.contract!r}")
        if options.contract:
            layout.extra["contract"] = options.contract
        if options.multiplier is not None:
            try:
                if Decimal(options.multiplier) <= 0:
                    raise InvalidOperation
            except InvalidOperation:
                raise FileImportError(
                    f"expected --multiplier a positive decimal, found {options.multiplier!r}"
                ) from None
            layout.extra["multiplier"] = options.multiplier
        return layout

    def identity(self, parsed: Parsed, layout: Layout) -> dict[str, pa.Array]:
        c = parsed.columns
        n = parsed.num_rows
        exchange = pc.utf8_lower(c["exchange"])
        symbol = const_strings(layout.symbol, n) if layout.symbol else c["symbol"]
        asset = (
            const_strings(layout.asset_class, n)
            if layout.asset_class
            else _per_value(exchange, tardis_asset_class)
        )
        if n and not layout.exchange:
            layout.exchange = str(exchange[0].as_py())
            layout.asset_class = layout.asset_class or tardis_asset_class(layout.exchange)
        return {
            "exchange": exchange,
            "symbol": symbol,
            "instrument": _per_value(
                pc.binary_join_element_wise(exchange, symbol, "\x1f"), tardis_instrument
            ),
            "asset_class": asset,
            "currency": _per_value(pc.binary_join_element_wise(exchange, symbol, "\x1f"), _pair_currency),
        }

    def topic_identity(self, layout: Layout) -> tuple[str, str]:
        return layout.asset_class or "crypto", layout.exchange or "tardis"


class TardisTrades(_Tardis):
    """Tardis.dev ``trades`` CSV."""

    name = "tardis-trades"
    expected = TARDIS_TRADES

    def build(self, parsed: Parsed, layout: Layout) -> tuple[pa.Table, list[tuple[int, str, str]]]:
        c = parsed.columns
        n = parsed.num_rows
        ident = self.identity(parsed, layout)
        side_text = pc.utf8_lower(c["side"])
        side = pc.utf8_upper(side_text)
        bad_side = ~np.asarray(pc.is_in(side_text, value_set=pa.array(["buy", "sell", "unknown"])))
        rejects = [
            (int(i), "bad_side", f"side: expected buy, sell or unknown, found {c['side'][int(i)].as_py()!r}")
            for i in np.flatnonzero(bad_side)
        ]
        times = epoch_to_micros(np.asarray(c["timestamp"], dtype=np.int64))
        local = epoch_to_micros(np.asarray(c["local_timestamp"], dtype=np.int64))
        numeric = np.asarray(pc.fill_null(pc.match_substring_regex(c["id"], r"^\d{1,18}$"), False))
        ids = np.asarray(pc.cast(pc.if_else(pa.array(numeric), c["id"], "0"), pa.int64())).copy()
        if not numeric.all():
            # UUIDs / empty ids: time * 1000 + n (n = file order among the symbol's rows of that time), so
            # trades sharing a timestamp keep the file's order (a hash would reorder them).
            synthetic = _synthetic_ids(times, ident["symbol"], layout)
            ids[~numeric] = synthetic[~numeric]
        quantity, quote_quantity, contract_vendor = _contract_amounts(c["price"], c["amount"], layout)
        data = {
            **ident,
            "trade_id": pa.array(ids, pa.int64()),
            "price": c["price"],
            "quantity": quantity,
            "quote_quantity": quote_quantity,
            "side": pc.if_else(pa.array(bad_side), "UNKNOWN", side),
            "exchange_ts": timestamps_us(times),
            "receipt_ts": timestamps_us(local),  # when the venue's message reached Tardis' collector
            "ingest_ts": timestamps_us(np.full(n, layout.import_us, dtype=np.int64)),
            "source_sequence": pa.nulls(n, pa.int64()),
            "conditions": flag_list(np.zeros(n, dtype=bool), ""),
            "vendor": string_map(
                {
                    "source_file": const_strings(layout.source_file, n),
                    "id": c["id"],
                    "local_timestamp": c["local_timestamp"],
                    **contract_vendor,
                }
            ),
        }
        return conform(pa.table(data), "trades"), rejects


class TardisQuotes(_Tardis):
    """Tardis.dev ``quotes`` CSV (top of book)."""

    name = "tardis-quotes"
    table = "quotes"
    record = QUOTE
    expected = TARDIS_QUOTES

    def build(self, parsed: Parsed, layout: Layout) -> tuple[pa.Table, list[tuple[int, str, str]]]:
        c = parsed.columns
        n = parsed.num_rows
        ident = self.identity(parsed, layout)
        local = epoch_to_micros(np.asarray(c["local_timestamp"], dtype=np.int64))
        now = timestamps_us(np.full(n, layout.import_us, dtype=np.int64))
        data = {
            **ident,
            "update_id": pa.array(_synthetic_ids(local, ident["symbol"], layout), pa.int64()),
            "bid_price": c["bid_price"],
            "bid_size": c["bid_amount"],
            "ask_price": c["ask_price"],
            "ask_size": c["ask_amount"],
            "exchange_ts": timestamps_us(epoch_to_micros(np.asarray(c["timestamp"], dtype=np.int64))),
            "receipt_ts": timestamps_us(local),
            "ingest_ts": now,
            "vendor": string_map(
                {
                    "source_file": const_strings(layout.source_file, n),
                    "local_timestamp": c["local_timestamp"],
                }
            ),
        }
        return conform(pa.table(data), "quotes"), []


# -- ASX -------------------------------------------------------------------------------------------

ASX_TRADES = [
    Col("date", "str"),
    Col("time", "str"),
    Col("price", "dec"),
    Col("volume", "dec"),
    Col("qualifiers", "str"),
    Col("venue", "str"),
    Col("buyer_id", "str"),
]
ASX_QUOTES = [
    Col("date", "str"),
    Col("time", "str"),
    Col("bid", "dec"),
    Col("ask", "dec"),
    Col("bid_volume", "dec"),
    Col("ask_volume", "dec"),
]


def sydney_to_utc_micros(local_us: np.ndarray) -> np.ndarray:
    """Local Sydney wall-clock microseconds (as if UTC) to true UTC microseconds, via zoneinfo.

    >>> local = np.array([1394445601395000])  # 2014-03-10 10:00:01.395 local (AEDT, UTC+11)
    >>> datetime.fromtimestamp(int(sydney_to_utc_micros(local)[0]) / 1e6, UTC).isoformat()
    '2014-03-09T23:00:01.395000+00:00'
    """
    hours = local_us // _HOUR_US
    unique, inverse = np.unique(hours, return_inverse=True)
    offsets = np.empty(len(unique), dtype=np.int64)
    for index, hour in enumerate(unique.tolist()):
        wall = datetime.fromtimestamp(hour * 3600, UTC).replace(tzinfo=SYDNEY)
        offset = wall.utcoffset()
        assert offset is not None
        offsets[index] = int(offset.total_seconds()) * 1_000_000
    return local_us - offsets[inverse]


def asx_local_micros(date: pa.Array, time: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Wall-clock microseconds (as if UTC) from ``MM/DD/YYYY`` and ``HH:MM:SS[.ffffff]``, and a good mask."""
    n = len(date)
    good = np.asarray(pc.fill_null(pc.match_substring_regex(date, r"^\d{2}/\d{2}/\d{4}$"), False))
    good &= np.asarray(
        pc.fill_null(pc.match_substring_regex(time, r"^\d{2}:\d{2}:\d{2}(\.\d{1,6})?$"), False)
    )
    if n == 0:
        return np.zeros(0, dtype=np.int64), good
    safe_date = pc.if_else(pa.array(good), date, "01/01/1970")
    safe_time = pc.if_else(pa.array(good), time, "00:00:00")
    iso = pc.binary_join_element_wise(
        pc.utf8_slice_codeunits(safe_date, 6, 10),
        pc.utf8_slice_codeunits(safe_date, 0, 2),
        pc.utf8_slice_codeunits(safe_date, 3, 5),
        "-",
    )
    try:
        days = np.asarray(pc.cast(iso, pa.date32()).cast(pa.int32()), dtype=np.int64)
    except pa.ArrowInvalid:
        days = np.zeros(n, dtype=np.int64)
        for index, text in enumerate(iso.to_pylist()):
            try:
                days[index] = (
                    datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)
                ).days
            except ValueError:
                good[index] = False

    def part(start: int, stop: int) -> np.ndarray:
        return np.asarray(
            pc.cast(pc.utf8_slice_codeunits(safe_time, start, stop), pa.int64()), dtype=np.int64
        )

    hour, minute, second = part(0, 2), part(3, 5), part(6, 8)
    frac_text = pc.utf8_rpad(pc.utf8_slice_codeunits(safe_time, 9, 15), 6, "0")
    frac = np.asarray(pc.cast(frac_text, pa.int64()), dtype=np.int64)
    good &= (hour < 24) & (minute < 60) & (second < 60)
    micros = days * _DAY_US + ((hour * 60 + minute) * 60 + second) * 1_000_000 + frac
    return micros, good


class _Asx(FileFormat):
    cols: list[Col] = []

    def layout(self, sniff: Sniff, source_file: str, options: ImportOptions, import_us: int) -> Layout:
        first = sniff.first
        width = _width(first)
        if width != len(self.cols):
            raise FileImportError(
                f"{source_file}: expected ASX {self.table} with {len(self.cols)} columns ({','.join(c.name for c in self.cols)}), found {width}"
            )
        stem = source_file.split(".", 1)[0]
        symbol = options.symbol or options.tickers.get(stem)
        if not symbol:
            raise FileImportError(
                f"{source_file}: expected --symbol or a company id file name listed in company_info.csv "
                f"(known ids: {sorted(options.tickers)}), found {stem!r}"
            )
        layout = Layout(
            self.cols, detect_header(first), source_file, import_us, "asx", "equities", symbol.upper()
        )
        layout.extra["company_id"] = stem if stem in options.tickers else ""
        return layout

    def times(self, parsed: Parsed) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
        c = parsed.columns
        local, good = asx_local_micros(c["date"], c["time"])
        rejects = [
            (
                int(i),
                "bad_timestamp",
                f"date,time: expected MM/DD/YYYY,HH:MM:SS.fff, found {c['date'][int(i)].as_py()!r},{c['time'][int(i)].as_py()!r}",
            )
            for i in np.flatnonzero(~good)
        ]
        return sydney_to_utc_micros(np.where(good, local, 0)), rejects

    def identity(self, layout: Layout, n: int) -> dict[str, pa.Array]:
        return {
            "exchange": const_strings("asx", n),
            "symbol": const_strings(layout.symbol, n),
            "instrument": const_strings(layout.symbol, n),
            "asset_class": const_strings("equities", n),
            "currency": _currency("asx", layout.symbol, n),
        }


class AsxTrades(_Asx):
    """ASX trades ``Date,Time,Price,Volume,Qualifiers,Venue,BuyerID``."""

    name = "asx-trades"
    cols = ASX_TRADES

    def build(self, parsed: Parsed, layout: Layout) -> tuple[pa.Table, list[tuple[int, str, str]]]:
        c = parsed.columns
        n = parsed.num_rows
        utc, rejects = self.times(parsed)
        now = timestamps_us(np.full(n, layout.import_us, dtype=np.int64))
        auction = np.asarray(pc.equal(pc.utf8_trim_whitespace(c["venue"]), "X"))
        data = {
            **self.identity(layout, n),
            "trade_id": pa.array(_synthetic_ids(utc, const_strings(layout.symbol, n), layout), pa.int64()),
            "price": c["price"],
            "quantity": c["volume"],
            "quote_quantity": pa.nulls(n, c["price"].type),
            "side": const_strings("UNKNOWN", n),
            "exchange_ts": timestamps_us(utc),
            "receipt_ts": now,
            "ingest_ts": now,
            "source_sequence": pa.nulls(n, pa.int64()),
            "conditions": flag_list(auction, "AUCTION"),
            "vendor": string_map(
                {
                    "source_file": const_strings(layout.source_file, n),
                    "company_id": const_strings(layout.extra.get("company_id", ""), n),
                    "qualifiers": c["qualifiers"],
                    "venue": c["venue"],
                    "buyer_id": c["buyer_id"],
                }
            ),
        }
        return conform(pa.table(data), "trades"), rejects


class AsxQuotes(_Asx):
    """ASX quotes ``Date,Time,Bid,Ask,BidVolume,AskVolume``."""

    name = "asx-quotes"
    table = "quotes"
    record = QUOTE
    cols = ASX_QUOTES

    def build(self, parsed: Parsed, layout: Layout) -> tuple[pa.Table, list[tuple[int, str, str]]]:
        c = parsed.columns
        n = parsed.num_rows
        utc, rejects = self.times(parsed)
        now = timestamps_us(np.full(n, layout.import_us, dtype=np.int64))
        data = {
            **self.identity(layout, n),
            "update_id": pa.array(_synthetic_ids(utc, const_strings(layout.symbol, n), layout), pa.int64()),
            "bid_price": c["bid"],
            "bid_size": c["bid_volume"],
            "ask_price": c["ask"],
            "ask_size": c["ask_volume"],
            "exchange_ts": timestamps_us(utc),
            "receipt_ts": now,
            "ingest_ts": now,
            "vendor": string_map(
                {
                    "source_file": const_strings(layout.source_file, n),
                    "company_id": const_strings(layout.extra.get("company_id", ""), n),
                }
            ),
        }
        return conform(pa.table(data), "quotes"), rejects


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
