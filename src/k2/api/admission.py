"""Admission of data requests: at most ``api_max_concurrent_per_key`` per key and
``api_max_concurrent_requests`` per process in progress at once.

A request is "in progress" from the moment its query starts until its body has been sent or its client
has gone. Large row pages are read chunk by chunk as the client reads (:mod:`k2.api.bigpage`); other
results stay in memory while a slow client reads them, so the number of requests in progress bounds the
memory the API holds (about ``api_max_concurrent_requests`` results, whatever the clients do). Beyond the per-key bound the request gets 429 ``too_many_requests_in_progress``; beyond the
process bound 503 ``busy``; both with ``Retry-After``.

:class:`AdmittedStreamingResponse` releases its slot when the body is done or the client disconnected,
then asks Arrow's memory pool to return freed memory to the operating system (jemalloc/mimalloc keep
freed pages otherwise, which looks like a leak after a burst of large responses).

Example:
    >>> gate = Admission(per_key=1, total=2)
    >>> ticket = gate.admit("k1")
    >>> gate.in_progress("k1"), gate.total_in_progress()
    (1, 1)
    >>> ticket.release(); ticket.release()  # idempotent
    >>> gate.total_in_progress()
    0
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pyarrow as pa
from fastapi.responses import StreamingResponse

from k2.api.errors import APIError
from k2.telemetry.metrics import metric

RETRY_AFTER_SECONDS = 1


class Ticket:
    """One admitted request; :meth:`release` (idempotent) frees its slot."""

    def __init__(self, release: Callable[[], None]) -> None:
        self._release: Callable[[], None] | None = release
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            release, self._release = self._release, None
        if release is not None:
            release()


class Admission:
    """Counts data requests in progress per key and in total (thread-safe)."""

    def __init__(self, per_key: int, total: int) -> None:
        self.per_key = per_key
        self.total = total
        self._counts: dict[str, int] = {}
        self._total = 0
        self._lock = threading.Lock()

    def in_progress(self, key: str) -> int:
        with self._lock:
            return self._counts.get(key, 0)

    def total_in_progress(self) -> int:
        with self._lock:
            return self._total

    def admit(self, key: str) -> Ticket:
        """A ticket for one more request of ``key``; APIError 429 (this key) or 503 (this process) when full."""
        with self._lock:
            if self._counts.get(key, 0) >= self.per_key:
                refused: APIError | None = APIError(
                    429,
                    "too_many_requests_in_progress",
                    f"expected at most api_max_concurrent_per_key={self.per_key} requests of this key in progress "
                    f"(query running or body not yet read), found {self._counts[key]}; retry after {RETRY_AFTER_SECONDS}s",
                    {"max_in_progress": self.per_key, "retry_after_seconds": RETRY_AFTER_SECONDS},
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                )
            elif self._total >= self.total:
                refused = APIError(
                    503,
                    "busy",
                    f"expected at most api_max_concurrent_requests={self.total} requests in progress in this API process, "
                    f"found {self._total}; retry after {RETRY_AFTER_SECONDS}s",
                    {"max_in_progress": self.total, "retry_after_seconds": RETRY_AFTER_SECONDS},
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                )
            else:
                refused = None
                self._counts[key] = self._counts.get(key, 0) + 1
                self._total += 1
        if refused is not None:
            metric("k2_api_admission_refused_total").labels(status=str(refused.status)).inc()
            raise refused
        metric("k2_api_requests_in_progress").unlabelled().inc()
        return Ticket(lambda: self._leave(key))

    def _leave(self, key: str) -> None:
        with self._lock:
            left = self._counts.get(key, 0) - 1
            if left > 0:
                self._counts[key] = left
            else:
                self._counts.pop(key, None)
            self._total -= 1
        metric("k2_api_requests_in_progress").unlabelled().dec()


class AdmittedStreamingResponse(StreamingResponse):
    """A streamed body that releases its admission ticket once sent or abandoned, and frees its memory."""

    ticket: Ticket | None = None

    def __init__(self, content: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(content, *args, **kwargs)
        self._source: Any = content

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            source, self._source = self._source, None
            try:
                close = getattr(source, "close", None)
                if close is not None:
                    close()  # a generator: drop the result it holds now, not at garbage collection
            except (
                ValueError
            ):  # still running in a worker thread (client left mid-batch): it ends with that batch
                pass
            if self.ticket is not None:
                self.ticket.release()
            pa.default_memory_pool().release_unused()
