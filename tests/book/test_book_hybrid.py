"""Hybrid ``book()`` (issue 14 item 5): depth rows still in Kafka are applied on top of the landed ones,
with the same honesty flags as the rest of the hybrid read (``k2.query.recent``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from k2.bus.producer import MarketDataProducer
from k2.bus.topics import topic_name
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.landing.consumer import LandingConsumer
from k2.model import BOOK_DELTA
from k2.model.values import to_unscaled
from k2.query.client import Client
from tests.book.capture import exchange_deltas, top_levels
from tests.sources.helpers import REPO
from tests.support.landing import land_messages


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
    rows = exchange_deltas(exchange, 20)
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
        assert _sides(stored_only) == top_levels(landed, 10) and stored_only.recent_rows == 0
        hybrid = client.book("BTCUSDT", depth=10, exchange=exchange)  # at = now: include_recent defaults on
        assert _sides(hybrid) == top_levels(rows, 10)
        assert hybrid.recent_rows == len(later) and not hybrid.recent_truncated
        assert hybrid.last_update_id == rows[-1]["last_update_id"]
    # A Kafka read cut short says so, and the book is the one through the rows read.
    with Client(settings.model_copy(update={"query_recent_max_rows": 50})) as capped:
        cut = capped.book("BTCUSDT", depth=10, exchange=exchange)
        assert cut.recent_truncated and cut.recent_truncated_reason == "max_rows"
        assert cut.recent_stopped_at and cut.recent_rows == 50
        assert _sides(cut) == top_levels(landed + later[:50], 10)
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
