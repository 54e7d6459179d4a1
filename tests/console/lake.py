"""The demo capture (data/samples/binance) written into a real lake, for the console's browser tests.

The rows are the ones ``k2 demo`` produces (``k2.sources.binance.iter_capture``), written with the lake
writer the landing service uses; quotes are deduplicated by update id as landing does. Gaps are written
as the landing service writes them: ids dropped from the capture are found with ``find_gaps`` and
recorded as ``LandingConsumer``'s gap rows.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyiceberg.table import Table

from k2.cli.demo import SAMPLES
from k2.lake.writer import append
from k2.landing.dedup import find_gaps
from k2.landing.ledger import gap_row
from k2.model import GAP, QUOTE, TRADE
from k2.model.arrow import records_to_arrow
from k2.sources.binance import iter_capture


def capture_rows(sample_dir: Path = SAMPLES) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(trades, quotes) of the demo capture in wire form, quotes unique by update id."""
    trades: list[dict[str, Any]] = []
    quotes: dict[int, dict[str, Any]] = {}
    for record_type, row, _raw in iter_capture(sorted(sample_dir.glob("spot_btcusdt_*.gz"))):
        row["ingest_ts"] = (
            row.get("ingest_ts") or row["receipt_ts"]
        )  # the landing service stamps it when it lands
        if record_type is TRADE:
            trades.append(row)
        elif record_type is QUOTE:
            quotes.setdefault(row["update_id"], row)
    return trades, list(quotes.values())


def land_capture(
    tables: dict[str, Table], drop_trade_ids: Iterable[int] = (), split_at_us: int | None = None
) -> list[dict[str, Any]]:
    """Append the capture's trades (minus ``drop_trade_ids``) and quotes; returns the trades written.

    With ``split_at_us`` the trades land in two commits (before / from that exchange time), as the landing
    service commits batch by batch, so the trades table has two snapshots to time-travel between.
    """
    dropped = set(drop_trade_ids)
    trades, quotes = capture_rows()
    kept = [t for t in trades if t["trade_id"] not in dropped]
    parts = (
        [kept]
        if split_at_us is None
        else [
            [t for t in kept if t["exchange_ts"] < split_at_us],
            [t for t in kept if t["exchange_ts"] >= split_at_us],
        ]
    )
    for part in parts:
        append(tables["trades"], records_to_arrow(TRADE, part), "trades")
    append(tables["quotes"], records_to_arrow(QUOTE, quotes), "quotes")
    return kept


def record_gaps(
    tables: dict[str, Table], trades: list[dict[str, Any]], dropped: Iterable[int]
) -> list[dict[str, Any]]:
    """Write the open gaps the landing service would record for trades whose ids ``dropped`` are missing."""
    ids = sorted(t["trade_id"] for t in trades)
    times = {t["trade_id"]: t["exchange_ts"] for t in trades}
    missing = set(dropped)
    present = [i for i in ids if i not in missing]
    detected = int(datetime.now(UTC).timestamp() * 1_000_000)
    rows = []
    for low, high in find_gaps(present[0] - 1, present):
        before, after = times.get(low - 1), times.get(high + 1)
        rows.append(gap_row("binance", "BTCUSDT", "trades", low, high, detected, "open", before, after))
    append(tables["gaps"], records_to_arrow(GAP, rows), "gaps")
    time.sleep(0.01)
    return rows


def land_book(tables: dict[str, Table], sample_dir: Path = SAMPLES) -> int:
    """Append the capture's depth (REST snapshot + diff events, parsed by the import's own reader) to
    ``book_deltas``, as ``k2 demo`` lands it; returns the rows written."""
    from k2.model import BOOK_DELTA, RecordType
    from k2.sources.binance import iter_capture_lines
    from k2.sources.binance_capture import CaptureReader

    rows: list[dict[str, Any]] = []

    def emit(record: RecordType, row: dict[str, Any]) -> None:
        if record is BOOK_DELTA:
            rows.append({**row, "ingest_ts": row["receipt_ts"]})

    def reject(*bad: Any) -> None:
        raise AssertionError(f"expected the demo capture's depth to parse, found {bad[2]}: {bad[3]}")

    reader = CaptureReader(emit, reject)
    for ns, raw in iter_capture_lines(sorted(sample_dir.glob("spot_btcusdt_*.gz"))):
        if b"@bookTicker" not in raw[:48]:
            reader.feed(ns, raw, "capture")
    reader.finish()
    append(tables["book_deltas"], records_to_arrow(BOOK_DELTA, rows), "book_deltas")
    return len(rows)
