"""The landing's buffer: messages waiting for their commit, per table, and the policy saying when to commit.

A flush is due at ``landing_commit_rows`` rows, ``landing_max_buffered_bytes`` bytes or by the commit
interval (:meth:`Buffer.flush_due`). The byte count includes :data:`ROW_MEMORY` per message, so the byte
bound is a bound on memory, not on value bytes alone. The consumer decides what a flush does (pause,
land per table, resume); this module only keeps the counts and answers "how much to fetch" and "when".
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

from confluent_kafka import Message

from k2.config import Settings

FETCH_MESSAGES = 50_000
# What one buffered message costs in memory besides its value bytes, until its rows are committed: the
# confluent-kafka Message object (topic, key, headers), its decoded Arrow row and its share of the Parquet
# write. Measured on the landing_bench data (200,000 real-shaped trades in one commit, 19 MiB of values):
# peak RSS 477 MiB above the ready RSS, of which ~100 MiB librdkafka and the consume batch in flight, so
# ~2 KiB per message. Counting it makes landing_max_buffered_bytes a bound on memory, not on value bytes
# alone (a tenth of it).
ROW_MEMORY = 2_048
# The least a buffered row waits for others to join its commit (unless the interval is shorter).
MIN_BATCH_SECONDS = 0.5


class Buffer:
    """One landing's buffered messages per table, their counts, and the commit policy.

    Example::

        buffer = Buffer(settings)
        size = buffer.add(messages, {"trades"}, short_for_topic)
        if buffer.should_flush():
            ...  # land buffer.messages, then buffer.clear()
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.messages: dict[str, list[Message]] = defaultdict(list)  # table short name -> messages
        self.buffered_bytes = 0
        self.buffered_rows = 0
        self.first_buffered = 0.0
        self.avg_size = 0.0
        # When the last flush with rows began (monotonic); -inf after an assignment (see flush_due).
        self.last_flush_started = float("-inf")

    def add(self, messages: list[Message], shorts: set[str], short_for_topic: Callable[[str], str]) -> int:
        """Buffer ``messages`` (``shorts``: the tables of the assigned topics); returns their size in bytes."""
        size = sum(map(len, messages)) + len(messages) * ROW_MEMORY
        if not self.buffered_rows:
            self.first_buffered = time.monotonic()
        if len(shorts) == 1:
            self.messages[next(iter(shorts))].extend(messages)
        else:
            for msg in messages:
                self.messages[short_for_topic(str(msg.topic()))].append(msg)
        self.buffered_rows += len(messages)
        self.buffered_bytes += size
        self.avg_size = (
            size / len(messages) if not self.avg_size else 0.8 * self.avg_size + 0.2 * size / len(messages)
        )
        return size

    def clear(self) -> None:
        """Forget the buffered messages and their counts (the average message size is kept)."""
        self.messages.clear()
        self.buffered_bytes = 0
        self.buffered_rows = 0

    def fetch_limit(self) -> int:
        """Messages to ask for so the buffer stays within the row and byte bounds (at least one)."""
        limit = min(FETCH_MESSAGES, self.settings.landing_commit_rows - self.buffered_rows)
        if self.avg_size:
            room = self.settings.landing_max_buffered_bytes - self.buffered_bytes
            limit = min(limit, int(room / self.avg_size) + 1)
        else:
            limit = min(limit, 100)  # message size unknown yet: a small first fetch measures it
        return max(1, limit)

    def flush_due(self) -> float:
        """When the buffered rows must be committed by the interval (monotonic).

        ``landing_commit_interval_seconds`` after the previous flush *began*, and not before the first
        buffered row has waited ``min(interval, MIN_BATCH_SECONDS)`` (a little batching, never one commit per
        row): commits stay at most one per interval, and a row waits at most about the interval plus one
        flush. (Counting the interval from the first row buffered after a flush made the rows that arrived
        during a flush wait the flush, the whole interval, then the next flush.) After an assignment there is
        no previous flush: a fresh stack's first rows commit after ``MIN_BATCH_SECONDS``, not the interval.
        """
        interval = self.settings.landing_commit_interval_seconds
        return max(self.first_buffered + min(interval, MIN_BATCH_SECONDS), self.last_flush_started + interval)

    def should_flush(self) -> bool:
        if not self.buffered_rows:
            return False
        return (
            self.buffered_rows >= self.settings.landing_commit_rows
            or self.buffered_bytes >= self.settings.landing_max_buffered_bytes
            or time.monotonic() >= self.flush_due()
        )
