"""Binance capture files (``<local_receive_ns> <json>`` lines, gzip or plain) read into wire-form rows.

Hazard: a capture's REST depth snapshot lines name no symbol; :func:`iter_capture` skips them (the
depth sync and the fake exchange read them through :func:`iter_capture_lines`).
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from k2.model import QUOTE, TRADE, RecordType
from k2.sources.binance.markets import SPOT, BinanceMarket
from k2.sources.binance.parse import parse_agg_trade, parse_book_ticker, parse_trade
from k2.sources.live import (
    MalformedMessage,
)


def _paths(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(paths, (str, Path)):
        return [Path(paths)]
    return [Path(p) for p in paths]


def iter_capture_lines(paths: str | Path | Iterable[str | Path]) -> Iterator[tuple[int, bytes]]:
    """``(local_receive_ns, raw JSON bytes)`` per line of capture files (gzip or plain), in file order.

    Example::

        ns, raw = next(iter_capture_lines("spot_btcusdt_20240808.gz"))
    """
    for path in _paths(paths):
        opener: Any = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            for lineno, line in enumerate(handle, 1):
                line = line.strip()
                if not line:
                    continue
                ns, sep, raw = line.partition(b" ")
                if not sep or not ns.isdigit():
                    raise ValueError(
                        f"{path}:{lineno}: expected '<local_receive_ns> <json>', found {line[:80]!r}"
                    )
                yield int(ns), raw


def iter_capture(
    paths: str | Path | Iterable[str | Path],
    kinds: Iterable[str] = ("trade", "bookTicker"),
    market: BinanceMarket = SPOT,
) -> Iterator[tuple[RecordType, dict[str, Any], dict[str, Any]]]:
    """``(TRADE|QUOTE, wire-form row, raw payload)`` for each trade/bookTicker message of capture files.

    ``receipt_ts`` is the capture's local receive time (ns -> µs). The REST depth snapshot line and
    streams not in ``kinds`` are skipped; a broken line raises ValueError naming file and message.

    Example::

        for record, row, raw in iter_capture(["spot_btcusdt_20240808.gz", "spot_btcusdt_20240809.gz"]):
            producer.send(record, row)
    """
    wanted = frozenset(kinds)
    loads = orjson.loads
    for ns, raw in iter_capture_lines(paths):
        obj = loads(raw)
        stream = obj.get("stream") if isinstance(obj, dict) else None
        if stream is None:
            continue  # the REST depth snapshot (lastUpdateId...)
        kind = stream.partition("@")[2]
        if kind not in wanted:
            continue
        data = obj["data"]
        receipt = ns // 1000
        try:
            if kind == "trade":
                yield TRADE, parse_trade(data, receipt, market), data
            elif kind == "aggTrade":
                yield TRADE, parse_agg_trade(data, receipt, market), data
            elif kind == "bookTicker":
                yield QUOTE, parse_book_ticker(data, receipt, market), data
        except MalformedMessage as exc:
            raise ValueError(f"capture message at receive time {ns} ({stream}): {exc}") from None


def iter_capture_trades(
    paths: str | Path | Iterable[str | Path], market: BinanceMarket = SPOT
) -> Iterator[dict[str, Any]]:
    """Wire-form TRADE rows of capture files, in capture order.

    Example::

        ids = [row["trade_id"] for row in iter_capture_trades("spot_btcusdt_20240808.gz")]
    """
    for _, row, _ in iter_capture(paths, ("trade", "aggTrade"), market):
        yield row
