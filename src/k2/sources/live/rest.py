"""REST calls of the live feeds (backfill, depth snapshots, reference data), within the venue's limits.

:class:`RestClient` honours Binance's used-weight headers (``X-MBX-USED-WEIGHT-1M``; it waits for the
next window before going over 90 % of the limit), a request-rate token bucket (Coinbase), and
``Retry-After`` on 429/418 (it stops *every* request until then; waits longer than
``max_wait_seconds`` raise :class:`RestUnavailable`, so a gap becomes ``open`` instead of blocking the
stream). A 4xx other than 429/418 raises :class:`RestRefused`: retrying will not help.
"""

from __future__ import annotations

import asyncio
import math
import re
import ssl
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import structlog

from k2.pacing import Backoff, TokenBucket
from k2.sources.live.tls import tls_context

log = structlog.get_logger("k2.sources.live")


class RestUnavailable(RuntimeError):
    """The REST API could not be used now (rate limited beyond our patience, errors); retry later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RestRefused(RuntimeError):
    """The REST API answered with a client error (4xx other than 429/418): retrying will not help."""


_WEIGHT_HEADER = re.compile(r"^x-mbx-used-weight-(\d+)([smhd])$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date).

    >>> retry_after_seconds("3"), retry_after_seconds(None)
    (3.0, None)
    """
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class RestClient:
    """Rate-limit-aware JSON GETs for backfill (one per venue, shared by that venue's feeds).

    * ``weight_limit``: the venue's request-weight budget per window (Binance). The window and the
      weight used so far come from ``X-MBX-USED-WEIGHT-<n><unit>`` response headers; a request that
      would take the window over 90 % of the limit waits for the next window.
    * ``requests_per_second``/``burst``: a request-rate token bucket (Coinbase public endpoints).
    * 429/418: ``Retry-After`` is honoured for *all* requests; if it exceeds ``max_wait_seconds``
      :class:`RestUnavailable` is raised (the gap stays open and is retried later).
    * 5xx and transport errors are retried with backoff, ``attempts`` times in total.

    Example::

        rest = RestClient("https://api.binance.com", weight_limit=6000)
        trades, headers = await rest.get_json("/api/v3/historicalTrades", {"symbol": "BTCUSDT"}, weight=25)
    """

    def __init__(
        self,
        base_url: str,
        *,
        weight_limit: int | None = None,
        requests_per_second: float | None = None,
        burst: float = 1.0,
        max_wait_seconds: float = 60.0,
        attempts: int = 5,
        timeout: float = 10.0,
        verify: ssl.SSLContext | bool = True,
        backoff: Backoff | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.weight_limit = weight_limit
        self.max_wait_seconds = max_wait_seconds
        self.attempts = attempts
        self._bucket = TokenBucket(requests_per_second, max(1.0, burst)) if requests_per_second else None
        self._backoff = backoff or Backoff(0.25, 5.0)
        context: ssl.SSLContext | bool = tls_context() if verify is True else verify
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            verify=context,
            headers={"User-Agent": "k2-lakehouse", **(headers or {})},
        )
        self.used_weight = 0
        self.window_seconds = 60.0
        self._window_end = 0.0
        self._blocked_until = 0.0
        self.requests = 0
        self.throttled = 0  # 429/418 answers seen
        self.waited_seconds = 0.0

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()

    def has_headroom(self, weight: int, fraction: float = 0.5) -> bool:
        """True when a request of ``weight`` keeps the window under ``fraction`` of the limit and no ban is on.

        >>> RestClient("http://127.0.0.1:1", weight_limit=100).has_headroom(25)
        True
        """
        now = time.time()
        if self._blocked_until > now:
            return False
        if self.weight_limit and now < self._window_end:
            return self.used_weight + weight <= self.weight_limit * fraction
        return True

    async def _wait(self, seconds: float) -> None:
        self.waited_seconds += seconds
        await asyncio.sleep(seconds)

    async def _respect_limits(self, weight: int) -> None:
        now = time.time()
        if self._blocked_until > now:
            wait = self._blocked_until - now
            if wait > self.max_wait_seconds:
                raise RestUnavailable(
                    f"expected the REST ban to end within {self.max_wait_seconds}s, found {wait:.0f}s left",
                    wait,
                )
            await self._wait(wait)
            now = time.time()
        if (
            self.weight_limit
            and now < self._window_end
            and self.used_weight + weight > self.weight_limit * 0.9
        ):
            await self._wait(self._window_end - now + 0.01)
            self.used_weight = 0
        if self._bucket is not None:
            await self._bucket.acquire()

    def _observe(self, headers: httpx.Headers) -> None:
        for name, value in headers.items():
            match = _WEIGHT_HEADER.match(name)
            if match and value.isdigit():
                self.window_seconds = float(int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()])
                now = time.time()
                # Binance windows are fixed intervals (calendar minutes), not sliding.
                self._window_end = (math.floor(now / self.window_seconds) + 1) * self.window_seconds
                self.used_weight = int(value)

    async def get_json(
        self, path: str, params: Mapping[str, Any] | None = None, weight: int = 1
    ) -> tuple[Any, httpx.Headers]:
        """GET ``path`` and return (decoded JSON, response headers); see the class docstring for limits."""
        self._backoff.reset()
        last_error = "no attempt made"
        for _ in range(self.attempts):
            await self._respect_limits(weight)
            self.requests += 1
            try:
                response = await self._client.get(path, params=dict(params or {}))
            except httpx.HTTPError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                await self._wait(self._backoff.next_delay())
                continue
            self._observe(response.headers)
            status = response.status_code
            if status in (429, 418):
                self.throttled += 1
                wait = retry_after_seconds(response.headers.get("Retry-After"))
                wait = self._backoff.next_delay() if wait is None else wait
                self._blocked_until = max(self._blocked_until, time.time() + wait)
                last_error = f"HTTP {status} (Retry-After {wait:.1f}s)"
                log.warning("rest_throttled", url=str(response.url), status=status, retry_after=wait)
                if wait > self.max_wait_seconds:
                    raise RestUnavailable(f"expected a usable REST API, found {last_error}", wait)
                continue
            if status >= 500:
                last_error = f"HTTP {status}: {response.text[:200]}"
                await self._wait(self._backoff.next_delay())
                continue
            if status >= 400:
                raise RestRefused(
                    f"expected 200 from GET {path} {dict(params or {})}, found HTTP {status}: {response.text[:300]}"
                )
            try:
                return response.json(), response.headers
            except ValueError:
                raise RestRefused(f"expected JSON from GET {path}, found {response.text[:200]!r}") from None
        raise RestUnavailable(f"expected a REST answer within {self.attempts} attempts, found {last_error}")
