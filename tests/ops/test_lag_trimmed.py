"""``k2 status`` and ``GET /v1/lag`` agree after retention (issue 10): for a topic whose early messages the
broker deleted, the messages that never landed are reported as "trimmed before landing", not counted as lag
(they cannot land any more) and not silently dropped.

The broker is real (Tansu) and so are the topics, their messages and the Iceberg commits holding the landed
offsets. Tansu 0.6 cannot trim a log (its DeleteRecords handler panics "not yet implemented" and it has no
retention), so the broker's answer passes through a proxy that raises the low watermark of the two test
topics, as Kafka reports it after retention or ``delete_records``; the high watermarks are the broker's own.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from rich.console import Console

import k2.api.lag as api_lag
import k2.ops.status as ops_status
from k2.api.lag import lag_report
from k2.bus.broker import Watermarks
from k2.bus.topics import ensure_topics
from k2.lake.catalog import ensure_tables, load_catalog
from k2.ops.status import collect_status, render_status
from tests.api.conftest import api_settings
from tests.api.helpers import lagging_topic

TRIMMED_TO = 8  # the low watermark after retention: offsets 0..7 deleted


def test_status_and_lag_agree_on_a_topic_trimmed_by_retention(
    tmp_path: Path, broker: str, schema_registry: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = api_settings(tmp_path / "k2", broker, schema_registry)
    tables = ensure_tables(load_catalog(settings), settings)
    # Landed 0..4 (a klines commit says offset 5), then retention deleted 0..7: 5..7 never landed.
    landed_topic = lagging_topic(settings, tables["klines"], unique, produced=10, landed=5)
    # Nothing landed at all, then retention deleted 0..7.
    idle_topic = f"market.crypto.trades.trim{unique}"
    ensure_topics(settings, [idle_topic], partitions=1)
    producer = Producer(settings.kafka_client_config())
    for i in range(10):
        producer.produce(idle_topic, key=b"BTCUSDT", value=f"message {i}".encode())
        assert producer.flush(10) == 0  # one batch per message: Tansu's high watermark is the log end

    real = ops_status.read_watermarks

    def after_retention(*args: Any, **kwargs: Any) -> Watermarks:
        found = real(*args, **kwargs)
        topics = {
            topic: {
                p: ((max(low, TRIMMED_TO), high) if topic in (landed_topic, idle_topic) else (low, high))
                for p, (low, high) in parts.items()
            }
            for topic, parts in found.topics.items()
        }
        return Watermarks(found.cluster_id, found.brokers, topics)

    monkeypatch.setattr(ops_status, "read_watermarks", after_retention)
    monkeypatch.setattr(api_lag, "read_watermarks", after_retention)

    status = collect_status(settings)
    lag = lag_report(settings)
    assert lag["broker_error"] is None, lag["broker_error"]
    rows = {row["topic"]: row for row in lag["data"]}
    for topic, expected_trimmed in ((idle_topic, TRIMMED_TO), (landed_topic, TRIMMED_TO - 5)):
        row, info = rows[topic], status["topics"][topic]
        assert (row["high_watermark"], row["lag"], row["trimmed_before_landing"]) == (
            10,
            10 - TRIMMED_TO,
            expected_trimmed,
        ), topic
        assert (info["lag"], info["trimmed_before_landing"]) == (row["lag"], row["trimmed_before_landing"]), (
            f"{topic}: k2 status says lag {info['lag']}, /v1/lag says {row['lag']}"
        )
    out = io.StringIO()
    render_status(status, Console(file=out, width=250, color_system=None))
    text = out.getvalue()
    assert "trimmed before landing" in text
    line = next(line for line in text.splitlines() if idle_topic in line)
    assert f"{TRIMMED_TO:,}" in line.split(idle_topic, 1)[1], line
