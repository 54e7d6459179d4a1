"""Verified API keys, remembered per process for a few seconds, so a request does not read the key store.

:meth:`k2.api.keys.KeyStore.verify` is a database read plus a salted hash: ~1.5 ms of the API's CPU per
request under load. :class:`VerifiedKeys` answers from memory for ``ttl`` seconds after a successful check.

Hazard (documented bound): a key revoked with ``k2 keys revoke`` (or by any other process) keeps working in
a process that verified it shortly before, for at most ``ttl`` seconds (:data:`KEY_CACHE_SECONDS`, 2 s)
after the revocation. Only valid keys are remembered: unknown, malformed, wrong or revoked keys are checked
against the store on every request (they are limited per client address), so a new key works at once.
The memory is bounded (:data:`MAX_ENTRIES` keys; all are forgotten when it is full) and holds a SHA-256 of
each key, not the key (a lookup compares digests, so its timing says nothing about a stored key's text).

Example:
    >>> from k2.api.keys import KeyStore
    >>> store = KeyStore("sqlite://")
    >>> key, info = store.create("alice", "read")
    >>> keys = VerifiedKeys(store, ttl=60.0)
    >>> keys.verify(key).key_id == info.key_id
    True
    >>> _ = store.revoke(info.key_id)
    >>> keys.verify(key).key_id == info.key_id  # remembered for up to ttl seconds
    True
    >>> VerifiedKeys(store, ttl=0.0).verify(key) is None  # ttl 0: every check reads the store
    True
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

from k2.api.keys import KeyInfo, KeyStore

KEY_CACHE_SECONDS = 2.0
MAX_ENTRIES = 10_000


class VerifiedKeys:
    """``verify(key) -> KeyInfo | None`` as :meth:`KeyStore.verify`, with valid answers kept ``ttl`` seconds."""

    def __init__(
        self,
        store: KeyStore,
        ttl: float = KEY_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl < 0:
            raise ValueError(f"ttl: expected seconds >= 0, found {ttl}")
        self.store = store
        self.ttl = ttl
        self._clock = clock
        self._known: dict[bytes, tuple[KeyInfo, float]] = {}  # sha256(key) -> (info, valid until)
        self._lock = threading.Lock()

    def verify(self, key: str) -> KeyInfo | None:
        """The active key matching ``key`` (from memory when verified less than ``ttl`` seconds ago), or None."""
        now = self._clock()
        digest = hashlib.sha256(key.encode()).digest()
        with self._lock:
            known = self._known.get(digest)
        if known is not None and now < known[1]:
            return known[0]
        info = self.store.verify(key)
        with self._lock:
            if info is None or self.ttl <= 0:
                self._known.pop(digest, None)
            else:
                if len(self._known) >= MAX_ENTRIES:
                    self._known.clear()
                self._known[digest] = (info, now + self.ttl)
        return info
