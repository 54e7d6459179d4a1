"""tests/support/landing.land_messages: stops a real landing once a known count is accounted for, and a
count that never arrives fails the test instead of returning short (what an idle exit would do)."""

from __future__ import annotations

import pytest

from k2.bus import MarketDataProducer, topic_name
from k2.config import Settings
from k2.landing import LandingConsumer
from k2.model import TRADE
from tests.landing.helpers import make_trades, table_keys
from tests.support.landing import land_messages


def test_lands_the_count_then_a_missing_message_fails_loudly(settings: Settings, unique: str) -> None:
    settings = settings.model_copy(
        update={"consumer_group": f"g-{unique}", "consumer_session_timeout_ms": 1000}
    )
    exchange = f"lm{unique}"
    topic = topic_name("crypto", "trades", exchange)
    rows = make_trades("BTCUSDT", 1, 20, exchange=exchange)
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, [*rows, rows[3]])  # 21 messages: one a duplicate
    consumer = LandingConsumer(settings, topics=[topic])
    stats = land_messages(consumer, 21)
    assert (stats.landed, stats.duplicates) == (20, 1)
    assert [k[2] for k in table_keys(consumer.tables["trades"]) if k[0] == exchange] == list(range(1, 21))
    # Nothing more in the topic: a restarted landing waiting for one more message raises, naming the counts.
    with pytest.raises(AssertionError, match="expected 1 messages landed, deduplicated or dead-lettered"):
        land_messages(LandingConsumer(settings, topics=[topic]), 1, max_seconds=6)
