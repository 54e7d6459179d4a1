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


# The modules that take longest (serial wall seconds measured with tests/support/cpu_report, -p no:xdist, load
# ~8, in brackets), longest first. `make test` runs pytest-xdist with --dist loadscope --no-loadscope-reorder:
# each module runs whole on one worker, in collection order, so these start first instead of last (xdist's
# default reorder puts modules with the most tests first, i.e. these one-to-three-test modules at the end, where
# one of them alone then sets the run's tail). Order only: a stale or missing entry costs wall time, never a
# result.
LONG_FIRST = (
    "tests/landing/test_crash.py",  # (~230: two SIGKILL runs)
    "tests/book/test_live_depth.py",  # (197)
    "tests/test_durable_stack.py",  # (~180)
    "tests/test_demo.py",  # (139)
    "tests/console/test_chart.py",  # (93)
    "tests/sources/test_batched_sources.py",  # (88)
    "tests/scale/test_distributed.py",  # (79)
    "tests/test_lint.py",  # (76: strict mypy)
    "tests/lake/test_maintenance.py",  # (74)
    "tests/book/test_tardis_book_snapshot.py",  # (71)
    "tests/api/test_streaming_asof.py",  # (68)
    "tests/api/test_streaming_hybrid.py",  # (67)
    "tests/sources/test_live_cli.py",  # (65)
    "tests/console/test_pages.py",  # (63)
    "tests/sources/test_live.py",  # (60)
    "tests/ops/test_deployment.py",  # (59)
    "tests/book/test_capture_truth.py",  # (54)
    "tests/sources/test_live_e2e.py",  # (54)
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the modules of :data:`LONG_FIRST` first, in its order; every other test keeps its place."""
    rank = {path: index for index, path in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Destroy Kafka clients that tests left for the garbage collector while pytest still runs.

    A client whose broker fixture has already stopped otherwise logs connection errors from
    interpreter shutdown, after pytest's summary line.
    """
    import gc

    gc.collect()
