"""Limits: per-key rate limiting (429 + Retry-After), rows, time range, body size, request timeout."""

from __future__ import annotations

import time

import httpx
import pytest

from k2.api.keys import KeyStore
from k2.lake.catalog import ensure_tables, load_catalog
from tests.api.conftest import Api, api_settings
from tests.api.helpers import assert_error, seed, serve

TRADES = "/v1/trades?symbol=BTCUSDT&limit=3&include_recent=false"


def test_rate_limit_per_key(tmp_path, broker: str, schema_registry: str, api: Api) -> None:  # type: ignore[no-untyped-def]
    settings = api_settings(
        tmp_path / "k2", broker, schema_registry, api_rate_limit_per_second=0.5, api_rate_limit_burst=3
    )
    ensure_tables(load_catalog(settings), settings)
    store = KeyStore.from_settings(settings)
    key_a, _ = store.create("a", "read")
    key_b, _ = store.create("b", "read")
    with serve(settings) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        # Warm the query engine with another key first: the first query of a process takes seconds, long enough
        # to refill a token at 0.5/s and make the burst below look one larger.
        assert c.get("/v1/symbols", headers={"X-API-Key": key_b}).status_code == 200
        statuses = [c.get("/v1/symbols", headers={"X-API-Key": key_a}).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        refused = c.get("/v1/symbols", headers={"X-API-Key": key_a})
        error = assert_error(refused, 429, "rate_limited")
        retry_after = int(refused.headers["retry-after"])
        assert 1 <= retry_after <= 2  # one token at 0.5/s
        assert error["details"]["retry_after_seconds"] == retry_after  # type: ignore[index]
        # Another key has its own bucket.
        assert c.get("/v1/symbols", headers={"X-API-Key": key_b}).status_code == 200
        time.sleep(retry_after)
        assert c.get("/v1/symbols", headers={"X-API-Key": key_a}).status_code == 200
        metrics = c.get("/metrics").text
        assert "k2_api_rate_limited_total" in metrics


def test_row_limits(api: Api) -> None:
    maximum = api.settings.query_max_rows
    with api.client(api.read_key) as c:
        error = assert_error(
            c.get("/v1/trades", params={"symbol": "BTCUSDT", "limit": maximum + 1}), 422, "invalid_parameter"
        )
        assert "limit" in str(error["message"])
        ok = c.get("/v1/trades", params={"symbol": "BTCUSDT", "limit": maximum, "include_recent": "false"})
        assert ok.status_code == 200 and ok.json()["row_count"] == api.counts["BTCUSDT"]
        # 1-second bars with empty bars filled over a day: more bars than query_max_rows.
        over = c.get(
            "/v1/bars",
            params={
                "symbol": "BTCUSDT",
                "interval": "1s",
                "fill_empty": "true",
                "start": "2024-08-08T00:00:00Z",
                "end": "2024-08-09T00:00:00Z",
            },
        )
        assert_error(over, 422, "limit_exceeded")


def test_range_limit(api: Api) -> None:
    days = api.settings.query_max_range_days
    assert days < 400
    with api.client(api.read_key) as c:
        error = assert_error(
            c.get(
                "/v1/vwap",
                params={"symbol": "BTCUSDT", "start": "2023-01-01T00:00:00Z", "end": "2024-12-31T00:00:00Z"},
            ),
            422,
            "range_too_long",
        )
        assert error["details"]["max_days"] == days  # type: ignore[index]
        assert_error(
            c.get(
                "/v1/trades",
                params={"symbol": "BTCUSDT", "start": "2024-08-09T00:00:00Z", "end": "2024-08-08T00:00:00Z"},
            ),
            400,
            "invalid_range",
        )


def test_body_size_limit(api: Api) -> None:
    with api.client(api.read_key) as c:
        big = b"x" * (api.settings.api_max_body_bytes + 1)
        assert_error(c.post("/v1/trades", content=big), 413, "payload_too_large")

        def chunks():  # type: ignore[no-untyped-def]
            for _ in range(3):
                yield b"y" * (api.settings.api_max_body_bytes // 2 + 1)

        # Chunked upload without Content-Length: counted while it is read. The route is GET-only,
        # so it never reads the body: the router answers 405 first, which is fine as long as no 5xx.
        response = c.post("/v1/trades", content=chunks())
        assert response.status_code in (405, 413)


@pytest.mark.parametrize(
    "path", ["/v1/trades?symbol=BTCUSDT&include_recent=false", "/v1/bars?symbol=BTCUSDT&include_recent=false"]
)
def test_request_timeout_is_504(tmp_path, broker: str, schema_registry: str, path: str) -> None:  # type: ignore[no-untyped-def]
    settings = api_settings(tmp_path / "k2", broker, schema_registry, api_request_timeout_seconds=0.001)
    # Rows to read: on an empty table the 404 for the symbol came back within the 1 ms once (a loaded run).
    seed(ensure_tables(load_catalog(settings), settings))
    key, _ = KeyStore.from_settings(settings).create("t", "read")
    with (
        serve(settings) as server,
        httpx.Client(base_url=server.url, timeout=30, headers={"X-API-Key": key}) as c,
    ):
        error = assert_error(c.get(path), 504, "timeout")
        assert error["details"] == {"timeout_seconds": 0.001}


def test_ready_is_503_when_the_broker_is_down(tmp_path, schema_registry: str) -> None:  # type: ignore[no-untyped-def]
    from k2.telemetry.procs import free_port

    settings = api_settings(tmp_path / "k2", f"127.0.0.1:{free_port()}", schema_registry)
    ensure_tables(load_catalog(settings), settings)
    with serve(settings) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        error = assert_error(c.get("/ready"), 503, "not_ready")
        checks = error["details"]["checks"]  # type: ignore[index]
        assert (
            checks["broker"]["ok"] is False
            and checks["catalog"]["ok"] is True
            and checks["engine"]["ok"] is True
        )
        assert c.get("/health").status_code == 200


def test_asof_tolerance_bounded_by_the_range_setting(api: Api) -> None:
    days = api.settings.query_max_range_days
    base = {"symbol": "BTCUSDT", "start": "2024-08-08T23:54:00Z", "end": "2024-08-09T00:06:00Z"}
    with api.client(api.read_key) as c:
        for huge in ("100000d", "999999999d", f"{int(days) + 1}d"):
            error = assert_error(
                c.get("/v1/asof", params={**base, "tolerance": huge}), 400, "invalid_parameter"
            )
            assert (
                f"expected a duration from 1us to {days:g} days (query_max_range_days), found '{huge}'"
                in str(error["message"])
            )
        # Longer than the old fixed 1-day cap, within the setting: answered.
        ok = c.get("/v1/asof", params={**base, "tolerance": "25h"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["row_count"] > 0


def test_timeout_interrupts_the_query_and_frees_the_connection(
    tmp_path, broker: str, schema_registry: str
) -> None:  # type: ignore[no-untyped-def]
    from tests.api.helpers import seed

    # One pooled connection: if the timed-out query kept running, the next request would wait for it.
    settings = api_settings(
        tmp_path / "k2",
        broker,
        schema_registry,
        api_request_timeout_seconds=0.5,
        query_pool_size=1,
        query_max_rows=10_000_000,
        query_max_range_days=1000,
    )
    seed(ensure_tables(load_catalog(settings), settings))
    key, _ = KeyStore.from_settings(settings).create("t", "read")
    with (
        serve(settings) as server,
        httpx.Client(base_url=server.url, timeout=30, headers={"X-API-Key": key}) as c,
    ):
        # Warm up (connection, extensions, catalog); on a busy machine the first tries may time out too.
        for _ in range(20):
            if c.get(TRADES).status_code == 200:
                break
        # Filled 1-second bars over 10 days: seconds of DuckDB work (measured 3 s idle), far beyond 0.5 s.
        slow = {
            "symbol": "BTCUSDT",
            "interval": "1s",
            "fill_empty": "true",
            "include_recent": "false",
            "start": "2024-08-01T00:00:00Z",
            "end": "2024-08-11T00:00:00Z",
        }
        assert_error(c.get("/v1/bars", params=slow), 504, "timeout")
        answered = time.perf_counter()
        pool = server.app.state.k2.client()._pool
        while pool._idle.qsize() < 1 and time.perf_counter() - answered < 5:
            time.sleep(0.005)
        freed = time.perf_counter() - answered
        assert pool._idle.qsize() == pool.created == 1, (
            "expected the interrupted query's connection back in the pool"
        )
        # Interrupted, not run to the end: the query alone takes >= 3 s idle (longer on a loaded machine),
        # an interrupt a fraction of a second even at load average 25.
        assert freed < 1.5, (
            f"expected the connection back within 1.5 s of the 504 (interrupted), found {freed:.2f} s"
        )
        ok = c.get(TRADES)
        assert ok.status_code == 200, ok.text
        assert ok.json()["row_count"] == 3
