"""Token buckets: ``api_rate_limit_burst`` tokens, refilled at ``api_rate_limit_per_second``.

Each request takes one token; an empty bucket refuses the request with the seconds until the next
token (sent as ``Retry-After``, rounded up).

Two implementations with one ``take(key) -> seconds to wait`` method:

* :class:`SharedTokenBuckets` keeps the buckets in the key-store database (table ``api_rate_buckets``;
  SQLite locally, PostgreSQL in production), so N API processes or replicas sharing that database give
  ONE limit per key. A take is one atomic conditional ``UPDATE`` (row-locked by the database), plus an
  ``INSERT`` the first time a key is seen. Hazards: one database write per request (SQLite commits are
  serialised; use PostgreSQL for many processes), and replicas on different hosts refill by their own
  clocks (skew of ``d`` seconds gives or takes ``d * rate`` tokens; a clock behind the stored time refills
  nothing).
* :class:`TokenBuckets` keeps them in the process (one limit per process): used for requests without a
  valid key (per client address), which must not cost a database write.

Example:
    >>> bucket = TokenBuckets(rate=1.0, burst=2)
    >>> [bucket.take("k", now=0.0) for _ in range(3)]
    [0.0, 0.0, 1.0]
    >>> bucket.take("k", now=1.0)
    0.0
    >>> import sqlalchemy as sa
    >>> from k2.api.keys import KeyStore
    >>> shared = SharedTokenBuckets(KeyStore("sqlite://").engine, rate=1.0, burst=2)
    >>> [shared.take("k", now=100.0) for _ in range(3)]
    [0.0, 0.0, 1.0]
"""

from __future__ import annotations

import threading
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from k2.api.keys import API_RATE_BUCKETS
from k2.pacing import TokenBucket


class TokenBuckets:
    """Thread-safe in-process token buckets (:class:`k2.pacing.TokenBucket`) keyed by API key id or client address."""

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError(f"expected a positive rate and burst, found rate={rate}, burst={burst}")
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def take(self, key: str, now: float | None = None) -> float:
        """Take one token for ``key``: 0.0 when allowed, else the seconds until a token is available."""
        at = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, clock=lambda: at)
            return bucket.try_acquire(1.0, now=at)


def _bucket_engine(engine: sa.engine.Engine) -> sa.engine.Engine:
    """The engine bucket writes use. For a SQLite file: its own engine in WAL mode with ``synchronous=NORMAL``.

    A bucket write per request must not cost an fsync (with the default rollback journal, 50 concurrent
    clients queued on SQLite's write lock: /v1/trades fell to ~11 req/s). WAL lets readers (key checks)
    proceed during writes; ``synchronous=NORMAL`` applies to this engine's connections only, so keys and
    revocations written through the key store stay fully synchronous. A crash may forget the last bucket
    updates: harmless, a bucket refills anyway.
    """
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return engine
    bucket_engine = sa.create_engine(engine.url, connect_args={"check_same_thread": False, "timeout": 30})

    @sa.event.listens_for(bucket_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return bucket_engine


class SharedTokenBuckets:
    """Token buckets in the key-store database: one limit per key across every process using it."""

    def __init__(self, engine: sa.engine.Engine, rate: float, burst: int) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError(f"expected a positive rate and burst, found rate={rate}, burst={burst}")
        self.engine = _bucket_engine(engine)
        self.rate = rate
        self.burst = burst
        API_RATE_BUCKETS.create(self.engine, checkfirst=True)

    def _refilled(self, now: float) -> sa.ColumnElement[float]:
        t = API_RATE_BUCKETS.c
        elapsed = sa.case((t.updated_at < now, now - t.updated_at), else_=0.0)
        grown = t.tokens + elapsed * self.rate
        return sa.case((grown > float(self.burst), float(self.burst)), else_=grown)

    def take(self, key: str, now: float | None = None) -> float:
        """Take one token for ``key``: 0.0 when allowed, else the seconds until a token is available."""
        at = time.time() if now is None else now
        t = API_RATE_BUCKETS.c
        refilled = self._refilled(at)
        with self.engine.begin() as con:
            taken = con.execute(
                API_RATE_BUCKETS.update()
                .where(t.key_id == key, refilled >= 1.0)
                .values(tokens=refilled - 1.0, updated_at=at)
            ).rowcount
            if taken:
                return 0.0
            row = con.execute(sa.select(refilled).where(t.key_id == key)).first()
        if row is None:  # first request of this key: a full bucket, one token taken
            try:
                with self.engine.begin() as con:
                    con.execute(
                        API_RATE_BUCKETS.insert().values(
                            key_id=key, tokens=float(self.burst) - 1.0, updated_at=at
                        )
                    )
                return 0.0
            except IntegrityError:  # another process created it first: take from that one
                return self.take(key, now)
        return max(0.0, (1.0 - float(row[0])) / self.rate)
