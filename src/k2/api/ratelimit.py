"""Token buckets: ``api_rate_limit_burst`` tokens, refilled at ``api_rate_limit_per_second``.

Each request takes one token; an empty bucket refuses the request with the seconds until the next
token (sent as ``Retry-After``, rounded up).

Two implementations with one ``take(key) -> seconds to wait`` method:

* :class:`SharedTokenBuckets` keeps the buckets in the key-store database (table ``api_rate_buckets``;
  SQLite locally, PostgreSQL in production), so N API processes or replicas sharing that database give
  ONE limit per key. Tokens leave the database in *leases*: one atomic conditional ``UPDATE`` (row-locked
  by the database; an ``INSERT`` the first time a key is seen) moves ``lease_size`` tokens into the
  process, which then admits that many requests from memory. ``lease_size`` is the refill of
  ``lease_seconds`` (:data:`LEASE_SECONDS`, 0.1 s): ``rate * lease_seconds`` tokens, at least 1 (then
  every request writes, as without leases), at most :data:`LEASE_MAX_TOKENS` and ``burst``. When fewer
  than ``lease_size`` tokens are left, one token is taken at a time. A lease is used only for
  ``lease_seconds`` after it left the database; what is left then is dropped (the bucket refills it
  within ``lease_seconds``).

  Tolerance (tested in tests/api/test_rate_lease.py): over ANY window of ``w`` seconds, all processes
  together admit at most ``burst + rate * (w + lease_seconds)`` requests of a key (without leases:
  ``burst + rate * w``), so the excess is at most one lease. A process may refuse (429) while other
  processes hold unused leased tokens: at most ``lease_size`` per process, for at most ``lease_seconds``.
  At one instant, N processes never admit more than ``burst`` in total.

  Hazards: replicas on different hosts refill by their own clocks (skew of ``d`` seconds gives or takes
  ``d * rate`` tokens; a clock behind the stored time refills nothing). SQLite commits are serialised; use
  PostgreSQL for many processes.
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


LEASE_SECONDS = 0.1
LEASE_MAX_TOKENS = 100


class SharedTokenBuckets:
    """Token buckets in the key-store database: one limit per key across every process using it.

    Tokens are taken from the database in leases of ``lease_size`` (see the module docstring for the bound).
    """

    def __init__(
        self,
        engine: sa.engine.Engine,
        rate: float,
        burst: int,
        lease_seconds: float = LEASE_SECONDS,
        lease_max_tokens: int = LEASE_MAX_TOKENS,
    ) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError(f"expected a positive rate and burst, found rate={rate}, burst={burst}")
        if lease_seconds < 0 or lease_max_tokens < 1:
            raise ValueError(
                f"expected lease_seconds >= 0 and lease_max_tokens >= 1, found {lease_seconds}, {lease_max_tokens}"
            )
        self.engine = _bucket_engine(engine)
        self.rate = rate
        self.burst = burst
        self.lease_seconds = lease_seconds
        self.lease_size = max(1, min(lease_max_tokens, burst, int(rate * lease_seconds)))
        self._leases: dict[str, tuple[int, float]] = {}  # key -> (tokens left, usable until)
        self._lock = threading.Lock()
        self._take, self._level = self._statements()
        API_RATE_BUCKETS.create(self.engine, checkfirst=True)

    def _statements(self) -> tuple[sa.Update, sa.Select[Any]]:
        """(take ``:size`` tokens of ``:key`` at ``:now`` if there are that many; the tokens of ``:key`` at ``:now``).

        Built once: a statement rebuilt per call cost SQLAlchemy ~0.4 ms of CPU (cache key, binds) per write.
        """
        t = API_RATE_BUCKETS.c
        now = sa.bindparam("now", type_=sa.Float)
        size = sa.bindparam("size", type_=sa.Float)
        key = sa.bindparam("key", type_=sa.String)
        elapsed = sa.case((t.updated_at < now, now - t.updated_at), else_=0.0)
        grown = t.tokens + elapsed * self.rate
        refilled = sa.case((grown > float(self.burst), float(self.burst)), else_=grown)
        take = (
            API_RATE_BUCKETS.update()
            .where(t.key_id == key, refilled >= size)
            .values(tokens=refilled - size, updated_at=now)
        )
        return take, sa.select(refilled).where(t.key_id == key)

    def take(self, key: str, now: float | None = None) -> float:
        """Take one token for ``key``: 0.0 when allowed, else the seconds until a token is available."""
        at = time.time() if now is None else now
        with self._lock:  # one lease at a time per process: two would each drop the other's tokens
            left, until = self._leases.get(key, (0, 0.0))
            if left > 0 and at < until:
                self._leases[key] = (left - 1, until)
                return 0.0
            granted, wait = self._lease(key, at)
            if granted:
                self._leases[key] = (granted - 1, at + self.lease_seconds)
                return 0.0
            self._leases.pop(key, None)
            return wait

    def _lease(self, key: str, at: float) -> tuple[int, float]:
        """(tokens moved from the database to this process, 0.0) or (0, seconds until one token is there)."""
        with self.engine.begin() as con:
            for size in dict.fromkeys((self.lease_size, 1)):
                taken = con.execute(self._take, {"now": at, "size": float(size), "key": key}).rowcount
                if taken:
                    return size, 0.0
            row = con.execute(self._level, {"now": at, "key": key}).first()
        if row is None:  # first request of this key: a full bucket, one lease taken
            try:
                with self.engine.begin() as con:
                    con.execute(
                        API_RATE_BUCKETS.insert().values(
                            key_id=key, tokens=float(self.burst - self.lease_size), updated_at=at
                        )
                    )
                return self.lease_size, 0.0
            except IntegrityError:  # another process created it first: take from that one
                return self._lease(key, at)
        return 0, max(0.0, (1.0 - float(row[0])) / self.rate)
