"""Injection attempts in every string parameter: never a 5xx, never a changed result, tables intact."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api

START, END = "2024-08-08T23:00:00Z", "2024-08-09T01:00:00Z"

PAYLOADS = [
    "' OR '1'='1",
    "BTCUSDT' OR '1'='1' --",
    "BTCUSDT'; DROP TABLE trades; --",
    '"; DELETE FROM trades; --',
    "' UNION SELECT * FROM quotes --",
    "BTCUSDT) OR (1=1",
    "1; COPY trades TO '/tmp/x.csv'",
    "'; ATTACH '/tmp/evil.db' AS e; --",
    "read_csv('/etc/passwd')",
    "%' OR symbol LIKE '%",
    "${jndi:ldap://127.0.0.1/a}",
    "../../../../etc/passwd",
    "BTCUSDT\u0000",
    "\u202eBTCUSDT",
    "' OR 1=1 LIMIT 1 OFFSET 0 --",
    "*",
    "%",
]

# endpoint -> (valid parameters, string parameters to attack)
ENDPOINTS: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "/v1/trades": (
        {"symbol": "BTCUSDT", "start": START, "end": END, "limit": 5},
        ("symbol", "exchange", "cursor", "format"),
    ),
    "/v1/quotes": (
        {"symbol": "BTCUSDT", "start": START, "end": END, "limit": 5},
        ("symbol", "exchange", "cursor", "format"),
    ),
    "/v1/bars": (
        {"symbol": "BTCUSDT", "start": START, "end": END},
        ("symbol", "exchange", "interval", "kind", "size", "format"),
    ),
    "/v1/vwap": ({"symbol": "BTCUSDT", "start": START, "end": END}, ("symbol", "exchange", "as_of", "start")),
    "/v1/twap": ({"symbol": "BTCUSDT", "start": START, "end": END}, ("symbol", "exchange", "end")),
    "/v1/spread": (
        {"symbol": "BTCUSDT", "start": START, "end": END},
        ("symbol", "exchange", "as_of", "start"),
    ),
    "/v1/asof": ({"symbol": "BTCUSDT", "start": START, "end": END}, ("symbol", "exchange", "tolerance")),
    "/v1/symbols": ({}, ("exchange", "as_of")),
    "/v1/snapshots": ({"table": "trades"}, ("table", "as_of")),
    "/v1/gaps": ({}, ("status", "exchange", "symbol")),
    "/v1/replay": (
        {"start": START, "end": END, "limit": 5},
        ("table", "exchange", "symbol", "cursor", "as_of"),
    ),
    "/v1/dlq": ({"limit": 5}, ("topic",)),
}


def _rows(api: Api) -> int:
    with api.client(api.admin_key) as c:
        symbols = c.get("/v1/symbols").json()["data"]
    return sum(s["trades"] + s["quotes"] for s in symbols)


@pytest.mark.parametrize("path", sorted(ENDPOINTS))
def test_injection_in_every_string_parameter(api: Api, path: str) -> None:
    valid, attacked = ENDPOINTS[path]
    before = _rows(api)
    with api.client(api.admin_key) as c:
        baseline = c.get(path, params=valid)
        assert baseline.status_code == 200, baseline.text
        for name in attacked:
            # Each replay page runs on a fresh DuckDB connection (~0.3 s): a smaller sample keeps the suite fast.
            for payload in PAYLOADS if path != "/v1/replay" else PAYLOADS[::3]:
                response = c.get(path, params={**valid, name: payload})
                assert response.status_code < 500, (path, name, payload, response.text)
                if response.status_code == 200:
                    # Accepted only where the value is harmless data: it matched nothing.
                    assert response.json()["row_count"] == 0, (path, name, payload)
                else:
                    error = response.json()["error"]
                    assert error["code"] and error["message"]
    assert _rows(api) == before
    with api.client(api.admin_key) as c:
        assert c.get(path, params=valid).json()["row_count"] == baseline.json()["row_count"]


def test_injection_in_headers(api: Api) -> None:
    with api.client() as c:
        for payload in PAYLOADS[:8]:
            safe = payload.replace("\u0000", "").encode("utf-8").decode("latin-1")
            for headers in ({"X-API-Key": safe}, {"Authorization": f"Bearer {safe}"}, {"X-Request-ID": safe}):
                response = c.get("/v1/trades", params={"symbol": "BTCUSDT"}, headers=headers)
                assert response.status_code == 401
                assert response.headers["x-request-id"] != safe or safe.isalnum()
            accept = c.get("/health", headers={"Accept": safe})
            assert accept.status_code == 200


EXTREMES: list[tuple[str, dict[str, Any]]] = [
    ("/v1/bars", {"symbol": "BTCUSDT", "kind": "volume", "size": "99999999999999999999999999999"}),
    ("/v1/bars", {"symbol": "BTCUSDT", "kind": "volume", "size": "0.000000001"}),
    ("/v1/bars", {"symbol": "BTCUSDT", "kind": "tick", "size": "99999999999999999999999999"}),
    ("/v1/bars", {"symbol": "BTCUSDT", "interval": "99999999d"}),
    ("/v1/bars", {"symbol": "BTCUSDT", "interval": "0s"}),
    ("/v1/bars", {"symbol": "BTCUSDT", "as_of": "99999999999999999999"}),
    ("/v1/bars", {"symbol": "BTCUSDT", "as_of": "-1"}),
    ("/v1/bars", {"symbol": "BTCUSDT", "start": "0001-01-01T00:00:00Z"}),
    ("/v1/bars", {"symbol": "BTCUSDT", "end": "9999-12-31T23:59:59Z"}),
    ("/v1/asof", {"symbol": "BTCUSDT", "start": START, "end": END, "tolerance": "999999999d"}),
    ("/v1/asof", {"symbol": "BTCUSDT", "start": START, "end": END, "tolerance": "25h"}),
    ("/v1/asof", {"symbol": "BTCUSDT", "start": START, "end": END, "tolerance": "0ms"}),
    ("/v1/trades", {"symbol": "B" * 64, "limit": 1}),
    ("/v1/trades", {"symbol": "B" * 65}),
    ("/v1/replay", {"start": START, "end": END, "limit": 1, "as_of": "0"}),
]


@pytest.mark.parametrize(("path", "params"), EXTREMES)
def test_extreme_values_are_4xx_not_5xx(api: Api, path: str, params: dict[str, Any]) -> None:
    with api.client(api.read_key) as c:
        response = c.get(
            path, params={"include_recent": "false", **params} if path != "/v1/replay" else params
        )
    assert 400 <= response.status_code < 500 or response.status_code == 200, (path, params, response.text)
    if response.status_code != 200:
        assert response.json()["error"]["message"]
