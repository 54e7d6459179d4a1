"""Every metric K2 emits, declared once: name, type, help and label names.

Call sites never build prometheus objects themselves; they go through :func:`metric`, whose
``labels(**kw)`` checks the label names against the declaration and raises
:class:`MetricLabelError` naming the metric, the expected labels and the ones found. (The system K2
replaces was broken for a day by a call site passing a label its declaration lacked.) A test exercises
every declared metric, and dashboards/alerts are checked against :data:`DECLARATIONS`.

Example:
    >>> from k2.telemetry.metrics import metric
    >>> metric("k2_landing_rows_total").labels(table="market_data.trades").inc(10)
    >>> metric("k2_landing_rows_total").labels(tabel="x")
    Traceback (most recent call last):
    ...
    k2.telemetry.metrics.MetricLabelError: k2_landing_rows_total: expected labels ['table'], found ['tabel']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

MetricType = Literal["counter", "gauge", "histogram"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIZE_BUCKETS = (1, 10, 100, 1_000, 10_000, 50_000, 100_000, 250_000, 500_000, 1_000_000)


class MetricLabelError(ValueError):
    """A call site passed label names that differ from the metric's declaration."""


@dataclass(frozen=True)
class MetricDecl:
    """Declaration of one metric."""

    name: str
    type: MetricType
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None


DECLARATIONS: tuple[MetricDecl, ...] = (
    # sources
    MetricDecl("k2_source_messages_total", "counter", "Messages received from a source.", ("source", "kind")),
    MetricDecl(
        "k2_source_reconnects_total", "counter", "Reconnections of a live source.", ("source", "reason")
    ),
    MetricDecl(
        "k2_source_lag_seconds",
        "gauge",
        "Receipt time minus exchange time of the latest message.",
        ("source",),
    ),
    MetricDecl(
        "k2_source_gaps_total", "counter", "Sequence gaps detected by a source.", ("source", "outcome")
    ),
    MetricDecl(
        "k2_source_errors_total", "counter", "Malformed or rejected source messages.", ("source", "reason")
    ),
    MetricDecl(
        "k2_replay_rows_total", "counter", "Stored rows re-published to Kafka by k2 replay.", ("table",)
    ),
    # producer
    MetricDecl(
        "k2_producer_messages_total", "counter", "Messages delivered to Kafka (acknowledged).", ("topic",)
    ),
    MetricDecl(
        "k2_producer_errors_total", "counter", "Delivery failures reported by the broker.", ("topic", "error")
    ),
    MetricDecl("k2_producer_queue_depth", "gauge", "Messages waiting in the producer's local queue.", ()),
    MetricDecl(
        "k2_producer_blocked_seconds_total", "counter", "Time callers waited on a full producer queue.", ()
    ),
    MetricDecl(
        "k2_producer_recreated_total",
        "counter",
        "Producer handles recreated after a lost producer state or a stall (a restarted broker); unacked messages re-sent.",
        (),
    ),
    # landing
    MetricDecl("k2_landing_rows_total", "counter", "Rows committed to Iceberg.", ("table",)),
    MetricDecl(
        "k2_landing_commits_total",
        "counter",
        "Iceberg commits by the landing consumer.",
        ("table", "outcome"),
    ),
    MetricDecl("k2_landing_batch_rows", "histogram", "Rows per Iceberg commit.", ("table",), SIZE_BUCKETS),
    MetricDecl(
        "k2_landing_commit_seconds", "histogram", "Latency of an Iceberg commit.", ("table",), LATENCY_BUCKETS
    ),
    MetricDecl(
        "k2_landing_consumer_lag",
        "gauge",
        "Messages behind the log end per partition.",
        ("topic", "partition"),
    ),
    MetricDecl(
        "k2_landing_freshness_seconds", "gauge", "Age of the newest landed exchange time.", ("table",)
    ),
    MetricDecl(
        "k2_landing_freshness_quantile_seconds",
        "gauge",
        "Produced (ingest_ts) -> committed to Iceberg latency of the rows landed in the last 5 minutes, "
        "by quantile (0.5, 0.99); NaN when none landed (k2.landing.freshness).",
        ("table", "quantile"),
    ),
    MetricDecl("k2_landing_duplicates_total", "counter", "Messages dropped as duplicates.", ("table",)),
    MetricDecl(
        "k2_landing_out_of_order_total",
        "counter",
        "Messages older than the symbol's high-water mark.",
        ("table",),
    ),
    MetricDecl("k2_landing_gaps_total", "counter", "Gaps recorded in quality.gaps.", ("table",)),
    MetricDecl(
        "k2_landing_dlq_total", "counter", "Messages sent to the dead-letter queue.", ("topic", "reason")
    ),
    MetricDecl("k2_landing_paused_partitions", "gauge", "Partitions paused for backpressure.", ()),
    MetricDecl("k2_landing_buffered_bytes", "gauge", "Raw bytes buffered and not yet committed.", ()),
    # query and API
    MetricDecl("k2_query_seconds", "histogram", "Query latency.", ("query",), LATENCY_BUCKETS),
    MetricDecl("k2_query_errors_total", "counter", "Failed queries.", ("query", "error")),
    MetricDecl("k2_api_requests_total", "counter", "HTTP requests served.", ("route", "method", "status")),
    MetricDecl(
        "k2_api_request_seconds", "histogram", "HTTP request latency.", ("route", "method"), LATENCY_BUCKETS
    ),
    MetricDecl("k2_api_rate_limited_total", "counter", "Requests refused with 429.", ()),
    MetricDecl(
        "k2_api_cache_hits_total",
        "counter",
        "API result cache hits (results keyed by snapshot ids).",
        ("endpoint",),
    ),
    MetricDecl("k2_api_cache_misses_total", "counter", "API result cache misses.", ("endpoint",)),
    MetricDecl(
        "k2_api_cache_waits_total",
        "counter",
        "API requests answered by waiting for the same query another request was already computing.",
        ("endpoint",),
    ),
    MetricDecl(
        "k2_api_cache_bytes", "gauge", "Bytes of results held by the API result cache of this process.", ()
    ),
    MetricDecl(
        "k2_api_requests_in_progress",
        "gauge",
        "Data requests in progress (query running or body still streaming).",
        (),
    ),
    MetricDecl(
        "k2_api_admission_refused_total",
        "counter",
        "Data requests refused because too many were in progress (429 per key, 503 per process).",
        ("status",),
    ),
    # maintenance
    MetricDecl("k2_maintenance_runs_total", "counter", "Table maintenance runs.", ("table", "action")),
    MetricDecl(
        "k2_maintenance_files_removed_total",
        "counter",
        "Data files rewritten away by compaction.",
        ("table",),
    ),
)

_BY_NAME = {d.name: d for d in DECLARATIONS}


class DeclaredMetric:
    """A declared metric; ``labels(**kw)`` checks names against the declaration."""

    def __init__(self, decl: MetricDecl, registry: CollectorRegistry) -> None:
        self.decl = decl
        kwargs: dict[str, Any] = {"registry": registry}
        if decl.type == "histogram" and decl.buckets is not None:
            kwargs["buckets"] = decl.buckets
        cls = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}[decl.type]
        name = (
            decl.name[: -len("_total")]
            if decl.type == "counter" and decl.name.endswith("_total")
            else decl.name
        )
        self._metric = cls(name, decl.help, list(decl.labels), **kwargs)

    def labels(self, **labels: str | int) -> Any:
        """The child metric for these labels (exactly the declared names)."""
        if sorted(labels) != sorted(self.decl.labels):
            raise MetricLabelError(
                f"{self.decl.name}: expected labels {sorted(self.decl.labels)}, found {sorted(labels)}"
            )
        if not labels:
            return self._metric
        return self._metric.labels(**{k: str(v) for k, v in labels.items()})

    def unlabelled(self) -> Any:
        """The metric itself, for metrics declared without labels."""
        return self.labels()


_INSTANCES: dict[str, DeclaredMetric] = {}


def metric(name: str) -> DeclaredMetric:
    """The declared metric called ``name`` (KeyError naming the known metrics otherwise)."""
    inst = _INSTANCES.get(name)
    if inst is None:
        decl = _BY_NAME.get(name)
        if decl is None:
            raise KeyError(f"expected a metric declared in k2.telemetry.metrics.DECLARATIONS, found {name!r}")
        inst = _INSTANCES[name] = DeclaredMetric(decl, REGISTRY)
    return inst


def declare_all() -> None:
    """Instantiate every declared metric (so /metrics lists them even before first use)."""
    for decl in DECLARATIONS:
        metric(decl.name)
