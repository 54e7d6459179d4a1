"""Real-shaped trade generation and table read-back helpers for landing tests."""

from __future__ import annotations

import random
from typing import Any

import pyarrow as pa
from pyiceberg.table import Table

from k2.model.values import to_unscaled

BASE_TS = 1_723_161_255_342_000  # 2024-08-08T23:54:15.342Z, the demo capture's first trade
# Ten liquid Binance spot symbols: the crash test's and the landing benchmarks' streams.
TEN_SYMBOLS = [
    "BTCUSDT",
    "ETHUSDT",
    "SOLUSDT",
    "BNBUSDT",
    "XRPUSDT",
    "ADAUSDT",
    "DOGEUSDT",
    "LTCUSDT",
    "DOTUSDT",
    "TRXUSDT",
]


def make_trades(
    symbol: str, first_id: int, count: int, exchange: str = "binance", seed: int = 7
) -> list[dict[str, Any]]:
    """Wire-form trades with contiguous ids and a random-walk price (prices with 2 decimals, like BTCUSDT)."""
    rng = random.Random(seed + first_id)
    price = 61_837.63
    rows = []
    for i in range(count):
        price = max(1.0, price + rng.choice((-0.01, 0.0, 0.01)) * rng.randint(0, 50))
        qty = f"{rng.randint(1, 200_000) / 100_000:.5f}"
        ts = BASE_TS + i * 2_000
        rows.append(
            {
                "exchange": exchange,
                "symbol": symbol,
                "instrument": symbol[:-4] + "-" + symbol[-4:],
                "asset_class": "crypto",
                "trade_id": first_id + i,
                "price": to_unscaled(f"{price:.2f}"),
                "quantity": to_unscaled(qty),
                "quote_quantity": None,
                "side": "SELL" if rng.random() < 0.5 else "BUY",
                "exchange_ts": ts,
                "receipt_ts": ts + 1_270_000,
                "ingest_ts": None,
                "source_sequence": first_id + i,
                "conditions": ["BEST_MATCH"],
                "vendor": {},
            }
        )
    return rows


def table_keys(table: Table) -> list[tuple[str, str, int]]:
    """All (exchange, symbol, trade_id) in the table's current snapshot, sorted (duplicates kept)."""
    table.refresh()
    if table.current_snapshot() is None:
        return []
    data: pa.Table = table.scan(selected_fields=("exchange", "symbol", "trade_id")).to_arrow()
    return sorted(
        zip(
            data["exchange"].to_pylist(),
            data["symbol"].to_pylist(),
            data["trade_id"].to_pylist(),
            strict=True,
        )
    )
