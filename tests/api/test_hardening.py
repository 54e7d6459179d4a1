"""Issue 10, API items: requests without a key and /ready are rate-limited, /ready shows no internal
address, the key store (which holds the cursor secret) is owner-only, and a truncated hybrid read is said
in every response format (aggregates flagged partial)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from k2.api.app import create_app
from k2.api.keys import KeyStore
from k2.bus.producer import MarketDataProducer
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.model import TRADE
from k2.model.values import now_micros, to_unscaled
from k2.query.client import Client
from k2.telemetry.procs import free_port
from tests.api.conftest import api_settings
from tests.api.helpers import assert_error, seed, serve


def test_requests_without_a_valid_key_are_rate_limited(
    tmp_path: Path, broker: str, schema_registry: str
) -> None:
    settings = api_settings(
        tmp_path / "k2", broker, schema_registry, api_rate_limit_per_second=0.01, api_rate_limit_burst=3
    )
    ensure_tables(load_catalog(settings), settings)
    key, _ = KeyStore.from_settings(settings).create("a", "read")
    with serve(settings) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        first = [
            c.get("/v1/symbols").status_code,
            c.get("/v1/symbols", headers={"X-API-Key": "k2_bad_guess"}).status_code,
        ]
        first.append(c.get("/v1/symbols", headers={"Authorization": "Bearer nope"}).status_code)
        assert first == [401, 401, 401]
        refused = c.get("/v1/symbols")
        error = assert_error(refused, 429, "rate_limited")
        assert "without a valid key" in str(error["message"])
        assert int(refused.headers["retry-after"]) >= 1
        # A valid key has its own bucket.
        assert c.get("/v1/symbols", headers={"X-API-Key": key}).status_code == 200


def test_ready_is_rate_limited_and_names_no_internal_address(tmp_path: Path) -> None:
    dead_broker = f"127.0.0.1:{free_port()}"
    dead_catalog = f"postgresql+psycopg2://k2:secret@127.0.0.1:{free_port()}/catalog"
    settings = Settings(
        data_dir=tmp_path / "k2",
        kafka_bootstrap_servers=dead_broker,
        catalog_uri=dead_catalog,
        api_rate_limit_per_second=0.01,
        api_rate_limit_burst=2,
    )
    with serve(settings) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        response = c.get("/ready")
        assert response.status_code == 503, response.text
        text = response.text
        checks = response.json()["error"]["details"]["checks"]
        assert not checks["catalog"]["ok"] and not checks["broker"]["ok"]
        for secret in (
            "127.0.0.1",
            dead_broker.split(":")[1],
            dead_catalog.split(":")[-1].split("/")[0],
            "secret",
            str(tmp_path),
        ):
            assert secret not in text, f"/ready leaked {secret!r}: {text}"
        assert c.get("/ready").status_code == 503
        assert_error(c.get("/ready"), 429, "rate_limited")


def test_key_store_file_is_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "keys" / "api_keys.db"
        store = KeyStore(f"sqlite:///{path}")
        store.create("a", "read")
        assert store.secret("cursor")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        # An existing store with loose permissions is tightened when opened.
        path.chmod(0o644)
        KeyStore(f"sqlite:///{path}").secret("cursor")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        for sibling in path.parent.iterdir():
            assert stat.S_IMODE(sibling.stat().st_mode) & 0o077 == 0, sibling
    finally:
        os.umask(old)


class _TruncatedRecent:
    """A real query client whose hybrid reads report truncation (what the query layer sets when Kafka holds
    more than ``query_recent_max_rows`` rows); used to check the API says so in every format."""

    STOPPED = {"market.crypto.trades.binance": {"0": 1234}}

    def __init__(self, client: Client) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name not in ("trades", "quotes", "bars", "vwap", "twap"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            result.recent_truncated, result.recent_truncated_reason = True, "max_rows"
            result.recent_stopped_at = self.STOPPED
            return result

        return call

    def close(self) -> None:
        self._client.close()


@pytest.fixture(scope="module")
def truncated_app(
    tmp_path_factory: pytest.TempPathFactory, broker: str, schema_registry: str
) -> Iterator[tuple[TestClient, str]]:
    # A generous Kafka bound: this test is about the flags, not the read (0.3 s timed out at load 25).
    settings = api_settings(
        tmp_path_factory.mktemp("trunc") / "k2", broker, schema_registry, query_recent_timeout_seconds=10.0
    )
    seed(ensure_tables(load_catalog(settings), settings))
    key, _ = KeyStore.from_settings(settings).create("r", "read")
    app = create_app(settings, client_factory=lambda: _TruncatedRecent(Client(settings)))
    with TestClient(app) as client:
        yield client, key


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet", "arrow"])
def test_truncated_hybrid_read_is_said_in_every_format(
    truncated_app: tuple[TestClient, str], fmt: str
) -> None:
    client, key = truncated_app
    window = {
        "symbol": "BTCUSDT",
        "start": "2024-08-08T23:00:00Z",
        "end": "2024-08-09T01:00:00Z",
        "format": fmt,
        "include_recent": "true",  # a Kafka read: what truncation is about (and never cached)
    }
    for path, extra, aggregate in (
        ("/v1/trades", {"limit": 10}, False),
        ("/v1/bars", {"interval": "1h"}, True),
        ("/v1/vwap", {}, True),
    ):
        response = client.get(path, params={**window, **extra}, headers={"X-API-Key": key})
        assert response.status_code == 200, response.text
        assert response.headers["x-recent-truncated"] == "true"
        assert response.headers["x-recent-truncated-reason"] == "max_rows"
        assert json.loads(response.headers["x-recent-stopped-at"]) == _TruncatedRecent.STOPPED
        assert (response.headers.get("x-partial") == "true") is aggregate
        if fmt == "json":
            body = response.json()
            assert body["recent_truncated"] is True and body["recent_truncated_reason"] == "max_rows"
            assert body["recent_stopped_at"] == _TruncatedRecent.STOPPED
            assert body.get("partial") is (True if aggregate else None)


def test_untruncated_read_says_so(truncated_app: tuple[TestClient, str]) -> None:
    client, key = truncated_app
    response = client.get("/v1/symbols", headers={"X-API-Key": key})
    assert response.status_code == 200 and "x-recent-truncated" not in response.headers


def test_truncated_kafka_read_end_to_end(
    tmp_path: Path, broker: str, schema_registry: str, unique: str
) -> None:
    """With the query layer reporting truncation (issue 10, helper query), a real over-full Kafka read is flagged."""
    settings = api_settings(
        tmp_path / "k2", broker, schema_registry, query_recent_max_rows=2, query_recent_timeout_seconds=5.0
    )
    ensure_tables(load_catalog(settings), settings)
    exchange = f"tr{unique}"
    base = now_micros() - 5_000_000
    with MarketDataProducer(settings) as producer:
        for i in range(6):
            producer.send(
                TRADE,
                {
                    "exchange": exchange,
                    "symbol": "BTCUSDT",
                    "instrument": "BTC-USDT",
                    "asset_class": "crypto",
                    "trade_id": 10 + i,
                    "price": to_unscaled("100"),
                    "quantity": to_unscaled("1"),
                    "quote_quantity": None,
                    "side": "BUY",
                    "exchange_ts": base + i,
                    "receipt_ts": base + i,
                    "ingest_ts": None,
                    "source_sequence": 10 + i,
                    "conditions": [],
                    "vendor": {},
                },
            )
    with Client(settings) as direct:
        if not getattr(direct.trades("BTCUSDT", exchange=exchange), "recent_truncated", False):
            pytest.skip(
                "the query layer on this branch does not report a truncated Kafka read yet (helper query's change)"
            )
    key, _ = KeyStore.from_settings(settings).create("r", "read")
    with (
        serve(settings) as server,
        httpx.Client(base_url=server.url, timeout=30, headers={"X-API-Key": key}) as c,
    ):
        body = c.get("/v1/bars", params={"symbol": "BTCUSDT", "exchange": exchange, "interval": "1d"}).json()
        assert body["recent_truncated"] is True and body["partial"] is True
        arrow = c.get("/v1/trades", params={"symbol": "BTCUSDT", "exchange": exchange, "format": "arrow"})
        assert arrow.headers["x-recent-truncated"] == "true"
        assert pa.ipc.open_stream(arrow.content).read_all().num_rows <= 6
