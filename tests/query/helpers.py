"""Test data for the query layer: real Binance trades and quotes mapped to canonical rows by the tests' own code.

The mapping here is deliberately independent of K2's importers (another stage builds ``k2 import``).
"""

from __future__ import annotations

import csv
import gzip
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa

from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.lake.writer import append
from k2.model import QUOTE, TRADE
from k2.model.arrow import records_to_arrow
from k2.model.values import to_unscaled

REPO = Path(__file__).resolve().parents[2]
FIRST_MINUTE_CSV = REPO / "tests" / "fixtures" / "binance" / "BTCUSDT-trades-2021-01-03.first-minute.csv"
CAPTURE = REPO / "data" / "samples" / "binance" / "spot_btcusdt_20240808.gz"


def lake_settings(root: Path, **overrides: Any) -> Settings:
    """Settings with a fresh local lake (SQLite catalog, file warehouse) and no Kafka."""
    return Settings(data_dir=root / "k2", **overrides)


def csv_rows(path: Path = FIRST_MINUTE_CSV) -> list[dict[str, str]]:
    """The Binance trade file as dicts of strings (column names from Binance's documentation)."""
    names = ["trade_id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match"]
    with path.open(newline="") as handle:
        return [dict(zip(names, line, strict=True)) for line in csv.reader(handle)]


def csv_trades(rows: list[dict[str, str]], symbol: str = "BTCUSDT", exchange: str = "binance") -> pa.Table:
    """Canonical trades from Binance trade-file rows: buyer maker -> the taker sold (SELL)."""
    records = []
    for r in rows:
        ts = int(r["time"]) * 1000
        records.append(
            {
                "exchange": exchange,
                "symbol": symbol,
                "instrument": "BTC-USDT",
                "asset_class": "crypto",
                "trade_id": int(r["trade_id"]),
                "price": to_unscaled(r["price"]),
                "quantity": to_unscaled(r["qty"]),
                "quote_quantity": to_unscaled(r["quote_qty"]),
                "side": "SELL" if r["is_buyer_maker"] == "True" else "BUY",
                "exchange_ts": ts,
                "receipt_ts": ts,
                "ingest_ts": ts,
                "source_sequence": None,
                "conditions": ["BEST_MATCH"] if r["is_best_match"] == "True" else [],
                "vendor": {},
            }
        )
    return records_to_arrow(TRADE, records)


def capture_tables(path: Path = CAPTURE, max_lines: int | None = None) -> tuple[pa.Table, pa.Table]:
    """(trades, quotes) from a raw Binance WebSocket capture: trades at exchange time ``T``; bookTicker
    quotes (which carry no event time) at the local receive time."""
    trades: list[dict[str, Any]] = []
    quotes: list[dict[str, Any]] = []
    with gzip.open(path, "rb") as handle:
        for n, line in enumerate(handle):
            if max_lines is not None and n >= max_lines:
                break
            ns, _, raw = line.strip().partition(b" ")
            obj = json.loads(raw)
            stream = obj.get("stream", "")
            d = obj.get("data", {})
            receipt = int(ns) // 1000
            base = {
                "exchange": "binance",
                "symbol": d.get("s"),
                "instrument": "BTC-USDT",
                "asset_class": "crypto",
                "vendor": {},
            }
            if stream.endswith("@trade"):
                trades.append(
                    {
                        **base,
                        "trade_id": d["t"],
                        "price": to_unscaled(d["p"]),
                        "quantity": to_unscaled(d["q"]),
                        "quote_quantity": None,
                        "side": "SELL" if d["m"] else "BUY",
                        "exchange_ts": d["T"] * 1000,
                        "receipt_ts": receipt,
                        "ingest_ts": receipt,
                        "source_sequence": None,
                        "conditions": [],
                    }
                )
            elif stream.endswith("@bookTicker"):
                quotes.append(
                    {
                        **base,
                        "update_id": d["u"],
                        "bid_price": to_unscaled(d["b"]),
                        "bid_size": to_unscaled(d["B"]),
                        "ask_price": to_unscaled(d["a"]),
                        "ask_size": to_unscaled(d["A"]),
                        "exchange_ts": receipt,
                        "receipt_ts": receipt,
                        "ingest_ts": receipt,
                    }
                )
    return records_to_arrow(TRADE, trades), records_to_arrow(QUOTE, quotes)


def load(settings: Settings, short: str, data: pa.Table, properties: dict[str, str] | None = None) -> int:
    """Append ``data`` to one of K2's tables in one commit; return the snapshot id."""
    tables = ensure_tables(load_catalog(settings), settings)
    return append(tables[short], data, short, properties)


def dec(value: Any) -> Decimal:
    """An exact Decimal of a string/Decimal value."""
    return Decimal(str(value))
