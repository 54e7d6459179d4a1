"""Per-test CPU seconds, for finding where the suite's CPU goes: ``pytest -p tests.support.cpu_report``.

Each test's line is appended to ``$TEST_CPU_REPORT`` (default ``test-cpu.tsv``; one file for all xdist
workers; not a ``K2_*`` name, which tests/conftest.py clears): wall seconds, CPU seconds of the test
process (every thread: in-process servers, the producer's librdkafka threads), CPU seconds of the child
processes it reaped (``k2`` CLI calls, landing processes a test waited for), setup + call + teardown, and
how many DuckDB databases the test process opened (``duckdb.connect``, wrapped to count: each
:func:`k2.duck.connect` LOADs three extensions into a new in-memory database, ~0.4 s of CPU). Hazards: a child still running when the test ends
(session servers: the broker, the registry) is counted by nobody; under ``-n N`` on fewer cores a test's
wall includes waiting for a core, its CPU does not. Sum per module with
``awk -F'\\t' '{split($1,a,"::"); c[a[1]]+=$3+$4} END {for (m in c) print c[m], m}' test-cpu.tsv | sort -rn``.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Generator

import duckdb
import pytest

_opened = [0]
_connect = duckdb.connect


def _counting_connect(*args: object, **kwargs: object) -> duckdb.DuckDBPyConnection:
    _opened[0] += 1
    return _connect(*args, **kwargs)  # type: ignore[arg-type]


def pytest_configure(config: pytest.Config) -> None:
    """Count from here on (a hook: importing this module, e.g. for its doctests, patches nothing)."""
    duckdb.connect = _counting_connect


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    wall, own, children = time.monotonic(), _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    opened = _opened[0]
    yield
    line = (
        f"{item.nodeid}\t{time.monotonic() - wall:.2f}\t{_cpu(resource.RUSAGE_SELF) - own:.2f}\t"
        f"{_cpu(resource.RUSAGE_CHILDREN) - children:.2f}\t{_opened[0] - opened}\n"
    )
    with open(os.environ.get("TEST_CPU_REPORT", "test-cpu.tsv"), "a") as out:
        out.write(line)
