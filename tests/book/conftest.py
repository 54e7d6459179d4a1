"""Fixtures of the order-book tests: a broker of each test's own (real Tansu), so default topic names work."""

from __future__ import annotations

import pytest

from k2.config import Settings


@pytest.fixture
def private_settings(settings: Settings, private_broker: str) -> Settings:
    """``settings`` with a broker of its own (``market.crypto.depth.binance`` is not shared between tests)."""
    return settings.model_copy(
        update={"kafka_bootstrap_servers": private_broker, "landing_commit_rows": 200_000}
    )
