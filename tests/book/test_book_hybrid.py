"""Hybrid ``book()`` (issue 14 item 5): depth rows still in Kafka are applied on top of the landed ones,
with the same honesty flags as the rest of the hybrid read (``k2.query.recent``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from k2.bus.producer import MarketDataProducer
from k2.bus.topics import topic_name
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.landing.consumer import LandingConsumer
from k2.model import BOOK_DELTA, RecordType
from k2.model.book import OrderBook
from k2.model.values import to_unscaled
from k2.query.client import Client
from k2.sources.binance import iter_capture_lines
from k2.sources.binance_capture import CaptureReader
from tests.sources.helpers import BINANCE_CAPTURES, REPO
from tests.support.landing import land_messages


def _deltas(exchange: str, seconds: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []

    def emit(record: RecordType, row: dict[str, object]) -> None:
        if record is BOOK_DELTA:
            rows.append({**row, "exchange": exchange, "ingest_ts": row["receipt_ts"]})

    reader = CaptureReader(emit, lambda *bad: pytest.fail(f"unexpected reject {bad}"))
    for ns, raw in iter_capture_lines(BINANCE_CAPTURES[0]):
        if ns > 1_723_161_253_937_085_768 + seconds * 10**9:
            break
        reader.feed(ns, raw, "capture")
    return rows


def _top(rows: list[dict[str, object]], depth: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    book = OrderBook()
    book.apply_rows(rows)  # type: ignore[arg-type]
    return book.top("BID", depth), book.top("ASK", depth)


def _sides(book: object) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    return tuple(  # type: ignore[return-value]
        [(to_unscaled(p), to_unscaled(q)) for p, q in book.side(side)]  # type: ignore[attr-defined]
        for side in ("BID", "ASK")
    )


def test_book_applies_depth_still_in_kafka_and_says_when_the_read_was_cut(
    settings: Settings, unique: str
) -> None:
    # Its own consumer group: on the session's Tansu, a member that left the default group mid-join in an
    # earlier test holds that group's next join for minutes (this test then landed nothing).
    settings = settings.model_copy(update={"consumer_group": f"g-{unique}"})
    exchange = f"bk{unique}"
    rows = _deltas(exchange, 20)
    ends = [i + 1 for i, r in enumerate(rows) if r["is_event_end"]]
    landed, later = rows[: ends[len(ends) // 2]], rows[ends[len(ends) // 2] :]
    ensure_tables(load_catalog(settings), settings)
    with MarketDataProducer(settings) as producer:
        producer.send_many(BOOK_DELTA, landed)
    topic = topic_name("crypto", "depth", exchange)
    land_messages(LandingConsumer(settings, topics=[topic]), len(landed))
    with MarketDataProducer(settings) as producer:
        producer.send_many(BOOK_DELTA, later)

    with Client(settings) as client:
        stored_only = client.book("BTCUSDT", depth=10, exchange=exchange, include_recent=False)
        assert _sides(stored_only) == _top(landed, 10) and stored_only.recent_rows == 0
        hybrid = client.book("BTCUSDT", depth=10, exchange=exchange)  # at = now: include_recent defaults on
        assert _sides(hybrid) == _top(rows, 10)
        assert hybrid.recent_rows == len(later) and not hybrid.recent_truncated
        assert hybrid.last_update_id == rows[-1]["last_update_id"]
    # A Kafka read cut short says so, and the book is the one through the rows read.
    with Client(settings.model_copy(update={"query_recent_max_rows": 50})) as capped:
        cut = capped.book("BTCUSDT", depth=10, exchange=exchange)
        assert cut.recent_truncated and cut.recent_truncated_reason == "max_rows"
        assert cut.recent_stopped_at and cut.recent_rows == 50
        assert _sides(cut) == _top(landed + later[:50], 10)
    # k2 book: the same hybrid read, the cut said on stderr.
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src"),
        "K2_DATA_DIR": str(settings.data_dir),
        "K2_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "K2_SCHEMA_REGISTRY_URL": str(settings.schema_registry_url),
        "K2_QUERY_RECENT_MAX_ROWS": "50",
    }
    command = [sys.executable, "-m", "k2.cli", "book", "BTCUSDT", "--exchange", exchange, "--format", "json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=True)
    assert "partial result" in done.stderr and "max_rows" in done.stderr
    assert json.loads(done.stdout)["last_update_id"] == cut.last_update_id
