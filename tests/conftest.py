"""Shared fixtures: real servers on 127.0.0.1 random ports (Tansu broker, K2's registry, PostgreSQL).

Nothing here is mocked: every fixture starts the real component and stops it afterwards.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from k2.bus.broker import tansu_process
from k2.config import Settings
from k2.telemetry.procs import start_on_free_port
from tests.support.broker import stop_memory_broker
from tests.support.postgres import PostgresServer

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("K2_SHARED_DATA", REPO.parent / "shared" / "data"))
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Keep the test process from picking up a developer's k2.toml or K2_* variables.
for _key in [k for k in os.environ if k.startswith("K2_") and k != "K2_SHARED_DATA"]:
    del os.environ[_key]
os.environ["K2_CONFIG_FILE"] = str(REPO / "tests" / "k2-test.toml")
# The CLI's rich consoles take their width when k2.cli is first imported: the same wide width for every
# test, whichever imports it first (under pytest-xdist that is another test in each worker).
os.environ["COLUMNS"] = "300"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Tansu broker (memory storage); yields its bootstrap address."""
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    proc = start_on_free_port(lambda port: tansu_process(port, log))
    yield f"127.0.0.1:{proc.port}"
    stop_memory_broker(proc)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the session."""
    server = PostgresServer().start()
    yield server
    server.stop()


_counter = itertools.count()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """A fresh PostgreSQL database (SQLAlchemy URL) for one test."""
    return postgres.create_database(f"k2_test_{next(_counter)}_{uuid.uuid4().hex[:6]}")


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """K2's own schema registry (SQLite store) as a real HTTP server; yields its URL."""
    from k2.bus.registry.server import registry_process

    root = tmp_path_factory.mktemp("registry")
    proc = start_on_free_port(
        lambda port: registry_process(port, f"sqlite:///{root / 'registry.db'}", root / "registry.log")
    )
    yield f"http://127.0.0.1:{proc.port}"
    proc.stop()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[str]:
    """A Tansu broker of this test's own (memory storage): the real default topic names
    (``market.crypto.trades.binance``...) can be used without sharing them with other tests of the session."""
    proc = start_on_free_port(lambda port: tansu_process(port, tmp_path / "tansu-private.log"))
    try:
        yield f"127.0.0.1:{proc.port}"
    finally:
        stop_memory_broker(proc)


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group and table names."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def settings(tmp_path: Path, broker: str, schema_registry: str) -> Settings:
    """Settings for one test: a fresh data dir (SQLite catalog, local warehouse), the session's servers."""
    return Settings(
        data_dir=tmp_path / "k2",
        kafka_bootstrap_servers=broker,
        schema_registry_url=schema_registry,
        consumer_session_timeout_ms=2000,
        landing_commit_interval_seconds=0.5,
        landing_metrics_port=0,
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Destroy Kafka clients that tests left for the garbage collector while pytest still runs.

    A client whose broker fixture has already stopped otherwise logs connection errors from
    interpreter shutdown, after pytest's summary line.
    """
    import gc

    gc.collect()
