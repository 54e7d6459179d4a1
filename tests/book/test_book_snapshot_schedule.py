"""book_snapshots written by the landing service on a schedule (issue 14 item 4): at its start and every
``book_snapshot_run_seconds``, exactly once across runs and restarts, consistent with the deltas
(the stored top N equals the replayed book; ``book()`` from a stored snapshot equals the delta-only read)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from k2.config import Settings
from k2.lake.book_snapshots import BookSnapshotter, write_book_snapshots
from k2.lake.catalog import ensure_tables, load_catalog
from k2.lake.summary import WRITER_KEY
from k2.lake.writer import append
from k2.landing.consumer import run_landing
from k2.model import BOOK_DELTA
from k2.model.arrow import records_to_arrow
from k2.model.book import OrderBook
from k2.model.values import to_unscaled
from k2.query import book as book_module
from k2.query.client import Client
from tests.book.capture import capture_deltas, restart_snapshot

INTERVAL_US = 10_000_000
AT = "2030-01-01T00:00:00Z"  # after every row; Iceberg only (the session broker is shared with other tests)


def _expected_ids(rows: list[dict[str, object]]) -> list[int]:
    """Update ids due a snapshot: every restart and the first event of each 10 s bucket of exchange time."""
    due, bucket, seen = [], None, set()
    for row in rows:
        u, ts = int(row["last_update_id"]), int(row["exchange_ts"])  # type: ignore[call-overload]
        if u in seen:
            continue
        seen.add(u)
        if row["is_snapshot"] or bucket is None or ts // INTERVAL_US != bucket:
            due.append(u)
            bucket = ts // INTERVAL_US
    return due


def _stored(settings: Settings) -> list[dict[str, object]]:
    table = ensure_tables(load_catalog(settings), settings)["book_snapshots"]
    table.refresh()
    return table.scan().to_arrow().sort_by("last_update_id").to_pylist() if table.current_snapshot() else []


def _wait(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the scheduled book snapshots"
        time.sleep(0.2)


def test_landing_service_writes_book_snapshots_on_schedule_exactly_once_and_consistent(
    settings: Settings, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings.model_copy(update={"book_snapshot_run_seconds": 0.3, "eod_tags": False})
    rows = capture_deltas(90)
    ids = sorted({int(r["last_update_id"]) for r in rows})  # type: ignore[call-overload]
    # Three landings; the first ends in the middle of an event (a landing batch may split one).
    cut_a = next(i for i, r in enumerate(rows) if int(r["last_update_id"]) >= ids[len(ids) // 3]) + 1  # type: ignore[call-overload]
    assert not rows[cut_a - 1]["is_event_end"]
    cut_b = next(i for i, r in enumerate(rows) if int(r["last_update_id"]) >= ids[2 * len(ids) // 3])  # type: ignore[call-overload]
    deltas = ensure_tables(load_catalog(settings), settings)["book_deltas"]

    def land(part: list[dict[str, object]]) -> None:
        append(deltas, records_to_arrow(BOOK_DELTA, part), "book_deltas")

    land(rows[:cut_a])
    # The landing service (idle exit) writes the due snapshots at its start: whole events only.
    run_landing(settings, idle_exit_seconds=1, topics=[f"market.crypto.depth.bk{unique}"])
    complete = [u for u in _expected_ids(rows) if u < int(rows[cut_a - 1]["last_update_id"])]  # type: ignore[call-overload]
    assert [r["last_update_id"] for r in _stored(settings)] == complete

    snapshotter = BookSnapshotter(settings).start()  # a restarted service: replays once, then incremental
    try:
        for part, last in ((rows[cut_a:cut_b], rows[cut_b - 1]), (rows[cut_b:], rows[-1])):
            land(part)
            due = [u for u in _expected_ids(rows) if u <= int(last["last_update_id"])]  # type: ignore[call-overload]
            _wait(lambda due=due: len(_stored(settings)) >= len(due))  # type: ignore[misc]
    finally:
        snapshotter.stop()
    assert snapshotter.state.books  # it kept the books between runs
    assert write_book_snapshots(settings) == {}  # exactly once: nothing is due twice
    stored = _stored(settings)
    assert [r["last_update_id"] for r in stored] == _expected_ids(rows)
    snapshots = ensure_tables(load_catalog(settings), settings)["book_snapshots"]
    assert all(
        s.summary is not None and s.summary[WRITER_KEY] == "book-snapshots" for s in snapshots.snapshots()
    )

    book = OrderBook()
    by_u = iter(sorted(rows, key=lambda r: int(r["last_update_id"])))  # type: ignore[call-overload]
    pending = next(by_u, None)
    for row in stored:  # each stored top 25 equals the replayed book at its update id
        while pending is not None and int(pending["last_update_id"]) <= row["last_update_id"]:  # type: ignore[call-overload]
            book.apply_rows([pending])  # type: ignore[list-item]
            pending = next(by_u, None)
        assert list(
            zip(map(to_unscaled, row["bid_prices"]), map(to_unscaled, row["bid_sizes"]), strict=True)
        ) == book.top("BID", settings.book_snapshot_depth)  # type: ignore[arg-type]
        assert list(
            zip(map(to_unscaled, row["ask_prices"]), map(to_unscaled, row["ask_sizes"]), strict=True)
        ) == book.top("ASK", settings.book_snapshot_depth)  # type: ignore[arg-type]

    moments = random.Random(14).sample(ids, 60)
    with Client(settings) as client:
        fast = {u: client.book("BTCUSDT", AT, 25, update_id=u, include_recent=False) for u in moments}
        # Stored top 100 (the default) over a window of stored rows: depth 25 is answered from them.
        assert sum(b.read_from == "book_snapshots" for b in fast.values()) >= 55
        monkeypatch.setattr(book_module, "_from_stored_snapshot", lambda *args, **kwargs: None)
        for u, answer in fast.items():
            slow = client.book("BTCUSDT", AT, 25, update_id=u, include_recent=False)
            assert (answer.levels.to_pylist(), answer.last_update_id, answer.exchange_ts) == (
                slow.levels.to_pylist(),
                slow.last_update_id,
                slow.exchange_ts,
            ), u


def test_book_from_stored_snapshots_across_a_book_restart_equals_the_delta_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resync restarts the book inside the stored rows' window: rows before it must not be combined."""
    settings = Settings(data_dir=tmp_path / "k2", query_pool_size=1)
    rows = capture_deltas(60)
    ids = sorted({int(r["last_update_id"]) for r in rows})  # type: ignore[call-overload]
    k = next(i for i in range(len(ids) // 2, len(ids) - 1) if ids[i + 1] > ids[i] + 1)
    restart_u = ids[k] + 1
    before = [r for r in rows if int(r["last_update_id"]) <= ids[k]]  # type: ignore[call-overload]
    # The resync's snapshot differs from the book it replaces (the best bid level is gone).
    snapshot, _ = restart_snapshot(before, restart_u)
    after = [r for r in rows if int(r["last_update_id"]) > ids[k]]  # type: ignore[call-overload]
    deltas = ensure_tables(load_catalog(settings), settings)["book_deltas"]
    append(deltas, records_to_arrow(BOOK_DELTA, before + snapshot + after), "book_deltas")
    write_book_snapshots(settings)
    stored = [r["last_update_id"] for r in _stored(settings)]
    assert restart_u in stored

    later = [u for u in ids if restart_u < u]
    moments = [*later[:: max(1, len(later) // 25)], *[u for u in ids if u <= ids[k]][-5:]]
    with Client(settings) as client:
        fast = {u: client.book("BTCUSDT", AT, 25, update_id=u, include_recent=False) for u in moments}
        assert sum(b.read_from == "book_snapshots" for b in fast.values()) >= len(moments) // 2
        # Forced to combine 6 stored rows: the restart lies inside the window and must cut it.
        monkeypatch.setattr(book_module, "_STORED_TRIES", (6,))
        wide = {u: client.book("BTCUSDT", AT, 25, update_id=u, include_recent=False) for u in moments}
        monkeypatch.setattr(book_module, "_from_stored_snapshot", lambda *args, **kwargs: None)
        for u, answer in fast.items():
            slow = client.book("BTCUSDT", AT, 25, update_id=u, include_recent=False)
            assert answer.levels.to_pylist() == slow.levels.to_pylist() == wide[u].levels.to_pylist(), u
            if u > restart_u:  # the level the resync dropped stays gone unless an update re-adds it
                assert answer.last_update_id == slow.last_update_id
