"""Fixtures of the order-book tests: a broker of each test's own (real Tansu), so default topic names work."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from k2.bus.broker import tansu_process
from k2.config import Settings
from k2.telemetry.procs import free_port
from tests.support.broker import stop_memory_broker


@pytest.fixture
def private_settings(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """``settings`` with a broker of its own (``market.crypto.depth.binance`` is not shared between tests)."""
    port = free_port()
    proc = tansu_process(port, tmp_path / "tansu-private.log").start()
    try:
        yield settings.model_copy(
            update={"kafka_bootstrap_servers": f"127.0.0.1:{port}", "landing_commit_rows": 200_000}
        )
    finally:
        stop_memory_broker(proc)
