"""Run a real landing consumer until a known number of messages is accounted for, instead of idle seconds.

``LandingConsumer.run(idle_exit_seconds=N)`` returns only after N seconds without a message: every test
that lands a known batch paid those seconds (twice when it lands twice). :func:`land_messages` runs the
same ``run()`` loop and calls :meth:`LandingConsumer.stop` from a watcher thread once ``messages``
messages are *accounted for* in committed batches (landed + dropped as duplicates + dead-lettered; a
late arrival lands, a redelivery is not counted), then a short settle: the stop waits until nothing new
was consumed for ``settle_seconds``, so a message the test did not expect (a double send) is still
consumed and flushed before the stats are returned, as with an idle exit.

Hazards, written down:

- The count is of messages the test sent to the topics this consumer reads *and* that this consumer has
  not landed before (a restarted consumer resumes from the table's offsets). A test that does not know it
  (crash drains, idle behaviour under test) keeps ``run(idle_exit_seconds=...)``.
- The broker's end offsets are not a stop condition: Tansu reports them low.
- When the count is not reached within ``max_seconds`` it raises ``AssertionError`` naming the counts: a
  lost message fails the test instead of hanging it (an idle exit would have returned the short count).
"""

from __future__ import annotations

import threading
import time

from k2.landing.consumer import LandingConsumer, LandingStats


def accounted(stats: LandingStats) -> int:
    """Messages of committed batches: landed (late arrivals included), duplicates dropped, dead-lettered."""
    return stats.landed + stats.duplicates + stats.dead_lettered


def land_messages(
    consumer: LandingConsumer,
    messages: int,
    *,
    settle_seconds: float = 0.5,
    max_seconds: float = 120.0,
) -> LandingStats:
    """Run ``consumer`` until ``messages`` messages are accounted for and it has been quiet for
    ``settle_seconds``; flush, close and return its stats (AssertionError when not reached in time)."""
    done = threading.Event()

    def watch() -> None:
        quiet_since: float | None = None
        seen = -1
        while not done.wait(0.05):
            stats = consumer.stats
            if accounted(stats) < messages:
                continue
            if stats.consumed != seen:  # still consuming: the settle starts again
                seen, quiet_since = stats.consumed, time.monotonic()
            elif quiet_since is not None and time.monotonic() - quiet_since >= settle_seconds:
                consumer.stop()
                return

    watcher = threading.Thread(target=watch, name="land-messages-watch", daemon=True)
    watcher.start()
    try:
        stats = consumer.run(max_seconds=max_seconds)
    finally:
        done.set()
        watcher.join()
    if accounted(stats) < messages:
        raise AssertionError(
            f"expected {messages} messages landed, deduplicated or dead-lettered within {max_seconds} s, "
            f"found {accounted(stats)} ({stats})"
        )
    return stats
