"""``k2 status`` against real services: a Tansu broker, K2's registry, an Iceberg catalog with landed data."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from typer.testing import CliRunner

from k2.config import Settings
from k2.ops.status import collect_status
from tests.landing.helpers import make_trades
from tests.support.landing import land_messages

GAP = (501, 510)  # ids never sent


@pytest.fixture
def landed(settings: Settings, unique: str) -> dict[str, Any]:
    """1,000 trades with a 10-id hole and one malformed message landed; then 300 more trades not landed."""
    from k2.bus import MarketDataProducer
    from k2.bus.topics import topic_name
    from k2.landing import LandingConsumer
    from k2.model import TRADE

    exchange = f"st{unique}"
    settings = settings.model_copy(
        update={"landing_sequential_exchanges": exchange, "consumer_group": f"status-{unique}"}
    )
    topic = topic_name("crypto", "trades", exchange)
    first = make_trades("BTCUSDT", 1, 500, exchange=exchange)
    second = make_trades("BTCUSDT", GAP[1] + 1, 500, exchange=exchange)
    for i, row in enumerate(second):  # keep exchange time increasing across the hole
        row["exchange_ts"] = first[-1]["exchange_ts"] + (i + 11) * 2_000
        row["receipt_ts"] = row["exchange_ts"] + 1_000
    with MarketDataProducer(settings) as producer:
        for row in first:
            producer.send(TRADE, row)
        producer.produce_raw(topic, b"BTCUSDT", b"\x00not avro")
        for row in second:
            producer.send(TRADE, row)
    consumer = LandingConsumer(settings, topics=[topic])
    stats = land_messages(consumer, len(first) + 1 + len(second), max_seconds=60)
    assert stats.landed == 1000 and stats.dead_lettered == 1
    later = make_trades("BTCUSDT", 2_000, 300, exchange=exchange)
    with MarketDataProducer(settings) as producer:
        for row in later:
            producer.send(TRADE, row)
    return {
        "settings": settings,
        "exchange": exchange,
        "topic": topic,
        "newest_ts": max(r["exchange_ts"] for r in first + second),
    }


def test_collect_status_reports_rate_lag_freshness_gaps_dlq_and_sizes(landed: dict[str, Any]) -> None:
    settings, exchange, topic = landed["settings"], landed["exchange"], landed["topic"]
    report = collect_status(settings, window_seconds=300)
    assert not report["errors"], report["errors"]

    info = report["topics"][topic]
    assert info["table"] == "market_data.trades"
    partition, landed_to = next(iter(info["landed_offsets"].items()))
    assert landed_to == 1001  # 1,000 trades + 1 dead letter, offsets 0..1000
    # Tansu's high watermark is the first offset of its last batch + 1: the 300 unlanded trades show as a
    # lag of at least 1 and at most 300, flagged approximate.
    assert report["broker"]["watermarks_exact"] is False
    assert info["lag_exact"] is False and 1 <= info["lag"] <= 300
    assert info["rate_per_s"] == round(1001 / 300, 2)
    assert info["last_commit_age_s"] is not None and 0 <= info["last_commit_age_s"] < 120

    source = report["sources"][exchange]
    assert source["topics"] == [topic]
    assert source["open_gaps"] == GAP[1] - GAP[0] + 1
    assert report["gaps"][f"{exchange}/BTCUSDT"]["open"] == GAP[1] - GAP[0] + 1
    expected_freshness = time.time() - landed["newest_ts"] / 1e6
    assert abs(source["freshness_s"] - expected_freshness) < 30

    assert report["tables"]["market_data.trades"]["rows"] == 1000
    assert report["tables"]["market_data.trades"]["files"] >= 1
    assert report["tables"]["market_data.trades"]["bytes"] > 0
    assert report["dlq"][f"{topic}.dlq"] >= 1


def test_k2_status_command_renders_one_screen(
    landed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from k2.cli import app

    settings: Settings = landed["settings"]
    for key, value in {
        "K2_DATA_DIR": str(settings.data_dir),
        "K2_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "K2_SCHEMA_REGISTRY_URL": settings.registry_url,
        "K2_LANDING_METRICS_PORT": "0",
        "K2_PROMETHEUS_ENABLED": "false",
        "COLUMNS": "220",
    }.items():
        monkeypatch.setenv(key, value)
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert landed["exchange"] in out and landed["topic"] in out
    assert "market_data.trades" in out and "1,000" in out
    assert "≥" in out and "approximate" in out
    assert "DLQ:" in out
    assert re.search(r"console: http://127\.0\.0\.1:\d+/console/", out), out[
        -500:
    ]  # issue 16: where the console is
    json_result = CliRunner().invoke(app, ["status", "--json"])
    assert json_result.exit_code == 0
    assert landed["topic"] in json_result.output
    assert re.search(r'"console_url": "http://127\.0\.0\.1:\d+/console/"', json_result.output)
