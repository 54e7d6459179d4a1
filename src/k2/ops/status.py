"""``k2 status``: one screen for the operator — parts, topics, tables, freshness, gaps, DLQ.

Everything is read from the real services: pid files and ports for local parts, broker metadata for
topics, Iceberg snapshots for table sizes, last commit and the Kafka offsets landed, and the gap ledger.
Consumer lag per partition is the broker's high watermark minus the offset stored in the table (on Tansu
the high watermark is known to be wrong; the figure is then approximate and says so).

Example (needs the stack)::

    render_status(collect_status(load_settings()), Console())
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

from k2.config import Settings
from k2.ops.procs import pid_alive, port_open


def _iso(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def collect_status(settings: Settings) -> dict[str, Any]:
    """Gather the status report as plain data (also used by ``k2 status --json``)."""
    from k2.ops import stack

    report: dict[str, Any] = {"parts": [], "topics": {}, "tables": {}, "gaps": {}, "dlq": {}, "errors": []}
    for part in stack.planned_parts(settings):
        found = stack.read_pid(settings, part.name)
        alive = found is not None and pid_alive(found[0])
        report["parts"].append(
            {"name": part.name, "port": part.port, "pid": found[0] if found else None, "healthy": alive and port_open("127.0.0.1", part.port)}
        )
    if settings.kafka_bootstrap_servers is not None:
        host, _, port = settings.kafka_bootstrap_servers.split(",")[0].rpartition(":")
        report["parts"].append({"name": "broker (external)", "port": int(port or 0), "pid": None, "healthy": port_open(host, int(port or 0), 2.0)})
    if settings.schema_registry_url is not None:
        import httpx

        try:
            ok = httpx.get(settings.registry_url + "/subjects", timeout=3).status_code == 200
        except httpx.HTTPError:
            ok = False
        report["parts"].append({"name": "registry (external)", "port": 0, "pid": None, "healthy": ok})

    watermarks: dict[tuple[str, int], int] = {}
    try:
        from confluent_kafka import Consumer, TopicPartition

        from k2.bus.topics import list_topics

        topics = list_topics(settings, timeout=5)
        consumer = Consumer({**settings.kafka_client_config(), "group.id": f"k2-status-{uuid.uuid4().hex[:6]}"})
        try:
            for topic, partitions in sorted(topics.items()):
                total = 0
                for p in range(partitions):
                    _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=3)
                    watermarks[(topic, p)] = high
                    total += max(high, 0)
                report["topics"][topic] = {"partitions": partitions, "messages_approx": total}
        finally:
            consumer.close()
    except Exception as exc:  # the broker is down: say so, keep going
        report["errors"].append(f"broker: {exc}")

    try:
        from k2.lake.catalog import TABLES, ensure_tables, load_catalog
        from k2.landing.ledger import current_gaps
        from k2.landing.offsets import offsets_from_summary

        tables = ensure_tables(load_catalog(settings), settings)
        for short, table in tables.items():
            snapshot = table.current_snapshot()
            summary = snapshot.summary if snapshot is not None else None
            props = summary.additional_properties if summary is not None else {}
            offsets = offsets_from_summary(summary)
            lag = {}
            for topic, parts in offsets.items():
                for p, nxt in parts.items():
                    high = watermarks.get((topic, int(p)))
                    if high is not None and high >= 0:
                        lag[f"{topic}[{p}]"] = max(0, high - nxt)
            report["tables"][TABLES[short].full_name] = {
                "rows": int(props.get("total-records", 0)),
                "files": int(props.get("total-data-files", 0)),
                "bytes": int(props.get("total-files-size", 0)),
                "snapshots": len(table.metadata.snapshots),
                "last_commit": _iso(snapshot.timestamp_ms) if snapshot else "-",
                "last_commit_age_s": round(time.time() - snapshot.timestamp_ms / 1000, 1) if snapshot else None,
                "lag": lag,
            }
        gaps = current_gaps(tables["gaps"])
        for row in gaps.to_pylist():
            key = f"{row['exchange']}/{row['symbol']}"
            entry = report["gaps"].setdefault(key, {"open": 0, "backfilled": 0, "lost": 0})
            entry[row["status"]] = entry.get(row["status"], 0) + int(row["missing_count"])
    except Exception as exc:
        report["errors"].append(f"catalog: {exc}")
    for topic, info in report["topics"].items():
        if topic.endswith(".dlq"):
            report["dlq"][topic] = info["messages_approx"]
    return report


def render_status(report: dict[str, Any], console: Console) -> None:
    """Print the report as rich tables."""
    parts = RichTable("part", "port", "pid", "health", title="K2 stack")
    for p in report["parts"]:
        parts.add_row(p["name"], str(p["port"]), str(p["pid"] or "-"), "[green]up[/green]" if p["healthy"] else "[red]down[/red]")
    console.print(parts)
    topics = RichTable("topic", "partitions", "messages (approx.)", title="Topics")
    for name, info in report["topics"].items():
        topics.add_row(name, str(info["partitions"]), str(info["messages_approx"]))
    console.print(topics)
    tables = RichTable("table", "rows", "files", "bytes", "snapshots", "last commit", "lag (msgs, approx.)", title="Tables")
    for name, info in report["tables"].items():
        lag = sum(info["lag"].values()) if info["lag"] else 0
        tables.add_row(name, f"{info['rows']:,}", str(info["files"]), f"{info['bytes']:,}", str(info["snapshots"]), info["last_commit"], str(lag))
    console.print(tables)
    if report["gaps"]:
        gaps = RichTable("symbol", "open", "backfilled", "lost", title="Gaps (missing ids)")
        for key, entry in report["gaps"].items():
            gaps.add_row(key, str(entry.get("open", 0)), str(entry.get("backfilled", 0)), str(entry.get("lost", 0)))
        console.print(gaps)
    console.print(f"DLQ: {sum(report['dlq'].values())} messages" + (f" ({report['dlq']})" if report["dlq"] else ""))
    for error in report["errors"]:
        console.print(f"[red]{error}[/red]")
