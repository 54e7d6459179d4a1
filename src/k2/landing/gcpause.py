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
