"""Tardis.dev CSV (trades, quotes) -> K2's canonical tables, and Tardis' exchange/symbol naming.

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
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from k2.lake.writer import conform
from k2.model import QUOTE
from k2.model.arrow import decimal_array
from k2.model.values import canonical_instrument, quote_currency, to_unscaled
from k2.sources.files.columns import const_strings, epoch_to_micros, flag_list, string_map, timestamps_us
from k2.sources.files.layout import (
    FileFormat,
    ImportOptions,
    Layout,
    check_asset_class,
    check_header,
    synthetic_ids,
)
from k2.sources.files.parse import Col, Parsed
from k2.sources.files.source import FileImportError, Sniff

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


_EIGHT = Decimal("0.00000001")


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


def _per_value(array: pa.Array, fn: Any) -> pa.Array:
    """Apply ``fn`` to each distinct value of a (low-cardinality) string column."""
    encoded = (
        pc.dictionary_encode(array).combine_chunks()
        if isinstance(array, pa.ChunkedArray)
        else pc.dictionary_encode(array)
    )
    mapped = pa.array([fn(v) for v in encoded.dictionary.to_pylist()], pa.string())
    return pc.take(mapped, encoded.indices)


class _Tardis(FileFormat):
    expected: list[Col] = []

    @property
    def parquet_columns(self) -> list[str] | None:
        return [c.name for c in self.expected]

    def layout(self, sniff: Sniff, source_file: str, options: ImportOptions, import_us: int) -> Layout:
        check_header(sniff.first, [c.name for c in self.expected], source_file)
        check_asset_class(options.asset_class)
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
            synthetic = synthetic_ids(times, ident["symbol"], layout)
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
            "update_id": pa.array(synthetic_ids(local, ident["symbol"], layout), pa.int64()),
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
