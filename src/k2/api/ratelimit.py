"""Per-key token buckets: ``api_rate_limit_burst`` tokens, refilled at ``api_rate_limit_per_second``.

Each request takes one token; an empty bucket refuses the request with the seconds until the next
token (sent as ``Retry-After``, rounded up). Buckets live in the API process (one bucket per key per
process).

Example:
    >>> bucket = TokenBuckets(rate=1.0, burst=2)
    >>> [bucket.take("k", now=0.0) for _ in range(3)]
    [0.0, 0.0, 1.0]
    >>> bucket.take("k", now=1.0)
    0.0
"""

from __future__ import annotations

import threading
import time


class TokenBuckets:
    """Thread-safe token buckets keyed by API key id."""

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError(f"expected a positive rate and burst, found rate={rate}, burst={burst}")
        self.rate = rate
        self.burst = burst
        self._state: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill time)
        self._lock = threading.Lock()

    def take(self, key: str, now: float | None = None) -> float:
        """Take one token for ``key``: 0.0 when allowed, else the seconds until a token is available."""
        t = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._state.get(key, (float(self.burst), t))
            tokens = min(float(self.burst), tokens + (t - last) * self.rate)
            if tokens >= 1.0:
                self._state[key] = (tokens - 1.0, t)
                return 0.0
            self._state[key] = (tokens, t)
            return (1.0 - tokens) / self.rate
