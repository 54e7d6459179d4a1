"""A result cache that can never be stale: results keyed by the Iceberg snapshots they were read from.

Iceberg snapshots are immutable, so the answer of a query over a fixed snapshot never changes. The key is
``(endpoint, canonical parameters, resolved snapshot ids)``: the snapshot id is resolved *before* looking
up, and the query then runs pinned to that id, so a new commit gives a new key and the next request sees
it at once. Rows still in Kafka (``include_recent``) are not pinnable and are never cached — callers
decide with :func:`reads_kafka`.

Bounded by bytes (LRU on the Arrow tables' ``nbytes``); one cache per API process (per worker with
``K2_API_WORKERS``). Identical requests arriving while the first is computing wait for its answer instead
of computing it again (dashboards refresh together): one computation per key at a time, per process.
Metrics: ``k2_api_cache_hits_total``, ``k2_api_cache_misses_total``, ``k2_api_cache_waits_total``,
``k2_api_cache_bytes``.

Example:
    >>> import pyarrow as pa
    >>> cache = ResultCache(max_bytes=1 << 20)
    >>> key = cache_key("bars", {"symbol": "BTCUSDT"}, {"trades": 42})
    >>> cache.lookup(key) is None
    True
    >>> cache.put(key, pa.table({"x": [1]})); cache.lookup(key)[0].num_rows
    1
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from k2.query.result import QueryResult
from k2.telemetry.metrics import metric

CacheKey = tuple[str, str, tuple[tuple[str, int], ...]]
# How long an identical request waits for the one computing its answer before computing its own (a bound,
# not a timeout of the query: the leader's query keeps its own limits).
_WAIT_SECONDS = 120.0


def cache_key(endpoint: str, params: Mapping[str, Any], snapshot_ids: Mapping[str, int]) -> CacheKey:
    """The canonical key: parameters as sorted JSON (times as ISO text), snapshot ids sorted by table."""
    canonical = json.dumps(dict(params), sort_keys=True, default=str, separators=(",", ":"))
    return endpoint, canonical, tuple(sorted((str(t), int(s)) for t, s in snapshot_ids.items()))


def reads_kafka(
    include_recent: bool | None, end: datetime | None, as_of: Any, recent_window_seconds: float
) -> bool:
    """Whether the query client would add rows still in Kafka (the same default rule as the client).

    >>> reads_kafka(None, None, None, 60.0), reads_kafka(False, None, None, 60.0), reads_kafka(None, None, 5, 60.0)
    (True, False, False)
    """
    if as_of is not None:
        return False
    if include_recent is not None:
        return bool(include_recent)
    return end is None or end >= datetime.now(UTC) - timedelta(seconds=recent_window_seconds)


class _Flight:
    """One computation of a cache key in progress; ``result`` ((table, unknown symbols)) is set before ``done``."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None


class ResultCache:
    """Thread-safe LRU of Arrow tables bounded by their total ``nbytes`` (``max_bytes`` 0: disabled).

    Each entry also keeps the requested symbols its query found unknown (as immutable as the rows).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[CacheKey, pa.Table] = OrderedDict()
        self._unknown: dict[CacheKey, tuple[str, ...]] = {}
        self._flights: dict[CacheKey, _Flight] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def join(self, key: CacheKey) -> tuple[_Flight, bool]:
        """The computation of ``key`` in progress, and whether the caller leads it (True: compute, then
        :meth:`land`; False: another request computes it, wait on the flight)."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = _Flight()
            return flight, True

    def land(self, key: CacheKey, flight: _Flight, result: Any) -> None:
        """End the leader's flight: waiters get ``result`` ((table, unknown symbols); None: it failed, they
        compute their own)."""
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight.result = result
        flight.done.set()

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes

    def lookup(self, key: CacheKey) -> tuple[pa.Table, tuple[str, ...]] | None:
        """(rows, unknown symbols) kept for ``key``, or None; counted as a hit or a miss."""
        found = self._find(key)
        if found is not None:
            metric("k2_api_cache_hits_total").labels(endpoint=key[0]).inc()
        else:
            metric("k2_api_cache_misses_total").labels(endpoint=key[0]).inc()
        return found

    def _find(self, key: CacheKey) -> tuple[pa.Table, tuple[str, ...]] | None:
        with self._lock:
            table = self._entries.get(key)
            if table is None:
                return None
            self._entries.move_to_end(key)
            return table, self._unknown.get(key, ())

    def put(self, key: CacheKey, table: pa.Table, unknown_symbols: tuple[str, ...] = ()) -> None:
        size = int(table.nbytes)
        if size > self.max_bytes:  # larger than the whole cache (or the cache is disabled): not kept
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= int(old.nbytes)
            self._entries[key] = table
            self._unknown.pop(key, None)
            if unknown_symbols:
                self._unknown[key] = unknown_symbols
            self._bytes += size
            while self._bytes > self.max_bytes and self._entries:
                evicted_key, evicted = self._entries.popitem(last=False)
                self._unknown.pop(evicted_key, None)
                self._bytes -= int(evicted.nbytes)
            current = self._bytes
        metric("k2_api_cache_bytes").unlabelled().set(current)


def cached_query(
    cache: ResultCache,
    client: Any,
    endpoint: str,
    table: str,
    params: Mapping[str, Any],
    window: tuple[Any, datetime | None, bool | None, float],
    call: Callable[[Any], Any],
) -> Any:
    """``call(as_of)`` through the cache: only when the read is pinnable (no Kafka rows, an end in the past).

    ``window`` is ``(as_of, end, include_recent, recent_window_seconds)``. The snapshot of ``table`` is
    resolved first and the query runs pinned to it (``call(snapshot_id)``), so the key and the answer
    belong to the same immutable snapshot.
    """
    as_of, end, include_recent, recent_seconds = window
    if (
        cache.max_bytes <= 0
        or end is None
        or end > datetime.now(UTC)
        or reads_kafka(include_recent, end, as_of, recent_seconds)
    ):
        return call(as_of)
    snapshot = client.snapshot_id(table, as_of=as_of)
    if snapshot is None:
        return call(as_of)
    key = cache_key(endpoint, params, {table: snapshot})
    hit = cache.lookup(key)
    if hit is not None:
        return QueryResult(hit[0], {table: snapshot}, unknown_symbols=hit[1])
    flight, leader = cache.join(key)
    if not leader:
        flight.done.wait(_WAIT_SECONDS)
        if flight.result is not None:
            metric("k2_api_cache_waits_total").labels(endpoint=endpoint).inc()
            answer, unknown = flight.result
            return QueryResult(answer, {table: snapshot}, unknown_symbols=unknown)
        return call(int(snapshot))  # the leader failed or is too slow: compute it here
    landed = None
    try:
        result = call(int(snapshot))
        landed = (getattr(result, "table", result), tuple(getattr(result, "unknown_symbols", ()) or ()))
        cache.put(key, *landed)
    finally:
        cache.land(key, flight, landed)
    return result
