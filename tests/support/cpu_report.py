"""Per-test CPU seconds, for finding where the suite's CPU goes: ``pytest -p tests.support.cpu_report``.

Each test's line is appended to ``$TEST_CPU_REPORT`` (default ``test-cpu.tsv``; one file for all xdist
workers; not a ``K2_*`` name, which tests/conftest.py clears), tab-separated: node id, wall seconds, CPU
seconds of the test process (every thread: in-process servers, the producer's librdkafka threads), CPU
seconds of child processes (reaped ones from ``RUSAGE_CHILDREN``, plus the growth of every live descendant
sampled with psutil before and after the test: the landing processes, API servers and ``k2 up`` stacks a
fixture started and still runs), how many DuckDB databases the test process opened (``duckdb.connect``,
wrapped to count: each :func:`k2.duck.connect` LOADs three extensions into a new in-memory database, ~0.4 s
of CPU), how many processes it started (``subprocess.Popen``), and how many of those were Python.

Hazards: the test is charged for the setup and teardown it ran (module and session fixtures included, so
the first test of a module carries the module's setup); a descendant that starts and exits within the test
without being reaped by this process (a grandchild) is counted by nobody; session servers (the broker, the
registry) are sampled like any other descendant, so their CPU while serving a test is charged to that test;
under ``-n N`` on fewer cores a test's wall includes waiting for a core, its CPU does not. Sum per module with
``awk -F'\\t' '{split($1,a,"::"); c[a[1]]+=$3+$4} END {for (m in c) print c[m], m}' test-cpu.tsv | sort -rn``.
"""

from __future__ import annotations

import os
import resource
import subprocess
import time
from collections.abc import Generator
from typing import Any

import duckdb
import psutil
import pytest

_opened = [0]
_started = [0, 0]  # processes, of which Python
_connect = duckdb.connect
_popen_init = subprocess.Popen.__init__


def _counting_connect(*args: object, **kwargs: object) -> duckdb.DuckDBPyConnection:
    _opened[0] += 1
    return _connect(*args, **kwargs)  # type: ignore[arg-type]


def _counting_popen(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
    _started[0] += 1
    first = args if isinstance(args, str) else (list(args)[0] if args else "")
    if "python" in os.path.basename(str(first)) or str(first).endswith("/k2"):
        _started[1] += 1
    _popen_init(self, args, *rest, **kwargs)


def pytest_configure(config: pytest.Config) -> None:
    """Count from here on (a hook: importing this module, e.g. for its doctests, patches nothing)."""
    duckdb.connect = _counting_connect
    subprocess.Popen.__init__ = _counting_popen  # type: ignore[method-assign]


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _descendants() -> dict[tuple[int, float], float]:
    """CPU seconds of every live descendant, keyed by (pid, start time) so a reused pid is a new process."""
    found: dict[tuple[int, float], float] = {}
    for child in psutil.Process().children(recursive=True):
        try:
            with child.oneshot():
                times = child.cpu_times()
                found[(child.pid, child.create_time())] = times.user + times.system
        except psutil.Error:
            continue
    return found


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    wall, own, children = time.monotonic(), _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    live_before = _descendants()
    opened, started, python = _opened[0], _started[0], _started[1]
    yield
    live_after = _descendants()
    live = sum(cpu - live_before.get(key, 0.0) for key, cpu in live_after.items())
    line = (
        f"{item.nodeid}\t{time.monotonic() - wall:.2f}\t{_cpu(resource.RUSAGE_SELF) - own:.2f}\t"
        f"{_cpu(resource.RUSAGE_CHILDREN) - children + live:.2f}\t{_opened[0] - opened}\t"
        f"{_started[0] - started}\t{_started[1] - python}\n"
    )
    with open(os.environ.get("TEST_CPU_REPORT", "test-cpu.tsv"), "a") as out:
        out.write(line)
