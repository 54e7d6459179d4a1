"""Cancelling running queries: a :class:`CancelScope` interrupts the DuckDB statements run inside it.

A scope is entered in the thread that runs the queries; any other thread may call :meth:`CancelScope.cancel`
(or give the scope a ``timeout``). Cancelling calls DuckDB's ``interrupt()`` on every pooled connection
currently running a statement for the scope, so the statement stops within milliseconds, the connection
goes back to the pool in a usable state, and the query method raises :class:`QueryCancelledError`. A
statement that would start after the cancel raises at once without running.

Example:
    >>> import duckdb
    >>> scope = CancelScope()
    >>> con = duckdb.connect()
    >>> with scope, guard(con):
    ...     con.execute("SELECT 1").fetchone()[0]
    1
    >>> scope.cancel()
    >>> with scope, guard(con):
    ...     pass
    Traceback (most recent call last):
    ...
    k2.query.errors.QueryCancelledError: expected the query to run, found it cancelled before it started
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType

import duckdb

from k2.query.errors import QueryCancelledError

_REINTERRUPT_SECONDS = 0.02
_CURRENT: contextvars.ContextVar[CancelScope | None] = contextvars.ContextVar("k2_cancel_scope", default=None)


class CancelScope:
    """A handle that interrupts the queries run inside ``with scope:`` (in this thread) when cancelled.

    ``timeout`` (seconds) cancels the scope automatically that long after it is entered.

    Example::

        with CancelScope(timeout=5.0):
            client.bars("BTCUSDT", "1s", start, end)   # QueryCancelledError after 5 s

        scope = CancelScope()          # or cancel from another thread:
        threading.Timer(1.0, scope.cancel).start()
        with scope:
            client.sql("SELECT count(*) FROM trades")
    """

    def __init__(self, timeout: float | None = None) -> None:
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout: expected a positive number of seconds, found {timeout!r}")
        self.timeout = timeout
        self._lock = threading.Lock()
        self._cancelled = False
        self._running: dict[int, duckdb.DuckDBPyConnection] = {}
        self._tokens: list[contextvars.Token[CancelScope | None]] = []
        self._timer: threading.Timer | None = None

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called (or the timeout passed).

        >>> CancelScope().cancelled
        False
        """
        return self._cancelled

    def cancel(self) -> None:
        """Interrupt the statements running in this scope and refuse any later one (thread-safe, idempotent).

        >>> scope = CancelScope()
        >>> scope.cancel(); scope.cancelled
        True
        """
        with self._lock:
            self._cancelled = True
            running = bool(self._running)
            for con in self._running.values():
                con.interrupt()
        if running:
            threading.Thread(target=self._keep_interrupting, name="k2-cancel", daemon=True).start()

    def _keep_interrupting(self) -> None:
        """Interrupt the scope's connections again until none runs a statement for it.

        DuckDB forgets an interrupt that lands before its statement has begun (it clears the flag when a
        query starts: a cross join interrupted that way ran on past a 1 s CLI timeout), and a block may run
        several statements. Interrupts are sent under the lock, to connections still registered here only:
        a connection back in its pool is never interrupted (it may run someone else's query by then).
        """
        while True:
            time.sleep(_REINTERRUPT_SECONDS)
            with self._lock:
                if not self._running:
                    return
                for con in self._running.values():
                    con.interrupt()

    def __enter__(self) -> CancelScope:
        self._tokens.append(_CURRENT.set(self))
        if self.timeout is not None and self._timer is None:
            self._timer = threading.Timer(self.timeout, self.cancel)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _CURRENT.reset(self._tokens.pop())
        if not self._tokens and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @contextmanager
    def _run(self, con: duckdb.DuckDBPyConnection) -> Iterator[None]:
        with self._lock:
            if self._cancelled:
                raise QueryCancelledError("expected the query to run, found it cancelled before it started")
            self._running[id(con)] = con
        try:
            yield
        except duckdb.InterruptException:
            raise QueryCancelledError(
                "expected the query to finish, found it interrupted (cancelled or timed out)"
            ) from None
        finally:
            with self._lock:
                self._running.pop(id(con), None)
        if self._cancelled:  # cancelled while the statement ran, but it finished before the interrupt landed
            raise QueryCancelledError(
                "expected the query to finish, found it cancelled (cancelled or timed out)"
            )


def current_scope() -> CancelScope | None:
    """The scope entered in this thread (context), if any.

    >>> current_scope() is None
    True
    """
    return _CURRENT.get()


@contextmanager
def guard(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Run the statements of the block on ``con`` under the current scope (no-op without one).

    A DuckDB interrupt inside the block becomes :class:`QueryCancelledError`.

    Example::

        with pool.connection() as con, guard(con):
            con.execute(sql, params).to_arrow_table()
    """
    scope = _CURRENT.get()
    if scope is None:
        yield
        return
    with scope._run(con):
        yield
