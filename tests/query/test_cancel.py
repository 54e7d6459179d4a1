"""Cancelling a DuckDB statement (:mod:`k2.query.cancel`) when the cancel lands before the statement begins.

Seen in a full-suite run: ``k2 sql`` with ``K2_QUERY_CLI_TIMEOUT_SECONDS=1`` ran a cross join for 120 s. The
timeout fired after the scope had registered the connection but before DuckDB had started the statement,
and DuckDB forgets an interrupt that arrives before a query begins (it clears the flag at the start).
"""

from __future__ import annotations

import threading
import time

import duckdb
import pytest

from k2.query.cancel import CancelScope, guard
from k2.query.errors import QueryCancelledError

HOURS = "SELECT count(*) FROM range(1000000) a, range(1000000) b WHERE a.range + b.range = -1"


def _run(scope: CancelScope, con: duckdb.DuckDBPyConnection, before: bool) -> BaseException | None:
    try:
        with scope, guard(con):
            if before:
                scope.cancel()  # registered for the scope, the statement not begun yet
            con.execute(HOURS).fetchall()
    except BaseException as exc:  # handed to the test thread
        return exc
    return None


@pytest.mark.parametrize("before", [True, False], ids=["cancel-before-the-statement", "cancel-during-it"])
def test_a_cancel_stops_the_statement_whenever_it_lands(before: bool) -> None:
    con = duckdb.connect()
    scope = CancelScope() if before else CancelScope(timeout=0.2)
    outcome: list[BaseException | None] = []
    worker = threading.Thread(target=lambda: outcome.append(_run(scope, con, before)), daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(20)
    if worker.is_alive():  # stop the statement so the test process can end, then fail
        while worker.is_alive():
            con.interrupt()
            worker.join(0.1)
        pytest.fail("expected the cancelled statement to stop within 20 s, found it still running")
    assert isinstance(outcome[0], QueryCancelledError), outcome
    assert time.monotonic() - started < 20
    assert con.execute("SELECT 42").fetchone() == (42,)  # the connection still works
