"""What the fake exchange replays: captured venue messages, loaded into :class:`CaptureMessage` s.

Binance spot captures are ``<local_receive_ns> <json>`` lines of the combined stream (plus REST depth
snapshot lines, which are never replayed but serve ``GET /api/v3/depth``); Coinbase captures are
cryptofeed raw files. The default Binance captures and exchange-info document are K2's package data
(:mod:`k2.sources.samples`), so an installed K2 serves them without a git checkout.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from k2.sources import binance as binance_capture
from k2.sources import coinbase as coinbase_capture
from k2.sources import samples

# Package data (k2.sources.samples), so an installed K2 serves them without a git checkout.
DEFAULT_BINANCE_CAPTURES = tuple(samples.binance_captures())
# Constructed following Binance's documented exchangeInfo layout (not captured); see tests/fixtures/README.md.
DEFAULT_EXCHANGE_INFO = samples.binance_exchange_info()
_COINBASE_CHANNELS = {
    "match": "matches",
    "last_match": "matches",
    "ticker": "ticker",
    "l2update": "level2",
    "snapshot": "level2",
    "heartbeat": "heartbeat",
}


@dataclass(frozen=True, slots=True)
class CaptureMessage:
    """One replayable message: receive time, channel, symbol, kind, the exact captured text, trade id."""

    ns: int
    channel: str
    symbol: str
    kind: str
    text: str
    trade_id: int | None
    payload: dict[str, Any] | None  # trade payload kept for the REST API


def load_binance(paths: Iterable[str | Path]) -> list[CaptureMessage]:
    """Combined-stream messages of Binance captures (the REST snapshot line is dropped).

    Example::

        messages = load_binance(["spot_btcusdt_20240808.gz", "spot_btcusdt_20240809.gz"])  # 99,573
    """
    out: list[CaptureMessage] = []
    for ns, raw in binance_capture.iter_capture_lines(list(paths)):
        obj = orjson.loads(raw)
        stream = obj.get("stream") if isinstance(obj, dict) else None
        if stream is None:
            continue
        data = obj.get("data") or {}
        prefix, _, kind = stream.partition("@")
        is_trade = kind in ("trade", "aggTrade")
        ident = data.get("t" if kind == "trade" else "a") if is_trade else None
        out.append(
            CaptureMessage(ns, stream, prefix.upper(), kind, raw.decode(), ident, data if is_trade else None)
        )
    return out


def load_binance_depth_snapshots(paths: Iterable[str | Path]) -> dict[str, dict[str, Any]]:
    """The REST depth snapshot lines of Binance captures, by the symbol of the depth events around them.

    Example::

        load_binance_depth_snapshots(["spot_btcusdt_20240808.gz"])["BTCUSDT"]["lastUpdateId"]  # 50093239218
    """
    out: dict[str, dict[str, Any]] = {}
    waiting: list[dict[str, Any]] = []
    for _, raw in binance_capture.iter_capture_lines(list(paths)):
        if raw.startswith(b'{"lastUpdateId"'):
            waiting.append(orjson.loads(raw))
        elif waiting and b"@depth" in raw[:48]:
            symbol = orjson.loads(raw)["data"]["s"]
            out.setdefault(symbol, waiting[0])
            waiting = []
    return out


def load_coinbase(path: str | Path) -> list[CaptureMessage]:
    """Received messages of a cryptofeed Coinbase capture (its own ``subscriptions`` replies dropped).

    Example::

        messages = load_coinbase("cryptofeed-coinbase-2021-04-17.raw.txt")
    """
    out: list[CaptureMessage] = []
    for ns, raw in coinbase_capture.iter_capture_lines(path):
        obj = orjson.loads(raw)
        kind = obj.get("type", "") if isinstance(obj, dict) else ""
        if kind == "subscriptions" or kind not in _COINBASE_CHANNELS:
            continue
        is_trade = kind in ("match", "last_match")
        out.append(
            CaptureMessage(
                ns,
                _COINBASE_CHANNELS[kind],
                str(obj.get("product_id", "")),
                kind,
                raw.decode(),
                obj.get("trade_id") if is_trade else None,
                obj if is_trade else None,
            )
        )
    return out
