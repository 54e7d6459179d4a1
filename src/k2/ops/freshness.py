"""The landing service's freshness p50/p99, read from its ``/metrics`` endpoint (for ``k2 status``).

The landing measures, per table, how long its rows took from being produced to Kafka to being
queryable in Iceberg (:mod:`k2.landing.freshness`) and exports the p50/p99 of the last five minutes as
``k2_landing_freshness_quantile_seconds{table, quantile}``. This reads that gauge from the local landing
service (``127.0.0.1:landing_metrics_port``, as ``k2 up`` starts it).

Hazards: only the local landing process is read. Several landing processes, or one on another host,
each export their own figures (Prometheus aggregates those; ``k2 status`` does not). A landing that is
down or has ``landing_metrics_port = 0`` yields no figures (shown as ``n/a``), never an error.

Example (needs a landing service)::

    read_landing_freshness(load_settings())  # {"trades": {"p50_s": 0.81, "p99_s": 1.62}}
"""

from __future__ import annotations

import math
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from k2.config import Settings

GAUGE = "k2_landing_freshness_quantile_seconds"
_KEYS = {"0.5": "p50_s", "0.99": "p99_s"}


def parse_freshness(text: str) -> dict[str, dict[str, float]]:
    """The freshness quantiles in a Prometheus text exposition, per table (NaN values left out).

    Example:
        >>> parse_freshness('k2_landing_freshness_quantile_seconds{table="trades",quantile="0.5"} 0.8\\n')
        {'trades': {'p50_s': 0.8}}
    """
    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != GAUGE:
            continue
        for sample in family.samples:
            key = _KEYS.get(sample.labels.get("quantile", ""))
            if key is None or math.isnan(sample.value):
                continue
            found.setdefault(sample.labels.get("table", "?"), {})[key] = round(float(sample.value), 3)
    return found


def read_landing_freshness(settings: Settings, timeout: float = 2.0) -> dict[str, dict[str, float]]:
    """Per table, ``{"p50_s": ..., "p99_s": ...}`` from the local landing's /metrics ({} when unreachable)."""
    port = settings.landing_metrics_port
    if not port:
        return {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
            text = response.read().decode("utf-8", "replace")
    except OSError:
        return {}
    return parse_freshness(text)


def render_freshness(found: dict[str, dict[str, float]]) -> str:
    """One line for ``k2 status``.

    Example:
        >>> render_freshness({"trades": {"p50_s": 0.81, "p99_s": 1.62}})
        'Landing freshness (produced -> queryable in Iceberg, last 5 min): trades p50 0.81 s, p99 1.62 s'
        >>> render_freshness({})
        'Landing freshness (produced -> queryable in Iceberg, last 5 min): n/a (no row landed, or landing /metrics unreachable)'
    """
    head = "Landing freshness (produced -> queryable in Iceberg, last 5 min): "
    if not found:
        return head + "n/a (no row landed, or landing /metrics unreachable)"
    return head + "; ".join(
        f"{table} p50 {q.get('p50_s', float('nan')):.2f} s, p99 {q.get('p99_s', float('nan')):.2f} s"
        for table, q in sorted(found.items())
    )
