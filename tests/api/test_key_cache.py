"""Verified keys remembered per process (k2.api.keycache): the key store is read once per key per ttl, not per
request, and a revocation takes effect within ttl seconds (KEY_CACHE_SECONDS, documented)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from k2.api.keycache import KEY_CACHE_SECONDS, VerifiedKeys
from k2.api.keys import KeyStore


def _count_reads(engine: sa.engine.Engine) -> list[str]:
    reads: list[str] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _seen(_con: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "api_keys" in statement:
            reads.append(statement)

    return reads


def test_one_store_read_per_ttl_and_revocation_within_ttl(tmp_path: Path) -> None:
    store = KeyStore(f"sqlite:///{(tmp_path / 'keys.db').as_posix()}")
    key, info = store.create("alice", "read")
    now = [100.0]
    keys = VerifiedKeys(store, ttl=KEY_CACHE_SECONDS, clock=lambda: now[0])
    reads = _count_reads(store.engine)
    for _ in range(200):
        verified = keys.verify(key)
        assert verified is not None and verified.key_id == info.key_id
    assert len(reads) == 1
    KeyStore(f"sqlite:///{(tmp_path / 'keys.db').as_posix()}").revoke(info.key_id)  # as `k2 keys revoke` does
    now[0] += KEY_CACHE_SECONDS * 0.9
    assert keys.verify(key) is not None  # the documented delay: still remembered
    now[0] += KEY_CACHE_SECONDS * 0.1
    assert keys.verify(key) is None  # ttl seconds after the check: revoked
    assert keys.verify(key) is None and len(reads) == 3  # refusals are never remembered


def test_wrong_and_new_keys_are_checked_every_time(tmp_path: Path) -> None:
    store = KeyStore(f"sqlite:///{(tmp_path / 'keys.db').as_posix()}")
    keys = VerifiedKeys(store)
    key, _ = store.create("bob", "read")
    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert keys.verify(wrong) is None
    assert keys.verify(key) is not None  # the right key right after a wrong one
    assert keys.verify(wrong) is None
    fresh, _ = store.create("carol", "read")
    assert keys.verify(fresh) is not None  # a new key works at once
