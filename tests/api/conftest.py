"""Fixtures of the REST API tests: one seeded lake and one real uvicorn server per test module."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from k2.api.keys import KeyStore
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from tests.api.helpers import ServerThread, seed


@dataclass
class Api:
    """A running API: its settings, base URL, keys and the expected seeded row counts."""

    settings: Settings
    url: str
    read_key: str
    admin_key: str
    counts: dict[str, int]
    server: ServerThread

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def api_settings(root: object, broker: str, registry: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": root,
        "kafka_bootstrap_servers": broker,
        "schema_registry_url": registry,
        "consumer_session_timeout_ms": 2000,
        "landing_metrics_port": 0,
        "api_rate_limit_per_second": 10_000.0,
        "api_rate_limit_burst": 10_000,
        "query_max_rows": 20_000,
        "api_page_size": 500,
        # A bound for a loaded machine: at 0.3 s a read of five fresh messages came back cut (time_bound) at
        # load 16. Reads end when the log is idle, so a generous bound costs nothing when the broker is quick.
        "query_recent_timeout_seconds": 10.0,
        "query_pool_size": 2,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, broker: str, schema_registry: str) -> Iterator[Api]:
    """A seeded lake (SQLite catalog, local warehouse) and the API served by real uvicorn."""
    settings = api_settings(tmp_path_factory.mktemp("api") / "k2", broker, schema_registry)
    counts = seed(ensure_tables(load_catalog(settings), settings))
    store = KeyStore.from_settings(settings)
    read_key, _ = store.create("reader", "read")
    admin_key, _ = store.create("admin", "admin")
    server = ServerThread(settings).start()
    yield Api(settings, server.url, read_key, admin_key, counts, server)
    server.stop()
