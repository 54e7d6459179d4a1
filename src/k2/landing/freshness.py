"""How fresh landed rows are: produced -> queryable in Iceberg, p50/p99 over a bounded window per table.

Each landed row carries ``ingest_ts``, the time K2's producer sent it to Kafka (stamped by
:class:`k2.bus.MarketDataProducer`, also for ``k2 replay`` and imports through Kafka, whose ``receipt_ts``
is historical). When a commit makes rows queryable the landing records, for each row,
``commit end - ingest_ts``: the producer's linger, the broker, the wait for the commit policy
(``landing_commit_interval_seconds``) and the Iceberg commit itself. ``receipt_ts`` is not used: it is
the original receive time for replayed and imported data (years, not seconds).

Bounded memory: a commit contributes at most ``SAMPLES_PER_COMMIT`` order statistics of its latencies,
each the middle of an equal-rank bin and weighted by the rows it stands for, and the window keeps the commits of the last
``window_seconds`` (at most ``max_commits``). Quantiles over the window are weighted quantiles of those
samples: exact for commits of up to ``SAMPLES_PER_COMMIT`` rows, within one sample's rank otherwise.

Hazards: clocks. ``ingest_ts`` comes from the producing host's clock and the commit time from the
landing host's; on one machine they agree, across machines the figure includes their skew (a negative
latency is kept, not clipped, so a skew shows). A backlog (landing stopped for an hour) shows as an
hour of latency: that is what the rows experienced.

Example:
    >>> import numpy as np
    >>> window = FreshnessWindow(window_seconds=300)
    >>> window.quantiles("trades") is None
    True
    >>> window.record("trades", np.array([1_000_000, 1_500_000]), committed_us=2_000_000)
    >>> window.quantiles("trades")
    (0.75, 0.995)
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np

SAMPLES_PER_COMMIT = 256


@dataclass(frozen=True)
class _Commit:
    at: float  # monotonic seconds
    latencies: np.ndarray  # seconds, sorted order statistics
    weight: float  # rows each sample stands for


class FreshnessWindow:
    """Per table, the latency samples of the recent commits (see the module docstring)."""

    def __init__(self, window_seconds: float = 300.0, max_commits: int = 1_000) -> None:
        self.window_seconds = window_seconds
        self.max_commits = max_commits
        self._commits: dict[str, deque[_Commit]] = {}

    def record(self, table: str, ingest_us: np.ndarray, committed_us: int) -> None:
        """Record one commit's rows: their produce times (µs since the epoch) and the commit's end time."""
        values = ingest_us[ingest_us > 0] if ingest_us.size else ingest_us
        if not values.size:
            return
        latencies = np.sort((committed_us - values.astype(np.int64)) / 1e6)
        if latencies.size > SAMPLES_PER_COMMIT:
            # The middle order statistic of each of SAMPLES_PER_COMMIT equal-rank bins (not the extremes).
            bins = (np.arange(SAMPLES_PER_COMMIT) + 0.5) * latencies.size / SAMPLES_PER_COMMIT
            picks = np.minimum(bins.astype(np.int64), latencies.size - 1)
            sample, weight = latencies[picks], latencies.size / SAMPLES_PER_COMMIT
        else:
            sample, weight = latencies, 1.0
        commits = self._commits.setdefault(table, deque(maxlen=self.max_commits))
        commits.append(_Commit(time.monotonic(), sample, weight))

    def quantiles(self, table: str, levels: tuple[float, float] = (0.5, 0.99)) -> tuple[float, float] | None:
        """(p50, p99) in seconds over the window (None when no row landed in it)."""
        commits = self._commits.get(table)
        if not commits:
            return None
        horizon = time.monotonic() - self.window_seconds
        while commits and commits[0].at < horizon:
            commits.popleft()
        if not commits:
            return None
        values = np.concatenate([c.latencies for c in commits])
        weights = np.concatenate([np.full(c.latencies.size, c.weight) for c in commits])
        order = np.argsort(values, kind="stable")
        values, weights = values[order], weights[order]
        cumulative = np.cumsum(weights)
        span = cumulative[-1] - weights[-1]
        if span <= 0:  # one sample
            return float(values[0]), float(values[0])
        # Linear interpolation between order statistics: numpy's default percentile when weights are equal.
        positions = (cumulative - weights) / span
        low, high = (float(np.interp(level, positions, values)) for level in levels)
        return low, high

    def rows(self, table: str) -> int:
        """Rows the window holds samples for (after the last expiry)."""
        return int(sum(c.latencies.size * c.weight for c in self._commits.get(table, ())))

    def tables(self) -> list[str]:
        """Tables with at least one recorded commit."""
        return [t for t, commits in self._commits.items() if commits]
