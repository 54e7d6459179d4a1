"""Prometheus configuration, alert rules, the Grafana dashboard, a real Prometheus scraping K2, and
structured logging."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from k2.config import Settings
from k2.ops.prometheus import asset_path, prometheus_config, scrape_targets, write_config
from k2.telemetry.logging import configure_logging, correlation_ids, get_logger
from k2.telemetry.metrics import DECLARATIONS, declare_all, metric
from k2.telemetry.procs import free_port

DECLARED = {d.name: d for d in DECLARATIONS}
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not found on PATH (make deps installs it: apt-get install prometheus)"
)
PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
}
GENERIC_LABELS = {"le", "instance", "job"}


def _alert_exprs() -> list[str]:
    rules = yaml.safe_load(asset_path("alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(asset_path("grafana-dashboard.json").read_text())
    exprs = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            exprs.append(target["expr"])
    return exprs


def declared_base(name: str) -> str | None:
    """The declared metric a PromQL series name refers to (histograms' _bucket/_sum/_count included)."""
    if name in DECLARED:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if name.endswith(suffix) and base in DECLARED and DECLARED[base].type == "histogram":
            return base
    return None


def check_expression(expr: str) -> list[str]:
    """Problems with one PromQL expression: undeclared metrics, labels the metric lacks."""
    problems = []
    names = set(re.findall(r"\bk2_[a-z0-9_]+", expr))
    bases = set()
    for name in names:
        base = declared_base(name)
        if base is None:
            problems.append(f"{name} is not declared in k2.telemetry.metrics")
        else:
            bases.add(base)
    for name, selector in re.findall(r"\b(k2_[a-z0-9_]+)\{([^}]*)\}", expr):
        base = declared_base(name)
        for label in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", selector):
            if base is not None and label not in DECLARED[base].labels and label not in GENERIC_LABELS:
                problems.append(f"{name}{{{label}=...}}: label not declared")
    allowed = GENERIC_LABELS | {label for base in bases for label in DECLARED[base].labels}
    for clause in re.findall(r"\bby\s*\(([^)]*)\)", expr):
        for label in (x.strip() for x in clause.split(",") if x.strip()):
            if label not in allowed:
                problems.append(f"by ({label}): no metric in the expression has this label")
    return problems


def test_every_alert_and_dashboard_metric_is_declared() -> None:
    exprs = _alert_exprs() + _dashboard_exprs()
    assert len(exprs) > 20
    problems = [f"{expr!r}: {p}" for expr in exprs for p in check_expression(expr)]
    assert not problems, "\n".join(problems)
    used = {declared_base(n) for e in _dashboard_exprs() for n in re.findall(r"\bk2_[a-z0-9_]+", e)}
    # The dashboard shows every stage: sources, producer, landing, query and API.
    core = {
        "k2_source_messages_total",
        "k2_source_reconnects_total",
        "k2_source_lag_seconds",
        "k2_producer_messages_total",
        "k2_producer_errors_total",
        "k2_producer_queue_depth",
        "k2_landing_rows_total",
        "k2_landing_commits_total",
        "k2_landing_batch_rows",
        "k2_landing_commit_seconds",
        "k2_landing_consumer_lag",
        "k2_landing_freshness_seconds",
        "k2_landing_duplicates_total",
        "k2_landing_gaps_total",
        "k2_landing_dlq_total",
        "k2_query_seconds",
        "k2_query_errors_total",
        "k2_api_requests_total",
        "k2_api_request_seconds",
    }
    assert core <= used, sorted(core - used)


def test_expression_checker_catches_undeclared_names_and_labels() -> None:
    assert check_expression("rate(k2_landing_rows_total[5m])") == []
    assert (
        check_expression(
            "histogram_quantile(0.9, sum by (le, table) (rate(k2_landing_commit_seconds_bucket[5m])))"
        )
        == []
    )
    assert check_expression("rate(k2_landing_rowz_total[5m])")
    assert check_expression('k2_landing_rows_total{topic="x"}')
    assert check_expression("sum by (route) (k2_landing_rows_total)")
    assert check_expression("k2_landing_consumer_lag_bucket")  # a gauge has no buckets


def test_alerts_cover_the_required_conditions() -> None:
    rules = yaml.safe_load(asset_path("alerts.yml").read_text())
    alerts = {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}
    required = {
        "no data": "k2_landing_rows_total",
        "lag growing": "k2_landing_consumer_lag",
        "gaps": "k2_landing_gaps_total",
        "DLQ growth": "k2_landing_dlq_total",
        "commit failures": 'outcome="failed"',
        "API errors": "k2_api_requests_total",
    }
    for what, needle in required.items():
        assert any(needle in expr for expr in alerts.values()), f"no alert for {what}"


@needs_promtool
def test_promtool_checks_the_alert_rules() -> None:
    result = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(asset_path("alerts.yml"))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
def test_promtool_checks_the_generated_config(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, landing_metrics_port=9464, api_port=8000, source_metrics_port=9465)
    config = write_config(settings, tmp_path / "prom")
    text = config.read_text()
    for target in scrape_targets(settings):
        assert target.address in text
    assert {t.job for t in scrape_targets(settings)} == {
        "k2-registry",
        "k2-landing",
        "k2-api",
        "k2-source",
        "prometheus",
    }
    external = Settings(schema_registry_url="https://registry.example", landing_metrics_port=9464)
    assert "k2-registry" not in {t.job for t in scrape_targets(external)}
    result = subprocess.run(
        [str(PROMTOOL), "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_landing_metrics_port_zero_drops_the_landing_job() -> None:
    text = prometheus_config(Settings(landing_metrics_port=0))
    assert "k2-landing" not in text and "k2-api" in text


PROMTOOL_TESTS = """
rule_files:
  - {rules}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'k2_landing_dlq_total{{topic="market.crypto.trades.binance", reason="decode", instance="l:1", job="k2-landing"}}'
        values: '0 0 0 4 4 4 4 4 4 4 4 4 4 4 4 4 4 4 4 4'
      - series: 'k2_landing_commits_total{{table="trades", outcome="failed", instance="l:1", job="k2-landing"}}'
        values: '0x20'
      - series: 'up{{job="k2-api", instance="a:1"}}'
        values: '1 1 0 0 0 0 0 0'
    alert_rule_test:
      - eval_time: 5m
        alertname: K2DeadLettersGrowing
        exp_alerts:
          - exp_labels: {{severity: warning, topic: market.crypto.trades.binance, reason: decode}}
            exp_annotations:
              summary: "4 messages from market.crypto.trades.binance dead-lettered (decode)"
              runbook: "docs/runbooks.md#dead-letter-queue-dlq (k2 dlq list)"
      - eval_time: 19m
        alertname: K2DeadLettersGrowing
        exp_alerts: []
      - eval_time: 10m
        alertname: K2CommitFailures
        exp_alerts: []
      - eval_time: 1m
        alertname: K2TargetDown
        exp_alerts: []
      - eval_time: 6m
        alertname: K2TargetDown
        exp_alerts:
          - exp_labels: {{severity: critical, job: k2-api, instance: "a:1"}}
            exp_annotations:
              summary: "k2-api at a:1 is not answering /metrics"
              runbook: "docs/runbooks.md (check `k2 status`; restart with `k2 up`)"
"""


@needs_promtool
def test_alert_rules_fire_on_real_series(tmp_path: Path) -> None:
    """promtool evaluates the rules on synthetic series: DLQ growth fires then clears; a target down fires."""
    shutil.copyfile(asset_path("alerts.yml"), tmp_path / "alerts.yml")
    spec = tmp_path / "alerts_test.yml"
    spec.write_text(PROMTOOL_TESTS.format(rules="alerts.yml"))
    result = subprocess.run(
        [str(PROMTOOL), "test", "rules", str(spec)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="prometheus not installed (apt-get install prometheus)"
)
def test_k2_up_starts_prometheus_which_scrapes_the_landing_metrics(tmp_path: Path) -> None:
    """`k2 up --part prometheus` starts a real Prometheus from the generated config; it scrapes /metrics."""
    from prometheus_client import start_http_server

    from k2.ops import stack

    declare_all()
    landing_port, prom_port = free_port(), free_port()
    server, thread = start_http_server(landing_port, addr="127.0.0.1")  # stands in for `k2 land`'s endpoint
    metric("k2_landing_rows_total").labels(table="scrape-test").inc(42)
    settings = Settings(
        data_dir=tmp_path / "k2",
        landing_metrics_port=landing_port,
        api_port=free_port(),
        prometheus_port=prom_port,
        prometheus_enabled="true",
        prometheus_scrape_interval_seconds=1,
        kafka_bootstrap_servers="127.0.0.1:1",
        schema_registry_url="http://127.0.0.1:1",
    )
    assert [p.name for p in stack.planned_parts(settings)][-1] == "prometheus"
    try:
        assert stack.up(settings, ["prometheus"], timeout=60) == [("prometheus", "started")]
        config = (tmp_path / "k2" / "prometheus" / "prometheus.yml").read_text()
        assert f"127.0.0.1:{landing_port}" in config and "scrape_interval: 1s" in config
        deadline = time.monotonic() + 40
        value = None
        while time.monotonic() < deadline and value is None:
            reply = httpx.get(
                f"http://127.0.0.1:{prom_port}/api/v1/query",
                params={"query": 'k2_landing_rows_total{table="scrape-test"}'},
                timeout=5,
            ).json()
            if reply["data"]["result"]:
                value = float(reply["data"]["result"][0]["value"][1])
            else:
                time.sleep(0.5)
        assert value == 42.0
        rules = httpx.get(f"http://127.0.0.1:{prom_port}/api/v1/rules", timeout=5).json()
        assert {g["name"] for g in rules["data"]["groups"]} == {"k2-availability", "k2-pipeline", "k2-api"}
    finally:
        assert ("prometheus", "stopped") in stack.down(settings)
        server.shutdown()
        thread.join(5)


# -- structured logging ----------------------------------------------------------------------------


def _restore_logging() -> None:
    configure_logging(Settings())


def test_json_logs_are_parseable_lines_with_level_and_event() -> None:
    out = io.StringIO()
    try:
        configure_logging(Settings(log_json=True, log_level="INFO"), stream=out)
        get_logger("k2.test").info("batch landed", rows=5, cid="abc123")
        logging.getLogger("pyiceberg.test").warning("stdlib %s", "message")
        try:
            raise ValueError("boom")
        except ValueError:
            get_logger("k2.test").exception("failed")
    finally:
        _restore_logging()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["level"], e["event"]) for e in lines] == [
        ("info", "batch landed"),
        ("warning", "stdlib message"),
        ("error", "failed"),
    ]
    assert lines[0]["rows"] == 5 and lines[0]["cid"] == "abc123" and lines[0]["logger"] == "k2.test"
    assert lines[0]["timestamp"].endswith("Z")
    assert "ValueError: boom" in lines[2]["exception"]


@pytest.mark.parametrize(("level", "expected"), [("DEBUG", 4), ("INFO", 3), ("WARNING", 2), ("ERROR", 1)])
def test_log_level_filters(level: str, expected: int) -> None:
    out = io.StringIO()
    try:
        configure_logging(Settings(log_json=True, log_level=level), stream=out)  # type: ignore[arg-type]
        log = get_logger("k2.test")
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")
    finally:
        _restore_logging()
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events == ["d", "i", "w", "e"][4 - expected :]


def test_console_format_is_not_json() -> None:
    out = io.StringIO()
    try:
        configure_logging(Settings(log_json=False, log_level="INFO"), stream=out)
        get_logger("k2.test").info("hello", rows=1)
    finally:
        _restore_logging()
    line = out.getvalue().strip()
    assert "hello" in line and "rows=1" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


@pytest.mark.parametrize(("level", "logged"), [("INFO", True), ("WARNING", False)])
def test_every_cli_command_configures_logging_from_settings(tmp_path: Path, level: str, logged: bool) -> None:
    env = {**os.environ, "K2_LOG_JSON": "true", "K2_LOG_LEVEL": level, "K2_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "k2.cli", "prometheus", "config", "--output", str(tmp_path / "p")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    events: list[dict[str, Any]] = [
        json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")
    ]
    assert any(e["event"] == "prometheus config written" and e["level"] == "info" for e in events) is logged


def test_correlation_ids_from_headers() -> None:
    assert correlation_ids([("k2.cid", b"c1"), ("x", b"y"), ("k2.cid", b"c2")]) == ["c1", "c2"]
    assert correlation_ids(None) == []


def test_correlation_id_follows_a_message_from_producer_to_landing_log_and_snapshot(
    settings: Settings, unique: str
) -> None:
    """The producer stamps `k2.cid` on each message; landing logs it and stores it in the snapshot summary."""
    from confluent_kafka import Consumer, TopicPartition

    from k2.bus import MarketDataProducer
    from k2.bus.topics import topic_name
    from k2.lake.catalog import ensure_tables, load_catalog
    from k2.landing import LandingConsumer
    from k2.model import TRADE
    from k2.telemetry.logging import CIDS_SUMMARY_KEY
    from tests.landing.helpers import make_trades
    from tests.support.landing import land_messages

    exchange = f"cid{unique}"
    settings = settings.model_copy(update={"consumer_group": f"cid-{unique}"})
    topic = topic_name("crypto", "trades", exchange)
    with MarketDataProducer(settings) as producer:
        for row in make_trades("ETHUSDT", 1, 50, exchange=exchange):
            producer.send(TRADE, row)
    cid = producer.correlation_id
    probe = Consumer(
        {**settings.kafka_client_config(), "group.id": f"probe-{unique}", "auto.offset.reset": "earliest"}
    )
    try:
        partition = next(
            p
            for p in range(settings.topic_partitions)
            if probe.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] > 0
        )
        probe.assign([TopicPartition(topic, partition, 0)])
        message = None
        while message is None or message.error() is not None:
            message = probe.poll(5)
        assert correlation_ids(message.headers()) == [cid]
    finally:
        probe.close()

    out = io.StringIO()
    try:
        configure_logging(Settings(log_json=True, log_level="INFO"), stream=out)
        land_messages(LandingConsumer(settings, topics=[topic]), 50, max_seconds=60)
    finally:
        _restore_logging()
    committed = [json.loads(line) for line in out.getvalue().splitlines() if '"committed"' in line]
    assert committed and committed[0]["cids"] == [cid] and committed[0]["rows"] == 50
    trades = ensure_tables(load_catalog(settings), settings)["trades"]
    snapshot = trades.current_snapshot()
    assert snapshot is not None
    assert snapshot.summary.additional_properties[CIDS_SUMMARY_KEY] == cid


def test_k2_stream_serves_metrics_on_the_source_metrics_port(schema_registry: str, tmp_path: Path) -> None:
    """`k2 stream` with K2_SOURCE_METRICS_PORT serves /metrics while it streams (fake exchange, private broker).

    The fake exchange runs in this process (its threads; a `k2 fake-exchange serve` process costs ~1 s of CPU
    in imports): the process under test is `k2 stream`. `k2 fake-exchange serve` as a process is
    test_live_cli's and test_durable_stack's."""
    from k2.bus.broker import tansu_process
    from k2.sources.fake_exchange import FakeExchange, Faults
    from tests.support.broker import stop_memory_broker

    captures = sorted(
        (Path(__file__).resolve().parents[2] / "data" / "samples" / "binance").glob("spot_btcusdt_*.gz")
    )
    broker_port, metrics_port = free_port(), free_port()
    broker = tansu_process(broker_port, tmp_path / "tansu.log").start()
    fake = FakeExchange("binance", captures=[captures[0]], faults=Faults(max_messages=3000))
    env = {
        **os.environ, "K2_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{broker_port}", "K2_SCHEMA_REGISTRY_URL": schema_registry,
        "K2_DATA_DIR": str(tmp_path / "k2"), "K2_SOURCE_METRICS_PORT": str(metrics_port),
    }  # fmt: skip
    seen: dict[str, float] = {}
    try:
        fake.start()
        stream = subprocess.Popen(
            [sys.executable, "-m", "k2.cli", "stream", "binance", "--symbols", "BTCUSDT", "--url", fake.ws_url,
             "--rest-url", fake.rest_url, "--idle-exit", "3"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 90
        while stream.poll() is None and time.monotonic() < deadline:
            try:
                body = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).text
            except httpx.HTTPError:
                time.sleep(0.1)
                continue
            for line in body.splitlines():
                if line.startswith(("k2_source_messages_total{", "k2_producer_messages_total{")):
                    name, _, value = line.rpartition(" ")
                    seen[name] = float(value)
            time.sleep(0.2)
        stream.wait(60)
        assert stream.returncode == 0, stream.stderr.read() if stream.stderr else ""
    finally:
        fake.stop()
        stop_memory_broker(broker)
    trades = [v for k, v in seen.items() if k.startswith("k2_source_messages_total{") and 'kind="trade"' in k]
    assert trades and max(trades) > 0, seen


def test_k2_registry_serves_metrics(schema_registry: str) -> None:
    """K2's registry process answers /metrics (what the k2-registry scrape job and K2TargetDown rely on)."""
    reply = httpx.get(f"{schema_registry}/metrics", timeout=10)
    assert reply.status_code == 200
    assert "python_info" in reply.text and reply.headers["content-type"].startswith("text/plain")


def test_alert_runbook_links_point_at_existing_sections() -> None:
    runbooks = (Path(__file__).resolve().parents[2] / "docs" / "runbooks.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).strip().replace(" ", "-")
        for h in re.findall(r"^## (.+)$", runbooks, re.M)
    }
    links = re.findall(r"runbooks\.md#([a-z0-9-]+)", asset_path("alerts.yml").read_text())
    assert links and set(links) <= anchors, sorted(set(links) - anchors)
