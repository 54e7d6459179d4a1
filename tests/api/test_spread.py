"""/v1/spread: spread statistics over HTTP, checked against the seeded quotes computed here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tests.api.conftest import Api
from tests.api.helpers import assert_error, quotes_table
from tests.landing.helpers import BASE_TS

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _iso(micros: int) -> str:
    return (EPOCH + timedelta(microseconds=micros)).isoformat().replace("+00:00", "Z")


def test_spread_statistics_match_the_seeded_quotes(api: Api) -> None:
    # The same quotes the fixture seeded (tests/api/helpers.seed): 2,000 BTCUSDT quotes, 3 ms apart.
    quotes = [q for q in quotes_table("BTCUSDT", 2_000_000, 2_000).to_pylist()]
    start, end = BASE_TS + 300_000, BASE_TS + 4_500_000  # a window strictly inside the quotes
    inside = [q for q in quotes if start <= (q["exchange_ts"] - EPOCH) // timedelta(microseconds=1) < end]
    spreads = [q["ask_price"] - q["bid_price"] for q in inside]
    params = {"symbol": "BTCUSDT", "start": _iso(start), "end": _iso(end)}
    with api.client(api.read_key) as c:
        response = c.get("/v1/spread", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["row_count"] == 1 and set(body["snapshot_ids"]) == {"quotes"}
        row = body["data"][0]
        assert (row["exchange"], row["symbol"], row["quote_count"]) == ("binance", "BTCUSDT", len(inside))
        assert Decimal(row["min_spread"]) == min(spreads) and Decimal(row["max_spread"]) == max(spreads)
        assert abs(row["mean_spread"] - float(sum(spreads) / len(spreads))) < 1e-9
        assert row["crossed_count"] == sum(1 for s in spreads if s < 0)
        assert row["locked_count"] == sum(1 for s in spreads if s == 0)
        # Pinned to the quotes snapshot it read: the same answer.
        pinned = c.get("/v1/spread", params={**params, "as_of": body["snapshot_ids"]["quotes"]})
        assert pinned.status_code == 200 and pinned.json()["data"] == body["data"]
        # Conventions shared with the other data endpoints.
        assert c.get("/v1/spread", params={**params, "format": "csv"}).text.count("\n") == 2
        assert_error(
            c.get("/v1/spread", params={**params, "symbol": "ETHUSDT"}), 404, "unknown_symbol"
        )  # trades only
        assert_error(
            c.get("/v1/spread", params={"symbol": "BTCUSDT", "start": _iso(start)}), 422, "invalid_parameter"
        )
        assert_error(
            c.get("/v1/spread", params={**params, "start": _iso(end), "end": _iso(start)}),
            400,
            "invalid_range",
        )
    with api.client() as anonymous:
        assert_error(anonymous.get("/v1/spread", params=params), 401, "unauthorized")
    with api.client(api.read_key) as c:
        spec = c.get("/openapi.json").json()
    operation = spec["paths"]["/v1/spread"]["get"]
    assert {"ApiKeyAuth": []} in operation["security"]
    assert {"200", "400", "401", "404", "422", "504"} <= set(operation["responses"])
