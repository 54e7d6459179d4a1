"""How K2 waits: one retry policy (backoff with equal jitter, a retrying loop) and one token bucket.

Every retry in K2 (a commit that lost a race with another writer, a schema registry outage, a live
feed reconnecting, a catalog created by two processes at once) waits with :class:`Backoff` and, where
it is a plain "try again", loops with :func:`retrying`. The policy: attempt ``n`` waits
``U(cap/2, cap)`` with ``cap = min(maximum, initial * 2**n)`` ("equal jitter": never less than half
the cap, so writers that collided spread out, yet the wait still grows).

Hazards:

* Only the exceptions named in ``retry_on`` are retried; anything else leaves at once. The last
  attempt's exception is raised unchanged, so callers see the real error, not a wrapper.
* The loop body must be idempotent up to the point that failed: every K2 writer re-reads the table
  and recomputes its snapshot summary inside the attempt.

Example:
    >>> backoff = Backoff(0.1, 1.0, rng=random.Random(7))
    >>> [round(backoff.next_delay(), 3) for _ in range(5)]
    [0.066, 0.115, 0.33, 0.429, 0.768]
    >>> calls = []
    >>> for attempt in retrying(KeyError, attempts=3, backoff=Backoff(0.0, 0.0)):
    ...     with attempt:
    ...         calls.append(attempt.number)
    ...         if len(calls) < 3:
    ...             raise KeyError("not yet")
    >>> calls
    [1, 2, 3]
    >>> bucket = TokenBucket(rate=5, burst=1)
    >>> bucket.try_acquire(), bucket.try_acquire() > 0
    (0.0, True)

Rate limits (the live feeds' REST weight and message rates, the API's per-client limit) take tokens from
:class:`TokenBucket`: ``rate`` tokens per second, at most ``burst`` saved up.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Self

import structlog

log = structlog.get_logger("k2.pacing")


class Backoff:
    """Exponential backoff with equal jitter: attempt ``n`` waits ``U(cap/2, cap)``, ``cap = min(max, initial * factor**n)``.

    Equal jitter (rather than full jitter) keeps a floor under each delay, so a flapping venue is not
    hammered, while still spreading many clients' reconnects (or colliding writers) apart. :meth:`reset`
    after a success, so the next failure starts small again.

    >>> b = Backoff(1.0, 8.0, rng=random.Random(1))
    >>> [0.5 <= b.next_delay() <= 1.0, 1.0 <= b.next_delay() <= 2.0, 2.0 <= b.next_delay() <= 4.0]
    [True, True, True]
    """

    def __init__(
        self, initial: float, maximum: float, factor: float = 2.0, rng: random.Random | None = None
    ) -> None:
        if initial < 0 or maximum < initial:
            raise ValueError(f"expected 0 <= initial <= maximum, found initial={initial}, maximum={maximum}")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The wait before the next attempt (and count this one)."""
        cap = min(self.maximum, self.initial * self.factor ** min(self.attempt, 64))
        self.attempt += 1
        return cap / 2 + self._rng.uniform(0, cap / 2)

    def reset(self) -> None:
        """Start again from ``initial`` (after a success)."""
        self.attempt = 0


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` saved up (not thread-safe: one owner)."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"expected rate > 0 and burst >= 1, found rate={rate}, burst={burst}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    def try_acquire(self, tokens: float = 1.0, now: float | None = None) -> float:
        """Take ``tokens`` if available and return 0, else return the seconds to wait (nothing taken)."""
        at = self._clock() if now is None else now
        self._tokens = min(self.burst, self._tokens + max(0.0, at - self._updated) * self.rate)
        self._updated = at
        if self._tokens >= tokens:
            self._tokens -= tokens
            return 0.0
        return (tokens - self._tokens) / self.rate

    async def acquire(self, tokens: float = 1.0) -> None:
        """Wait until ``tokens`` are available and take them."""
        while (wait := self.try_acquire(tokens)) > 0:
            await asyncio.sleep(wait)


class Attempt:
    """One try of a :func:`retrying` loop: a context manager that swallows a retryable failure."""

    def __init__(
        self,
        number: int,
        last: bool,
        retry_on: tuple[type[BaseException], ...],
        when: Callable[[BaseException], bool] | None = None,
    ) -> None:
        self.number = number
        self.last = last
        self._retry_on = retry_on
        self._when = when
        self.failure: BaseException | None = None

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if error is None or self.last or not isinstance(error, self._retry_on):
            return False
        if self._when is not None and not self._when(error):
            return False
        self.failure = error
        return True


def retrying(
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    *,
    attempts: int,
    backoff: Backoff,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[Attempt], None] | None = None,
    when: Callable[[BaseException], bool] | None = None,
) -> Iterator[Attempt]:
    """Yield up to ``attempts`` tries; after a try failed with ``retry_on``, wait and yield the next.

    Use as ``for attempt in retrying(...): with attempt: ...`` and ``return`` from the body on success;
    a body that finishes without raising also ends the loop. ``on_retry`` sees each failed attempt
    (for a log line or a metric) before the wait; ``when`` narrows ``retry_on`` (e.g. by message).
    """
    if attempts < 1:
        raise ValueError(f"expected at least 1 attempt, found {attempts}")
    kinds = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    for number in range(1, attempts + 1):
        attempt = Attempt(number, number == attempts, kinds, when)
        yield attempt
        if attempt.failure is None:
            return
        if on_retry is not None:
            on_retry(attempt)
        sleep(backoff.next_delay())


class Periodic:
    """A daemon thread that calls :meth:`run_once` every ``interval_seconds`` until :meth:`stop`.

    Subclasses (the landing service's maintenance and end-of-day tag schedules) implement
    :meth:`run_once`. A failing run is logged and the next one retries: a schedule must never take the
    landing service down. ``run_at_start`` runs once right away instead of one interval after start.

    >>> class Count(Periodic):
    ...     runs = 0
    ...     def run_once(self) -> None:
    ...         self.runs += 1
    >>> ticker = Count("k2-doc", interval_seconds=3600, run_at_start=True).start()
    >>> ticker.stop(); ticker.runs
    1
    """

    def __init__(self, name: str, interval_seconds: float, run_at_start: bool = False) -> None:
        self.name = name
        self.interval_seconds = interval_seconds
        self.run_at_start = run_at_start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def run_once(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the thread to stop and wait for a run in progress (up to ``timeout`` seconds)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        if not self.run_at_start and self._stop.wait(self.interval_seconds):
            return
        while True:
            try:
                self.run_once()
            except Exception:  # keep the host service alive; the next run retries
                log.exception("scheduled run failed", schedule=self.name)
            if self._stop.wait(self.interval_seconds):
                return
