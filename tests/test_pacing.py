"""The one retry policy: what is retried, how long it waits, and what the caller finally sees."""

from __future__ import annotations

import random

import pytest

from k2.pacing import Attempt, Backoff, retrying


class Conflict(Exception):
    pass


def _run(
    fail_times: int, attempts: int, retry_on: type[BaseException] = Conflict
) -> tuple[list[int], list[float]]:
    calls: list[int] = []
    waits: list[float] = []
    for attempt in retrying(retry_on, attempts=attempts, backoff=Backoff(0.1, 0.4), sleep=waits.append):
        with attempt:
            calls.append(attempt.number)
            if len(calls) <= fail_times:
                raise Conflict(f"try {attempt.number}")
    return calls, waits


def test_a_failure_is_retried_with_growing_jittered_waits_until_it_succeeds() -> None:
    calls, waits = _run(fail_times=3, attempts=5)
    assert calls == [1, 2, 3, 4]
    assert [0.05 <= waits[0] <= 0.1, 0.1 <= waits[1] <= 0.2, 0.2 <= waits[2] <= 0.4] == [True] * 3


def test_the_last_attempt_raises_the_original_exception() -> None:
    with pytest.raises(Conflict, match="try 3"):
        _run(fail_times=10, attempts=3)


def test_an_exception_not_named_is_not_retried() -> None:
    with pytest.raises(Conflict, match="try 1"):
        _run(fail_times=1, attempts=5, retry_on=KeyError)


def test_on_retry_sees_each_failed_attempt_before_the_wait() -> None:
    seen: list[tuple[int, str]] = []

    def note(attempt: Attempt) -> None:
        seen.append((attempt.number, str(attempt.failure)))

    calls = 0
    for attempt in retrying(
        Conflict, attempts=4, backoff=Backoff(0, 0, rng=random.Random(1)), sleep=lambda _: None, on_retry=note
    ):
        with attempt:
            calls += 1
            if calls < 3:
                raise Conflict(f"lost race {calls}")
    assert seen == [(1, "lost race 1"), (2, "lost race 2")]


def test_nonsense_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="expected at least 1 attempt, found 0"):
        list(retrying(Conflict, attempts=0, backoff=Backoff(0, 0)))
    with pytest.raises(ValueError, match="expected 0 <= initial <= maximum"):
        Backoff(2.0, 1.0)
