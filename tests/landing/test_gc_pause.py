"""The landing does not run Python's cyclic collector once per 700 Kafka messages (issue 15 §2).

Every consumed ``Message`` (and the header list its first ``headers()`` call builds for the lineage id) is
an object the cyclic collector tracks; with the collector on, ``Consumer.consume`` and the header read
triggered a collection every ~700 of them, and the older generations re-scanned every buffered message
(measured: ~1 us per message in ``consume`` and ~2 us in the header read; see k2.landing.gcpause). Checked
on a real broker and catalog: while a landing drains 30,000 trades, the collections that start inside
``consume()`` or inside the lineage header read are counted (gc.callbacks); before the pause there were
over a hundred, now none. Nor does one start while a batch is buffered (``CollectorHold`` in ``run``: the
collection that is due runs once the flush has freed the batch). The rows landed are checked too. No timing.
"""

from __future__ import annotations

import gc
from typing import Any

from k2.bus import MarketDataProducer, topic_name
from k2.config import Settings
from k2.landing import LandingConsumer
from k2.landing import batch as batch_module
from k2.model import TRADE
from tests.landing.helpers import make_trades

MESSAGES = 30_000


class _Counting:
    """Wraps the landing's Kafka consumer: counts collections that start during its ``consume()``."""

    def __init__(self, consumer: Any, inside: list[bool]) -> None:
        self._consumer, self._inside = consumer, inside

    def consume(self, *args: Any, **kwargs: Any) -> Any:
        self._inside[0] = True
        try:
            return self._consumer.consume(*args, **kwargs)
        finally:
            self._inside[0] = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


def test_no_cyclic_collection_runs_inside_consume_the_header_read_or_while_buffered(
    settings: Settings, unique: str, monkeypatch: Any
) -> None:
    settings = settings.model_copy(
        update={
            "consumer_group": f"g-{unique}",
            "landing_commit_rows": 10_000,
            "consumer_session_timeout_ms": 1000,
        }
    )
    topic = topic_name("crypto", "trades", f"gc{unique}")
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, make_trades("BTCUSDT", 1, MESSAGES, exchange=f"gc{unique}"))
    landing = LandingConsumer(settings, topics=[topic])
    inside = [False]
    landing.consumer = _Counting(landing.consumer, inside)  # type: ignore[assignment]
    original_ids = batch_module.message_ids

    def counted_ids(all_headers: Any) -> Any:
        inside[0] = True
        try:
            return original_ids(all_headers)
        finally:
            inside[0] = False

    monkeypatch.setattr(batch_module, "message_ids", counted_ids)
    collections = {"inside": 0, "buffered": 0, "other": 0}

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            where = "inside" if inside[0] else "buffered" if landing._buffer.buffered_rows else "other"
            collections[where] += 1

    gc.callbacks.append(on_gc)
    try:
        stats = landing.run(idle_exit_seconds=3)
    finally:
        gc.callbacks.remove(on_gc)
    assert stats.landed == MESSAGES, f"expected {MESSAGES} rows landed, found {stats.landed}"
    assert collections["inside"] == 0, (
        f"expected no cyclic collection inside consume() or the header read, found {collections}"
    )
    assert collections["buffered"] == 0, (
        f"expected no cyclic collection while a batch is buffered (the hold), found {collections}"
    )
