"""Landing lag of a topic partition from its landed offset and the broker's watermarks: the one rule
``k2 status`` and ``GET /v1/lag`` both apply (so they cannot disagree).

* ``landed``: the next offset to land (the ``k2.kafka.offsets`` of the table's snapshot summary,
  :mod:`k2.lake.summary`); None or 0 when nothing landed from the partition yet.
* ``low``/``high``: the broker's watermarks (first offset still in the log, log end).

**lag** is what is still in the log and not landed: ``high - max(landed, low)``. **trimmed** is what the
broker deleted (retention, ``delete_records``) before it landed: ``low - landed`` when positive. Trimmed
messages are neither lag (they cannot be landed any more) nor silently dropped from the report: they were
never in Iceberg, and the report says how many.

Hazard: on Tansu the high watermark is a lower bound (the start of the last batch + 1, see
:class:`k2.bus.broker.Watermarks`), so ``lag`` is a lower bound there; ``trimmed`` only depends on ``low``.

Example:
    >>> partition_lag(None, 8, 10)   # nothing landed; 0..7 deleted by retention
    PartitionLag(lag=2, trimmed=8)
    >>> partition_lag(5, 8, 10)      # landed 0..4; 5..7 deleted before they landed
    PartitionLag(lag=2, trimmed=3)
    >>> partition_lag(9, 8, 10), partition_lag(3, None, None)
    (PartitionLag(lag=1, trimmed=0), PartitionLag(lag=None, trimmed=0))
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class PartitionLag:
    """``lag``: messages in the log not landed yet (None: the broker did not say); ``trimmed``: messages the
    broker deleted before they landed."""

    lag: int | None
    trimmed: int


def partition_lag(landed: int | None, low: int | None, high: int | None) -> PartitionLag:
    """The lag and the trimmed-before-landing count of one partition (see the module docstring)."""
    done = max(0, int(landed or 0))
    first = max(0, int(low)) if low is not None else 0  # Tansu may say -1 for an empty log
    trimmed = max(0, first - done)
    if high is None:
        return PartitionLag(None, trimmed)
    return PartitionLag(max(0, int(high) - max(done, first)), trimmed)


def total_lag(parts: Iterable[PartitionLag]) -> PartitionLag:
    """The sum over partitions (``lag`` None when any partition's is unknown).

    >>> total_lag([PartitionLag(2, 8), PartitionLag(1, 0)]), total_lag([PartitionLag(2, 0), PartitionLag(None, 1)])
    (PartitionLag(lag=3, trimmed=8), PartitionLag(lag=None, trimmed=1))
    """
    lag: int | None = 0
    trimmed = 0
    for part in parts:
        lag = None if lag is None or part.lag is None else lag + part.lag
        trimmed += part.trimmed
    return PartitionLag(lag, trimmed)
