"""Pausing Python's cyclic garbage collector while the landing creates many objects that hold no cycles.

Why: a landing batch is up to ``landing_commit_rows`` (200,000) Kafka ``Message`` objects, each with its
header list of tuples, all tracked by the cyclic collector. The collector runs every 700 allocations of
tracked objects, and its older generations re-scan everything still alive: the buffered messages and the
~500,000 objects of the loaded libraries. Measured (300,000 depth messages held, 2-core machine): creating
the messages in ``Consumer.consume`` took 1.7-1.9 us each with the collector on and 0.7-1.0 us paused;
reading each message's headers for the lineage id (``Message.headers()``, which builds the list on its
first call) 2.5-3.4 us on and 0.6-0.8 us paused. Landing 1.5M depth rows (benchmarks/landing_bench.py):
29 full collections took 4.5 of the landing's 17.8 CPU seconds; with these two blocks paused, 1 took 0.1 s.

Hazard: a cycle created inside a paused block is not collected until the collector runs again. The
blocks paused here create only Messages, header lists and bytes (no cycles; freed by reference counting),
and the collector is re-enabled right after: its allocation counter is not reset while paused, so the
next allocation of a tracked object outside the block runs the collection that was due. Nesting is safe:
only the outermost block re-enables.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run the block with the cyclic collector off (if it was on), then turn it back on.

    Example:
        >>> with collector_paused():
        ...     gc.isenabled()
        False
        >>> gc.isenabled()
        True
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class CollectorHold:
    """Keeps the cyclic collector off for a whole landing run, collecting only between batches.

    Between two flushes the landing's poll loop allocates the batch's messages and their header lists
    (up to ``landing_commit_rows`` of each); with the collector re-enabled after every ``consume()``, each
    re-enable ran a young-generation collection over the messages just consumed, and every tenth an older
    one over the whole buffer (measured: 52 + 5 + 1 collections, 0.8 CPU s for 1.5M depth rows; held,
    7 + 1 + 0 and 0.05 s). :meth:`between_batches` (the run loop calls it whenever nothing is buffered,
    i.e. after each flush freed its batch, and while idle) runs the collection that fell due -- the oldest
    generation over its threshold, as the automatic collector would choose -- over what survived, which
    is little, and holds again.

    Hazard: cyclic garbage made while held (pyiceberg's commit objects) waits for the next
    :meth:`between_batches`: at most one commit interval or ``landing_commit_rows`` rows.
    :meth:`release` runs in ``run``'s ``finally``; a collector turned off by the host stays off.

    Example:
        >>> hold = CollectorHold()
        >>> hold.between_batches(); gc.isenabled()
        False
        >>> hold.release(); gc.isenabled()
        True
    """

    def __init__(self) -> None:
        self._held = False

    def between_batches(self) -> None:
        """Run the collection that is due (if this hold turned the collector off), then hold."""
        if self._held:
            counts, thresholds = gc.get_count(), gc.get_threshold()
            for generation in (2, 1, 0):
                if thresholds[generation] and counts[generation] > thresholds[generation]:
                    gc.collect(generation)
                    break
        elif gc.isenabled():
            gc.disable()
            self._held = True

    def release(self) -> None:
        """Turn the collector back on if this hold turned it off."""
        if self._held:
            self._held = False
            gc.enable()
