"""include_recent over HTTP: trades still in Kafka are returned when the result fits in one page; a
multi-page walk reads the pinned table snapshot only and says so (real broker and registry)."""

from __future__ import annotations

from typing import Any

from k2.bus.producer import MarketDataProducer
from k2.model import TRADE
from k2.model.values import now_micros
from tests.api.conftest import Api
from tests.support.factories import wire_trade


def _trade(exchange: str, trade_id: int, ts: int) -> dict[str, Any]:
    return wire_trade(exchange, trade_id, ts)


def test_include_recent_over_http(api: Api, unique: str) -> None:
    exchange = f"ax{unique}"
    base = now_micros() - 5_000_000
    with MarketDataProducer(api.settings) as producer:
        for i in range(5):
            producer.send(TRADE, _trade(exchange, 100 + i, base + i * 1000))
    with api.client(api.read_key) as c:
        params = {"symbol": "BTCUSDT", "exchange": exchange}
        one_page = c.get("/v1/trades", params=params).json()  # range ends now: include_recent defaults on
        assert [r["trade_id"] for r in one_page["data"]] == [100, 101, 102, 103, 104]
        assert one_page["recent_included"] is True and one_page["next_cursor"] is None
        off = c.get("/v1/trades", params={**params, "include_recent": "false"})
        assert off.status_code == 404  # not in the table yet
        bars = c.get("/v1/bars", params={**params, "interval": "1d"}).json()
        assert sum(b["trade_count"] for b in bars["data"]) == 5
        # More than one page: the walk reads the pinned snapshot only, where this exchange has no rows yet.
        walk = c.get("/v1/trades", params={**params, "limit": 2}).json()
        assert walk["recent_included"] is False and walk["data"] == [] and walk["next_cursor"] is None
        # Explicit include_recent with as_of is refused.
        snap = c.get("/v1/snapshots").json()["data"][-1]["snapshot_id"]
        refused = c.get("/v1/trades", params={**params, "include_recent": "true", "as_of": snap})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_query"
