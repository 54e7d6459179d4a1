"""Per-app request state (:class:`ApiState`), running query work off the event loop (:func:`run`: timeout,
cancellation, admission) and the token-bucket checks shared by the routers.
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated aliases at definition time.

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request

from k2.api.admission import Admission, AdmittedStreamingResponse
from k2.api.cache import ResultCache
from k2.api.cursor import CursorCodec
from k2.api.errors import APIError
from k2.api.keycache import VerifiedKeys
from k2.api.keys import KeyStore
from k2.api.ratelimit import SharedTokenBuckets, TokenBuckets
from k2.config import Settings
from k2.query.cancel import CancelScope
from k2.telemetry.metrics import metric

log = logging.getLogger("k2.api")
T = TypeVar("T")


# -- request state ---------------------------------------------------------------------------------


@dataclass
class ApiState:
    """Everything a request handler needs, created once per app."""

    settings: Settings
    keys: KeyStore
    verified_keys: VerifiedKeys
    buckets: SharedTokenBuckets
    anonymous: TokenBuckets
    admission: Admission
    cache: ResultCache
    cursors: CursorCodec
    executor: ThreadPoolExecutor
    client_factory: Callable[[], Any]
    _client: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    warmed: threading.Event = field(default_factory=threading.Event)

    def warm_up(self) -> None:
        """Load the query engine and the stored-symbols list once, so the first request does not pay for it.

        Run in the pool at start (``api_warm_up``). The cold cost is DuckDB loading its Iceberg extension,
        the catalog and the first scan of the symbols list (a full read of trades and quotes, cached per
        snapshot): seconds on a loaded machine, which the console's first chart used to wait for.
        Failures (a lake not created yet, a catalog down) are logged: the first request will say why.
        """
        started = time.monotonic()
        try:
            self.client().symbols()
            log.info("api warm-up done in %.2f s", time.monotonic() - started)
        except Exception as exc:
            log.warning("api warm-up failed after %.2f s: %s", time.monotonic() - started, exc)
        finally:
            self.warmed.set()

    def client(self) -> Any:
        """The shared query client (thread-safe, created on first use)."""
        with self._lock:
            if self._client is None:
                self._client = self.client_factory()
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None and hasattr(self._client, "close"):
                self._client.close()
            self._client = None
        self.executor.shutdown(wait=False, cancel_futures=True)


def default_client_factory(settings: Settings) -> Callable[[], Any]:
    def make() -> Any:
        from k2.query.client import Client

        return Client(settings)

    return make


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "-")


async def run(state: ApiState, fn: Callable[[], T], request: Request | None = None) -> T:
    """Run blocking query work in the API's pool, bounded by ``api_request_timeout_seconds`` (504).

    On timeout the DuckDB statements of the request are interrupted (:class:`CancelScope`), so the worker
    thread and its pooled connection are free again within milliseconds instead of finishing the query.
    With ``request`` (a data endpoint), the request is admitted first (:mod:`k2.api.admission`: 429/503 when
    too many are in progress) and its slot is held until its streamed body is sent or abandoned.
    """
    if request is None:
        return await _call(state, fn)
    ticket = state.admission.admit(key_id_of(request) or "-")
    try:
        result = await _call(state, fn)
    except BaseException:
        ticket.release()
        raise
    if isinstance(result, AdmittedStreamingResponse):
        result.ticket = ticket
    else:
        ticket.release()
    return result


async def _call(state: ApiState, fn: Callable[[], T]) -> T:
    loop = asyncio.get_running_loop()
    scope = CancelScope()

    def call() -> T:
        with scope:
            return fn()

    timeout = state.settings.api_request_timeout_seconds
    # The budget starts at the hand-over to the pool: armed after it, a loop busy elsewhere (a loaded
    # machine) let work that took longer than the budget answer anyway.
    deadline = loop.time() + timeout
    inner = state.executor.submit(call)
    # Once the request has answered 504, the worker's QueryCancelledError has nobody to report to.
    inner.add_done_callback(lambda f: f.cancelled() or f.exception())
    future = asyncio.wrap_future(inner, loop=loop)
    try:
        async with asyncio.timeout_at(deadline):
            return await future
    except TimeoutError:
        scope.cancel()
        inner.cancel()  # not started yet (all workers busy): never start it
        raise APIError(
            504,
            "timeout",
            f"request: expected to finish within api_request_timeout_seconds={timeout:g}s, found it still running",
            {"timeout_seconds": timeout},
        ) from None


def refuse_when_empty(settings: Settings, wait: float, per: str) -> None:
    """429 ``rate_limited`` with ``Retry-After`` when a token bucket said to wait."""
    if wait <= 0:
        return
    metric("k2_api_rate_limited_total").unlabelled().inc()
    retry = max(1, math.ceil(wait))
    raise APIError(
        429,
        "rate_limited",
        f"rate limit: expected at most {settings.api_rate_limit_per_second:g} requests/s (burst {settings.api_rate_limit_burst}) "
        f"{per}, found the bucket empty; retry after {retry}s",
        {
            "retry_after_seconds": retry,
            "rate_per_second": settings.api_rate_limit_per_second,
            "burst": settings.api_rate_limit_burst,
        },
        headers={"Retry-After": str(retry)},
    )


def limit_anonymous(state: ApiState, request: Request) -> None:
    """Requests without a valid key (and /ready) share one token bucket per client address."""
    address = request.client.host if request.client is not None else "unknown"
    refuse_when_empty(
        state.settings, state.anonymous.take(f"anon:{address}"), "per client address without a valid key"
    )


def key_id_of(request: Request) -> str | None:
    """The id of the API key that authenticated ``request`` (set by the auth dependency)."""
    return getattr(request.state, "key_id", None)
