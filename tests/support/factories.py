"""Row factories shared by the tests: canonical records as Arrow tables, made from plain numbers."""

from __future__ import annotations

import decimal
from typing import Any

import pyarrow as pa

from k2.model import TRADE
from k2.model.values import to_unscaled

DAY_US = 86_400_000_000
BASE_TS = 1_723_161_255_342_000  # 2024-08-08T23:54:15.342Z


def trade_batch(
    first_id: int, count: int, *, symbol: str = "BTCUSDT", start_us: int = BASE_TS, step_us: int = 1_000
) -> pa.Table:
    """``count`` Binance trades of ``symbol`` with ids from ``first_id``, one every ``step_us`` from ``start_us``.

    Prices and quantities vary with the id so that any mix-up between rows shows in a comparison.
    """
    rows = []
    for k in range(count):
        ident = first_id + k
        ts = start_us + k * step_us
        rows.append(
            {
                "exchange": "binance",
                "symbol": symbol,
                "instrument": symbol[:-4] + "-USDT",
                "asset_class": "crypto",
                "trade_id": ident,
                "price": decimal.Decimal(f"{100 + (ident % 97) / 100:.2f}"),
                "quantity": decimal.Decimal(f"0.{ident % 1000 + 1:05d}"),
                "quote_quantity": None,
                "side": "BUY" if ident % 2 else "SELL",
                "exchange_ts": ts,
                "receipt_ts": ts + 1_000,
                "ingest_ts": ts + 2_000,
                "source_sequence": ident,
                "conditions": ["BEST_MATCH"],
                "vendor": [("m", str(ident % 3))],
            }
        )
    return pa.Table.from_pylist(rows, schema=TRADE.arrow_schema())


def wire_trade(
    exchange: str,
    trade_id: int,
    ts: int,
    *,
    symbol: str = "BTCUSDT",
    instrument: str = "BTC-USDT",
    price: str = "61837.63",
    quantity: str = "0.02",
    side: str = "BUY",
) -> dict[str, Any]:
    """One trade in wire form (what ``MarketDataProducer.send`` takes), id ``trade_id`` at ``ts`` µs."""
    return {
        "exchange": exchange,
        "symbol": symbol,
        "instrument": instrument,
        "asset_class": "crypto",
        "trade_id": trade_id,
        "price": to_unscaled(price),
        "quantity": to_unscaled(quantity),
        "quote_quantity": None,
        "side": side,
        "exchange_ts": ts,
        "receipt_ts": ts,
        "ingest_ts": None,
        "source_sequence": trade_id,
        "conditions": [],
        "vendor": {},
    }


def row_set(data: pa.Table) -> list[tuple[str, ...]]:
    """Every row, all columns, as sortable strings (duplicates kept): equal sets mean bit-exact rows."""
    columns = data.column_names
    return sorted(tuple(str(row[c]) for c in columns) for row in data.to_pylist())


def wire_quote(exchange: str, update_id: int, ts: int) -> dict[str, Any]:
    """A BTCUSDT best bid/offer in wire form (unscaled decimals) at ``ts`` (exchange and receipt time, micros)."""
    return {
        "exchange": exchange,
        "symbol": "BTCUSDT",
        "instrument": "BTC-USDT",
        "asset_class": "crypto",
        "update_id": update_id,
        "bid_price": to_unscaled("61837.63"),
        "bid_size": to_unscaled("3.78826"),
        "ask_price": to_unscaled("61837.64"),
        "ask_size": to_unscaled("1.54698"),
        "exchange_ts": ts,
        "receipt_ts": ts,
        "ingest_ts": None,
        "vendor": {},
    }


KLINE_DAY_US = 1_723_075_200_000_000  # 2024-08-08T00:00:00Z


def kline_row(
    symbol: str,
    minute: int,
    close: str,
    *,
    volume: str = "3.25",
    quote_volume: str | None = None,
    trade_count: int = 7,
    taker_buy_base: str | None = None,
) -> dict[str, Any]:
    """A Binance 1m kline of ``symbol`` opening ``minute`` minutes into 2024-08-08 (UTC), closing at ``close``."""
    open_us = KLINE_DAY_US + minute * 60_000_000
    return {
        "exchange": "binance",
        "symbol": symbol,
        "instrument": symbol[:-4] + "-USDT",
        "asset_class": "crypto",
        "interval": "1m",
        "open_time": open_us,
        "close_time": open_us + 59_999_000,
        "open": to_unscaled("1"),
        "high": to_unscaled("2"),
        "low": to_unscaled("0.5"),
        "close": to_unscaled(close),
        "volume": to_unscaled(volume),
        "quote_volume": None if quote_volume is None else to_unscaled(quote_volume),
        "trade_count": trade_count,
        "taker_buy_base": None if taker_buy_base is None else to_unscaled(taker_buy_base),
        "taker_buy_quote": None,
        "receipt_ts": open_us,
        "vendor": {},
    }
