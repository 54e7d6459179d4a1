"""How K2 keeps bounded caches of immutable things: one thread-safe LRU bounded by entry count.

K2 caches what cannot change once written - a table snapshot's planned files, a manifest, a Parquet
footer, a row group's decoded columns - so a cached value is never stale; the only question is memory.
:class:`BoundedLRU` keeps at most ``entries`` values and drops the least recently used first.

Hazards: the bound is a count, not bytes: keep values of a similar, small size in one cache. ``get_or_make``
computes outside the lock, so two threads missing the same key at once both compute it (the second
result wins); that is harmless for immutable values and keeps a slow read from blocking every other
look-up.

Example:
    >>> cache: BoundedLRU[str, int] = BoundedLRU(2)
    >>> cache.put("a", 1); cache.put("b", 2)
    >>> cache.get("a")
    1
    >>> cache.put("c", 3)  # "b" is now the least recently used
    >>> cache.get("b") is None, len(cache)
    (True, 2)
    >>> cache.get_or_make("d", lambda: 4), cache.get("a")
    (4, None)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedLRU(Generic[K, V]):
    """At most ``entries`` values; a look-up or a put makes its key the most recently used."""

    def __init__(self, entries: int) -> None:
        if entries < 1:
            raise ValueError(f"expected at least 1 cache entry, found {entries}")
        self.entries = entries
        self._values: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The value kept for ``key``, or None."""
        with self._lock:
            value = self._values.get(key)
            if value is not None:
                self._values.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        """Keep ``value`` for ``key``, dropping the least recently used values beyond the bound."""
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.entries:
                self._values.popitem(last=False)

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        """The value kept for ``key``; else ``make()``, kept and returned (computed outside the lock)."""
        value = self.get(key)
        if value is None:
            value = make()
            self.put(key, value)
        return value

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._values

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)
