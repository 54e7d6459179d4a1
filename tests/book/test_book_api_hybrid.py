"""``GET /v1/book`` reads depth rows still in Kafka (``include_recent``, default as for trades) and says
when that read was cut, with the same fields and headers as ``/v1/trades`` (real broker, registry, landing
and uvicorn server)."""

from __future__ import annotations

import json

import httpx

from k2.api.keys import KeyStore
from k2.bus.producer import MarketDataProducer
from k2.bus.topics import topic_name
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.landing.consumer import LandingConsumer
from k2.model import BOOK_DELTA
from k2.model.values import to_unscaled
from tests.api.helpers import serve
from tests.book.capture import exchange_deltas, top_levels
from tests.support.landing import land_messages


def _levels(body: dict[str, object]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    return tuple(  # type: ignore[return-value]
        [(to_unscaled(level["price"]), to_unscaled(level["size"])) for level in body[side]]  # type: ignore[index,attr-defined]
        for side in ("bids", "asks")
    )


def test_book_endpoint_reads_kafka_and_says_when_cut(settings: Settings, unique: str) -> None:
    settings = settings.model_copy(update={"consumer_group": f"g-{unique}", "api_rate_limit_burst": 10_000})
    exchange = f"ba{unique}"
    rows = exchange_deltas(exchange, 20)
    ends = [i + 1 for i, r in enumerate(rows) if r["is_event_end"]]
    landed, later = rows[: ends[len(ends) // 2]], rows[ends[len(ends) // 2] :]
    ensure_tables(load_catalog(settings), settings)
    with MarketDataProducer(settings) as producer:
        producer.send_many(BOOK_DELTA, landed)
    land_messages(LandingConsumer(settings, topics=[topic_name("crypto", "depth", exchange)]), len(landed))
    with MarketDataProducer(settings) as producer:
        producer.send_many(BOOK_DELTA, later)
    key, _ = KeyStore.from_settings(settings).create("reader", "read")
    params = {"symbol": "BTCUSDT", "exchange": exchange, "depth": 10}

    with (
        serve(settings) as server,
        httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=60) as c,
    ):
        hybrid = c.get("/v1/book", params=params)  # at = now: include_recent defaults on, as for trades
        assert hybrid.status_code == 200, hybrid.text
        body = hybrid.json()
        assert _levels(body) == top_levels(rows, 10) and body["last_update_id"] == rows[-1]["last_update_id"]
        assert body["recent_truncated"] is False and hybrid.headers["x-recent-truncated"] == "false"
        stored = c.get("/v1/book", params={**params, "include_recent": "false"}).json()
        assert _levels(stored) == top_levels(landed, 10)
        snap = stored["snapshot_id"]
        refused = c.get("/v1/book", params={**params, "include_recent": "true", "as_of": snap})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_query"

    capped = settings.model_copy(update={"query_recent_max_rows": 50})
    with (
        serve(capped) as server,
        httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=60) as c,
    ):
        cut = c.get("/v1/book", params=params)
        assert cut.status_code == 200, cut.text
        body = cut.json()
        assert body["recent_truncated"] is True and body["recent_truncated_reason"] == "max_rows"
        assert body["recent_stopped_at"] and body["partial"] is True
        assert _levels(body) == top_levels(landed + later[:50], 10)
        assert cut.headers["x-recent-truncated"] == "true"
        assert cut.headers["x-recent-truncated-reason"] == "max_rows"
        assert json.loads(cut.headers["x-recent-stopped-at"]) == body["recent_stopped_at"]
        assert cut.headers["x-partial"] == "true"
