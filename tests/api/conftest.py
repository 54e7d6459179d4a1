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

SMALL_STREAM_CHUNK = 16_384


@pytest.fixture
def small_stream_chunks() -> Iterator[int]:
    """Streamed answers in chunks of 16,384 rows instead of ``bigpage.STREAM_CHUNK_ROWS`` (65,536); returns it.

    For tests whose claim is about chunk *edges* (rows, cursors and snapshots at each edge equal the one-shot
    answer), not about the size: the same code runs at every edge, so three chunks of 16,384 rows prove what
    three of 65,536 did with a quarter of the rows to seed, join, encode and compare. Not for memory-bound
    tests (their bounds are measured at the real chunk size). 16,384 is not a multiple of 7 (ties of 7 trades
    still straddle an edge) and its 2,341 trade times span 4.7 s, more than any gap a test cuts before an edge.
    """
    from k2.api import bigpage

    # A patch of its own: a test's monkeypatch.undo() (test_streaming_hybrid counts reads with one) keeps it.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bigpage, "STREAM_CHUNK_ROWS", SMALL_STREAM_CHUNK)
        yield SMALL_STREAM_CHUNK


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
