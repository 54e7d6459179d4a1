"""Leased rate-limit tokens (k2.api.ratelimit): the key store is written once per lease, not per request, and
several processes (here: several SharedTokenBuckets on one SQLite key store, each with its own engine, as
each API process has) still give ONE limit per key within the documented tolerance: over any window of w
seconds at most burst + rate * (w + lease_seconds) requests, and never more than burst at one instant."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from k2.api.keys import KeyStore
from k2.api.ratelimit import SharedTokenBuckets


def _store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{(tmp_path / 'keys.db').as_posix()}"
    KeyStore(url)  # creates the file and tables
    return url


def _count_writes(engine: sa.engine.Engine) -> list[str]:
    writes: list[str] = []

    @sa.event.listens_for(engine, "after_cursor_execute")
    def _seen(_con: Any, cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(("UPDATE", "INSERT")) and cursor.rowcount > 0:
            writes.append(
                statement
            )  # a row written (a conditional UPDATE that matched nothing wrote nothing)

    return writes


def test_one_store_write_per_lease_not_per_request(tmp_path: Path) -> None:
    buckets = SharedTokenBuckets(KeyStore(_store_url(tmp_path)).engine, rate=1000.0, burst=1000)
    writes = _count_writes(buckets.engine)
    now = 1_000.0
    for i in range(300):
        assert buckets.take("k", now=now + i * 0.0001) == 0.0
    # 1,000/s refills 100 tokens per 0.1 s lease: 300 requests in 0.03 s take 3 leases (one write each).
    assert len(writes) <= 4, len(writes)


def test_processes_at_one_instant_admit_exactly_the_burst(tmp_path: Path) -> None:
    url = _store_url(tmp_path)
    processes = [SharedTokenBuckets(KeyStore(url).engine, rate=100.0, burst=25) for _ in range(3)]
    now = 5_000.0
    admitted = 0
    for _ in range(20):  # round robin until every process refuses
        answers = [p.take("k", now=now) for p in processes]
        admitted += sum(1 for a in answers if a == 0.0)
    assert admitted == 25  # 10 + 10 + 5 (the last lease takes one token at a time)
    wait = processes[2].take("k", now=now)
    assert 0 < wait <= 1 / 100 + 1e-9


def test_any_window_within_the_lease_tolerance(tmp_path: Path) -> None:
    url = _store_url(tmp_path)
    rate, burst = 200.0, 30
    processes = [SharedTokenBuckets(KeyStore(url).engine, rate=rate, burst=burst) for _ in range(3)]
    rng = random.Random(12)
    now = 10_000.0
    admitted: list[float] = []
    refused = 0
    for _ in range(3000):  # bursts and pauses, from random processes
        now += 0.3 if rng.random() < 0.005 else rng.choice((0.0, 0.0, 0.0005, 0.002))
        if rng.choice(processes).take("k", now=now) == 0.0:
            admitted.append(now)
        else:
            refused += 1
    assert refused > 100 and len(admitted) > 500  # the limit was reached often
    bound_excess = rate * 0.1  # ratelimit.LEASE_SECONDS
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            width = admitted[j] - start
            if width > 1.0:
                break
            count = j - i + 1
            assert count <= burst + rate * width + bound_excess + 1e-6, (start, width, count)
