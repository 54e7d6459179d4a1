"""Cryptofeed raw Coinbase captures (``<epoch seconds>: <json>`` received lines) read into wire-form rows."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from k2.model import QUOTE, TRADE, RecordType
from k2.sources.coinbase.parse import parse_match, parse_ticker
from k2.sources.live import (
    MalformedMessage,
)


def iter_capture_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """``(receive time ns, raw JSON)`` for each *received* line of a cryptofeed raw capture.

    Line 1 is ``<url> <-> <connect ts>``, sent messages are ``<url> <- <ts>: <json>`` (skipped),
    received ones ``<epoch seconds>: <json>``; the seconds are converted exactly (Decimal).

    Example::

        ns, raw = next(iter_capture_lines("cryptofeed-coinbase-2021-04-17.raw.txt"))
    """
    with Path(path).open("rb") as handle:
        for lineno, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            head, sep, raw = line.partition(b": ")
            if not sep or b" " in head:
                continue  # connection header or an outgoing message
            try:
                ns = int(Decimal(head.decode()) * 1_000_000_000)
            except ArithmeticError:
                raise ValueError(
                    f"{path}:{lineno}: expected '<epoch seconds>: <json>', found {line[:80]!r}"
                ) from None
            yield ns, raw


def iter_capture(
    path: str | Path, types: Iterable[str] = ("match", "last_match", "ticker")
) -> Iterator[tuple[RecordType, dict[str, Any], dict[str, Any]]]:
    """``(TRADE|QUOTE, wire-form row, raw message)`` per match/ticker of a capture (receipt time from the file).

    Example::

        trades = [row for record, row, _ in iter_capture("cryptofeed-coinbase-2021-04-17.raw.txt") if record is TRADE]
    """
    wanted = frozenset(types)
    for ns, raw in iter_capture_lines(path):
        msg = orjson.loads(raw)
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind not in wanted:
            continue
        try:
            if kind == "ticker":
                yield QUOTE, parse_ticker(msg, ns // 1000), msg
            else:
                yield TRADE, parse_match(msg, ns // 1000), msg
        except MalformedMessage as exc:
            raise ValueError(f"{path}: message received at {ns} ns: {exc}") from None
