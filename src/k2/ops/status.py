"""``k2 status``: one screen for the operator — parts, sources, topics, tables, gaps, DLQ.

Everything is read from the real services, never from the processes' memory:

* parts: pid files and ports of the local stack (or a network check of external services);
* per topic (from the broker and the Iceberg snapshot summaries, which hold the Kafka offsets landed):
  the offset landed up to, the landing **rate** (messages covered by commits in the last
  ``window_seconds``), the **last commit** that covered the topic, the **lag** (what the log still holds
  and did not land) and **trimmed before landing** (messages the broker deleted — retention,
  delete_records — before they landed), both by :func:`k2.bus.lag.partition_lag`, the rule ``/v1/lag``
  applies too. Tansu reports as high watermark the first offset of its last batch + 1, not the log
  end: on Tansu the lag is a lower bound and is shown as ``≥ N``; K2 never reads "until the end offset";
* per source (exchange): its topics' rate, lag and last commit, the **freshness** (now minus the newest
  landed exchange time: a DuckDB query over the newest two days of the table, pruned by partition), and
  its **open gaps** from ``quality.gaps``;
* per table: rows, data files, bytes and snapshots (from the current snapshot's summary);
* the DLQ: messages in each ``<topic>.dlq`` (high watermark minus low watermark; approximate on Tansu),
  and how many of them ``k2 dlq replay`` moved back (``dlq_replayed``: the ``<dlq>.replayed`` markers).

Example (needs the stack)::

    render_status(collect_status(load_settings()), Console())
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

from k2.bus.broker import read_watermarks
from k2.bus.lag import PartitionLag, partition_lag, total_lag
from k2.bus.topics import is_dlq_topic
from k2.config import Settings
from k2.ops.freshness import read_landing_freshness, render_freshness
from k2.telemetry.procs import pid_alive, port_open

DAY_US = 86_400_000_000


def _iso(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def _age(seconds: float | None) -> str:
    """A short human age: 4s, 12m, 3h, 5d."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size * 2:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _exchange_of(topic: str) -> str | None:
    parts = topic.split(".")
    if len(parts) == 4 and parts[0] == "market":
        return parts[3]
    return None


def _parts(settings: Settings) -> list[dict[str, Any]]:
    from k2.ops import stack

    parts = []
    for part in stack.planned_parts(settings):
        found = stack.read_pid(settings, part.name)
        alive = found is not None and pid_alive(found[0])
        parts.append(
            {
                "name": part.name,
                "port": part.port,
                "pid": found[0] if found else None,
                "healthy": alive and port_open("127.0.0.1", part.port),
            }
        )
    if settings.kafka_bootstrap_servers is not None:
        host, _, port = settings.kafka_bootstrap_servers.split(",")[0].rpartition(":")
        parts.append(
            {
                "name": "broker (external)",
                "port": int(port or 0),
                "pid": None,
                "healthy": port_open(host, int(port or 0), 2.0),
            }
        )
    if settings.schema_registry_url is not None:
        import httpx

        try:
            ok = httpx.get(settings.registry_url + "/subjects", timeout=3).status_code == 200
        except httpx.HTTPError:
            ok = False
        parts.append({"name": "registry (external)", "port": 0, "pid": None, "healthy": ok})
    return parts


def _broker(settings: Settings, report: dict[str, Any]) -> dict[tuple[str, int], tuple[int, int]]:
    """Topic partitions and their (low, high) watermarks; fills report["topics"] and ["broker"]."""
    found = read_watermarks(settings, "k2-status", list_timeout=5, timeout=3)
    report["broker"] = {
        "cluster_id": found.cluster_id,
        "brokers": found.brokers,
        "watermarks_exact": found.exact,
    }
    marks: dict[tuple[str, int], tuple[int, int]] = {}
    for topic, partitions in found.topics.items():
        marks.update({(topic, p): mark for p, mark in partitions.items()})
        report["topics"][topic] = {
            "partitions": len(partitions),
            "messages": sum(max(high - max(low, 0), 0) for low, high in partitions.values()),
            "messages_exact": found.exact,
        }
    return marks


def _newest_exchange_times(settings: Settings, tables: dict[str, Any]) -> dict[str, int]:
    """Newest landed exchange_ts (µs) per exchange over trades and quotes: DuckDB on the newest two days."""
    from k2.lake.catalog import metadata_location
    from k2.query.engine import new_connection

    newest: dict[str, int] = {}
    con = None
    try:
        for short in ("trades", "quotes"):
            table = tables.get(short)
            if table is None or table.current_snapshot() is None:
                continue
            files = table.inspect.files()
            if not files.num_rows:
                continue
            bounds = [
                m["exchange_ts"]["upper_bound"]
                for m in files["readable_metrics"].to_pylist()
                if m and m.get("exchange_ts")
            ]
            if not bounds:
                continue
            top = max(bounds)
            top_us = int(top.timestamp() * 1_000_000) if isinstance(top, datetime) else int(top)
            con = con or new_connection(settings)
            rows = con.execute(
                "SELECT exchange, epoch_us(max(exchange_ts)) FROM iceberg_scan(?) WHERE exchange_ts >= make_timestamptz(?) GROUP BY exchange",
                [metadata_location(table), top_us - 2 * DAY_US],
            ).fetchall()
            for exchange, ts in rows:
                newest[exchange] = max(newest.get(exchange, 0), int(ts))
    finally:
        if con is not None:
            con.close()
    return newest


def collect_status(settings: Settings, window_seconds: float = 300.0) -> dict[str, Any]:
    """Gather the status report as plain data (also printed by ``k2 status --json``).

    Each step records its own failure in ``errors`` and the report goes on: a broker or catalog that is
    down is part of the answer, not a reason to give none.

    Example (needs the stack)::

        report = collect_status(load_settings())
        report["sources"]["binance"]["freshness_s"]
    """
    now_ms = int(time.time() * 1000)
    report: dict[str, Any] = {
        "generated": _iso(now_ms), "window_seconds": window_seconds, "parts": _parts(settings), "broker": {},
        "sources": {}, "topics": {}, "tables": {}, "gaps": {}, "dlq": {}, "dlq_replayed": {}, "errors": [],
    }  # fmt: skip
    marks: dict[tuple[str, int], tuple[int, int]] = {}
    try:
        marks = _broker(settings, report)
    except Exception as exc:  # the broker is down: say so, keep going
        report["errors"].append(f"broker: {exc}")
    tables: dict[str, Any] = {}
    try:
        tables = _collect_tables(settings, report, marks, window_seconds, now_ms)
    except Exception as exc:
        report["errors"].append(f"catalog: {exc}")
    open_gaps = _collect_gaps(tables, report)
    newest: dict[str, int] = {}
    try:
        newest = _newest_exchange_times(settings, tables)
    except Exception as exc:
        report["errors"].append(f"freshness: {exc}")
    _collect_sources(report, marks)
    for exchange, source in report["sources"].items():
        ts = newest.get(exchange)
        source["newest_exchange_ts"] = _iso(ts // 1000) if ts else None
        source["freshness_s"] = round(now_ms / 1000 - ts / 1e6, 1) if ts else None
        source["open_gaps"] = open_gaps.get(exchange, 0)
    # Produced -> queryable in Iceberg, p50/p99 of the last 5 minutes, from the landing's /metrics (k2.ops.freshness).
    report["landing_freshness"] = read_landing_freshness(settings)
    return report


def _collect_tables(
    settings: Settings,
    report: dict[str, Any],
    marks: dict[tuple[str, int], tuple[int, int]],
    window_seconds: float,
    now_ms: int,
) -> dict[str, Any]:
    """Per table: size and last commit; per landed topic: landed offsets, lag, rate. Returns the tables."""
    from k2.lake.catalog import TABLES, ensure_tables, load_catalog
    from k2.lake.summary import offsets_from_summary, topic_commits

    exact = bool(report["broker"].get("watermarks_exact", False))
    tables = ensure_tables(load_catalog(settings), settings)
    for short, table in tables.items():
        snapshot = table.current_snapshot()
        summary = snapshot.summary if snapshot is not None else None
        props = summary.additional_properties if summary is not None else {}
        covered, last = topic_commits(table.metadata.snapshots, now_ms - window_seconds * 1000)
        for topic, parts in offsets_from_summary(summary).items():
            entry = report["topics"].setdefault(
                topic, {"partitions": len(parts), "messages": None, "messages_exact": exact}
            )
            counted = _topic_lag(marks, topic, {int(p): int(o) for p, o in parts.items()})
            entry.update(
                table=TABLES[short].full_name,
                landed_offsets={p: int(o) for p, o in parts.items()},
                lag=counted.lag,
                trimmed_before_landing=counted.trimmed,
                lag_exact=exact,
                rate_per_s=round(covered.get(topic, 0) / window_seconds, 2),
                last_commit=_iso(last.get(topic)),
                last_commit_age_s=round((now_ms - last[topic]) / 1000, 1) if topic in last else None,
            )
        report["tables"][TABLES[short].full_name] = {
            "rows": int(props.get("total-records", 0)),
            "files": int(props.get("total-data-files", 0)),
            "bytes": int(props.get("total-files-size", 0)),
            "snapshots": len(table.metadata.snapshots),
            "last_commit": _iso(snapshot.timestamp_ms) if snapshot else "-",
            "last_commit_age_s": round((now_ms - snapshot.timestamp_ms) / 1000, 1) if snapshot else None,
        }
    return tables


def _collect_gaps(tables: dict[str, Any], report: dict[str, Any]) -> dict[str, int]:
    """Missing ids per symbol and status into ``report["gaps"]``; returns open missing ids per exchange."""
    open_gaps: dict[str, int] = {}
    if "gaps" not in tables:
        return open_gaps
    try:
        from k2.landing.ledger import current_gaps

        for row in current_gaps(tables["gaps"]).to_pylist():
            key = f"{row['exchange']}/{row['symbol']}"
            entry = report["gaps"].setdefault(key, {"open": 0, "backfilled": 0, "lost": 0})
            entry[row["status"]] = entry.get(row["status"], 0) + int(row["missing_count"])
            if row["status"] == "open":
                open_gaps[row["exchange"]] = open_gaps.get(row["exchange"], 0) + int(row["missing_count"])
    except Exception as exc:
        report["errors"].append(f"gaps: {exc}")
    return open_gaps


def _topic_lag(
    marks: dict[tuple[str, int], tuple[int, int]], topic: str, landed: dict[int, int]
) -> PartitionLag:
    """Lag and trimmed-before-landing of ``topic`` over its partitions (k2.bus.lag: the rule /v1/lag applies)."""
    partitions = {p for t, p in marks if t == topic} | set(landed)
    return total_lag(
        partition_lag(landed.get(p), *marks.get((topic, p), (None, None))) for p in sorted(partitions)
    )


def _collect_sources(report: dict[str, Any], marks: dict[tuple[str, int], tuple[int, int]]) -> None:
    """Dead-letter counts per DLQ, and per exchange the sum of its topics' rate, lag and last commit."""
    exact = bool(report["broker"].get("watermarks_exact", False))
    for topic, info in report["topics"].items():
        if topic.endswith((".dlq", ".dlq.replayed")):  # dead letters: counted when K2's, never lag
            if is_dlq_topic(topic):
                report["dlq"][topic] = info["messages"]
            elif is_dlq_topic(topic.removesuffix(".replayed")):  # one marker per letter `k2 dlq replay` moved
                report["dlq_replayed"][topic.removesuffix(".replayed")] = info["messages"]
            continue
        exchange = _exchange_of(topic)
        if exchange is None:
            continue
        if "lag" not in info:  # nothing landed from this topic yet: all it still holds is waiting
            counted = _topic_lag(marks, topic, {})
            info.update(
                lag=counted.lag, trimmed_before_landing=counted.trimmed, lag_exact=exact, rate_per_s=0.0,
                last_commit="-", last_commit_age_s=None,
            )  # fmt: skip
        source = report["sources"].setdefault(
            exchange,
            {
                "topics": [],
                "rate_per_s": 0.0,
                "lag": 0,
                "lag_exact": exact,
                "last_commit_age_s": None,
                "open_gaps": 0,
            },
        )
        source["topics"].append(topic)
        source["rate_per_s"] = round(source["rate_per_s"] + info.get("rate_per_s", 0.0), 2)
        if source["lag"] is not None:
            source["lag"] = None if info["lag"] is None else source["lag"] + info["lag"]
        age = info.get("last_commit_age_s")
        if age is not None and (source["last_commit_age_s"] is None or age < source["last_commit_age_s"]):
            source["last_commit_age_s"] = age


def _lag_text(lag: int | None, exact: bool) -> str:
    if lag is None:
        return "?"
    return f"{lag:,}" if exact else f"≥ {lag:,}"


# long: the one-screen status, one table after another in the order they are printed.
def render_status(report: dict[str, Any], console: Console) -> None:
    """Print the report as rich tables (one screen)."""
    parts = RichTable("part", "port", "pid", "health", title="K2 stack")
    for p in report["parts"]:
        parts.add_row(
            p["name"],
            str(p["port"]),
            str(p["pid"] or "-"),
            "[green]up[/green]" if p["healthy"] else "[red]down[/red]",
        )
    console.print(parts)
    window = int(report.get("window_seconds", 300))
    sources = RichTable(
        "source",
        f"rate (msg/s, {window}s)",
        "lag (msgs)",
        "freshness",
        "newest exchange time",
        "last commit",
        "open gaps",
        title="Sources",
    )
    for name, s in sorted(report["sources"].items()):
        sources.add_row(
            name, f"{s['rate_per_s']:,.1f}", _lag_text(s["lag"], s["lag_exact"]), _age(s.get("freshness_s")),
            s.get("newest_exchange_ts") or "-", f"{_age(s['last_commit_age_s'])} ago" if s["last_commit_age_s"] is not None else "-",
            str(s["open_gaps"]),
        )  # fmt: skip
    console.print(sources)
    exact = report.get("broker", {}).get("watermarks_exact", True)
    topics = RichTable(
        "topic",
        "partitions",
        "messages" + ("" if exact else " (approx.)"),
        "landed to",
        "lag",
        "trimmed before landing",
        "rate (msg/s)",
        "last commit",
        title="Topics",
    )
    for name, info in sorted(report["topics"].items()):
        if name.endswith((".dlq", ".dlq.replayed")):
            continue
        landed = info.get("landed_offsets")
        topics.add_row(
            name, str(info["partitions"]), "-" if info["messages"] is None else f"{info['messages']:,}",
            ", ".join(f"{p}:{o}" for p, o in sorted(landed.items())) if landed else "-",
            _lag_text(info.get("lag"), info.get("lag_exact", exact)) if "lag" in info else "-",
            f"{info['trimmed_before_landing']:,}" if info.get("trimmed_before_landing") else "-",
            f"{info.get('rate_per_s', 0.0):,.1f}", info.get("last_commit", "-"),
        )  # fmt: skip
    console.print(topics)
    tables = RichTable("table", "rows", "files", "bytes", "snapshots", "last commit", title="Tables")
    for name, info in report["tables"].items():
        tables.add_row(
            name,
            f"{info['rows']:,}",
            str(info["files"]),
            f"{info['bytes']:,}",
            str(info["snapshots"]),
            info["last_commit"],
        )
    console.print(tables)
    console.print(render_freshness(report.get("landing_freshness", {})), markup=False, highlight=False)
    if report["gaps"]:
        gaps = RichTable("symbol", "open", "backfilled", "lost", title="Gaps (missing ids)")
        for key, entry in report["gaps"].items():
            gaps.add_row(
                key, str(entry.get("open", 0)), str(entry.get("backfilled", 0)), str(entry.get("lost", 0))
            )
        console.print(gaps)
    dlq = {k: v for k, v in report["dlq"].items() if v}
    total = sum(v or 0 for v in report["dlq"].values())
    replayed = sum(v or 0 for k, v in report.get("dlq_replayed", {}).items() if k in report["dlq"])
    console.print(
        f"DLQ: {'' if exact else '≈ '}{total:,} messages"
        + (f", {replayed:,} replayed, {max(0, total - replayed):,} waiting" if replayed else "")
        + (f" {dlq}" if dlq else "")
        + ("  (k2 dlq list)" if total else ""),
        markup=False,
        highlight=False,
    )
    if not exact:
        console.print(
            "[dim]lag and message counts are approximate: Tansu's high watermark is the start of its last batch[/dim]"
        )
    for error in report["errors"]:
        console.print(f"[red]{error}[/red]")
