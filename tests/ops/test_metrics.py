"""The metric registry: every declared metric works through ``metric()``, wrong labels are refused, and
every call site in src/ names a declared metric with exactly its declared labels (checked on the AST)."""

from __future__ import annotations

import ast
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from k2.telemetry.metrics import DECLARATIONS, MetricLabelError, declare_all, metric
from k2.telemetry.procs import free_port

SRC = Path(__file__).resolve().parents[2] / "src" / "k2"


def _exported(decl_name: str, decl_type: str) -> str:
    """The sample name Prometheus exposes for the metric's main value."""
    if decl_type == "histogram":
        return decl_name + "_count"
    return decl_name


@pytest.mark.parametrize("decl", DECLARATIONS, ids=lambda d: d.name)
def test_every_declared_metric_records_through_metric(decl) -> None:  # type: ignore[no-untyped-def]
    labels = {name: f"test-{name}" for name in decl.labels}
    child = metric(decl.name).labels(**labels)
    sample = _exported(decl.name, decl.type)
    before = REGISTRY.get_sample_value(sample, labels) or 0.0
    if decl.type == "counter":
        child.inc(3)
        assert REGISTRY.get_sample_value(sample, labels) == before + 3
    elif decl.type == "gauge":
        child.set(7.5)
        assert REGISTRY.get_sample_value(sample, labels) == 7.5
    else:
        child.observe(0.02)
        assert REGISTRY.get_sample_value(sample, labels) == before + 1
        assert REGISTRY.get_sample_value(decl.name + "_sum", labels) is not None
    # A label the declaration lacks, or a missing one, is refused with the expected and found names.
    with pytest.raises(MetricLabelError, match=decl.name):
        metric(decl.name).labels(**labels, extra="x")
    if decl.labels:
        with pytest.raises(MetricLabelError, match="expected labels"):
            metric(decl.name).labels()


def test_unknown_metric_is_refused() -> None:
    with pytest.raises(KeyError, match="k2_no_such_metric"):
        metric("k2_no_such_metric")


def test_declarations_are_unique_and_well_formed() -> None:
    names = [d.name for d in DECLARATIONS]
    assert len(names) == len(set(names))
    for d in DECLARATIONS:
        assert d.name.startswith("k2_"), d.name
        assert d.help.strip(), d.name
        assert (d.type == "counter") == d.name.endswith("_total"), f"{d.name}: counters (only) end in _total"
        assert d.type != "histogram" or d.buckets, f"{d.name}: histogram without buckets"


def test_metrics_endpoint_serves_every_declared_metric() -> None:
    from prometheus_client import start_http_server

    declare_all()
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1")
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
        thread.join(5)
    for d in DECLARATIONS:
        assert f"# HELP {d.name} {d.help}" in body, d.name


# -- call sites ------------------------------------------------------------------------------------


def _metric_name(node: ast.AST) -> str | None:
    """'k2_x' when node is ``metric("k2_x")``."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "metric"
        and len(node.args) == 1
        and isinstance(node.args[0], ast.Constant)
    ):
        return str(node.args[0].value)
    return None


def call_sites(path: Path) -> tuple[list[tuple[int, str, frozenset[str] | None]], list[str]]:
    """(line, metric, label names or None when the call is unlabelled) for every use; plus problems.

    Follows ``x = metric("...")`` / ``self.x = metric("...")`` assignments within the module, so that
    ``self.x.labels(...)`` later is attributed to its metric.
    """
    tree = ast.parse(path.read_text(), str(path))
    bound: dict[str, str] = {}
    problems: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            name = _metric_name(node.value)
            if name is not None:
                bound[ast.unparse(node.targets[0])] = name
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "metric"
            and _metric_name(node) is None
        ):
            problems.append(f"{path}:{node.lineno}: metric() must be called with one string literal")
    uses: list[tuple[int, str, frozenset[str] | None]] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in ("labels", "unlabelled"):
            continue
        receiver = node.func.value
        name = _metric_name(receiver) or bound.get(ast.unparse(receiver))
        if name is None:
            if "metric(" in path.read_text():
                problems.append(
                    f"{path}:{node.lineno}: .{node.func.attr}() on {ast.unparse(receiver)} not traceable to metric()"
                )
            continue
        if node.func.attr == "unlabelled":
            uses.append((node.lineno, name, frozenset()))
            continue
        if node.args or any(k.arg is None for k in node.keywords):
            problems.append(
                f"{path}:{node.lineno}: {name}.labels() must use keyword arguments only (no **kwargs)"
            )
            continue
        uses.append((node.lineno, name, frozenset(k.arg for k in node.keywords if k.arg)))
    for node in ast.walk(tree):
        name = _metric_name(node)
        if name is not None:
            uses.append((node.lineno, name, None))
    return uses, problems


def test_every_call_site_names_a_declared_metric_with_its_declared_labels() -> None:
    declared = {d.name: frozenset(d.labels) for d in DECLARATIONS}
    problems: list[str] = []
    used: set[str] = set()
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "metrics.py" and path.parent.name == "telemetry":
            continue
        uses, found = call_sites(path)
        problems += found
        for line, name, labels in uses:
            used.add(name)
            if name not in declared:
                problems.append(f"{path}:{line}: metric {name!r} is not declared")
            elif labels is not None and labels != declared[name]:
                problems.append(
                    f"{path}:{line}: {name} labels {sorted(labels)} != declared {sorted(declared[name])}"
                )
    assert not problems, "\n".join(problems)
    # The scan really sees the code base's call sites (guards against a scanner that finds nothing).
    assert {"k2_landing_rows_total", "k2_producer_messages_total"} <= used


def test_call_site_scanner_catches_a_wrong_label(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from k2.telemetry.metrics import metric\n"
        "class A:\n"
        "    def __init__(self):\n"
        "        self._m = metric('k2_landing_rows_total')\n"
        "    def f(self):\n"
        "        self._m.labels(tabel='x').inc()\n"
        "        metric('k2_landing_dlq_total').labels(topic='t', reason='r').inc()\n"
    )
    uses, problems = call_sites(bad)
    assert not problems
    assert (6, "k2_landing_rows_total", frozenset({"tabel"})) in uses
    assert (7, "k2_landing_dlq_total", frozenset({"topic", "reason"})) in uses


def test_every_declared_metric_is_emitted_somewhere() -> None:
    """A declared metric no code records would be an empty panel and an alert that can never fire."""
    used: set[str] = set()
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "metrics.py" and path.parent.name == "telemetry":
            continue
        uses, _ = call_sites(path)
        used |= {name for _, name, _ in uses}
    unused = sorted({d.name for d in DECLARATIONS} - used)
    assert not unused, f"declared but never recorded in src/: {unused}"
