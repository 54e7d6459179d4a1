"""Fixtures of the live-feed tests: the Binance capture loaded once, a broker of a test's own.

Everything real: the fake exchange is a real WebSocket/HTTP server on 127.0.0.1, the feeds produce to
real Tansu brokers and the session's schema registry, gap rows go to a real Iceberg catalog.
"""

from __future__ import annotations

import pytest

from k2.config import Settings
from k2.sources.fake_exchange import CaptureMessage, load_binance
from tests.sources.helpers import BINANCE_CAPTURES


@pytest.fixture(scope="session")
def binance_messages() -> list[CaptureMessage]:
    """The Binance capture's stream messages, loaded once (about 1 s)."""
    return load_binance(BINANCE_CAPTURES)


@pytest.fixture
def private_settings(settings: Settings, private_broker: str) -> Settings:
    """``settings`` with a broker of its own, so the feed can use the real default topic names
    (``market.crypto.trades.binance``: what the landing consumer validates rows against) without
    sharing them with other tests of the session."""
    return settings.model_copy(update={"kafka_bootstrap_servers": private_broker})
