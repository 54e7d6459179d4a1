"""``GET /v1/lag``: landed offset, high watermark and lag per topic and partition (issue 16, Overview)."""

from __future__ import annotations

from k2.lake.catalog import load_catalog, load_table
from tests.api.conftest import Api
from tests.api.helpers import lagging_topic


def test_lag_per_topic_from_the_broker_and_the_snapshot_summary(api: Api, unique: str) -> None:
    topic = lagging_topic(api.settings, load_table(load_catalog(api.settings), "klines"), unique)
    with api.client(api.read_key) as c:
        response = c.get("/v1/lag")
        anonymous = c.get("/v1/lag", headers={"X-API-Key": ""})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["broker_error"] is None and body["exact"] is False  # Tansu: a lower bound, said so
    rows = [r for r in body["data"] if r["topic"] == topic]
    assert len(rows) == 1
    row = rows[0]
    assert (row["partition"], row["table"], row["landed_offset"], row["high_watermark"], row["lag"]) == (
        0,
        "market_data.klines",
        2,
        5,
        3,
    )
    assert row["last_commit"] is not None and row["last_commit_age_s"] < 600
    assert anonymous.status_code == 401


def test_lag_says_when_the_broker_does_not_answer(api: Api) -> None:
    from k2.api.lag import lag_report
    from k2.config import Settings
    from k2.telemetry.procs import free_port

    dead = Settings(**{**api.settings.model_dump(), "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    report = lag_report(dead)
    assert report["broker_error"] and "expected the Kafka broker to answer" in report["broker_error"]
    assert all(r["lag"] is None for r in report["data"])  # never a silent zero
