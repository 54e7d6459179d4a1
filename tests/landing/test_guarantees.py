"""Landing guarantees on the real broker, registry and Iceberg catalog: dedup, gaps, commit policy,
backpressure (producer and consumer), lag and freshness gauges."""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any

from prometheus_client import REGISTRY
from pyiceberg.table import Table
from typer.testing import CliRunner

from k2.bus import MarketDataProducer, topic_name
from k2.cli import app
from k2.config import Settings
from k2.lake.summary import RANGES_KEY
from k2.landing import LandingConsumer
from k2.landing.consumer import _ROW_MEMORY
from k2.landing.ledger import current_gaps
from k2.model import TRADE
from k2.model.values import now_micros
from tests.landing.helpers import make_trades, table_keys
from tests.support.landing import land_messages


def _settings(settings: Settings, unique: str, **update: Any) -> Settings:
    return settings.model_copy(
        update={"consumer_group": f"g-{unique}", "consumer_session_timeout_ms": 1000, **update}
    )


def _commit_sizes(table: Table) -> list[int]:
    """Messages covered by each landing commit, oldest first (from the offsets stored in the summaries)."""
    table.refresh()
    sizes = []
    for snapshot in table.snapshots():
        raw = snapshot.summary.additional_properties.get(RANGES_KEY) if snapshot.summary else None
        if raw:
            sizes.append(
                sum(last - first + 1 for parts in json.loads(raw).values() for first, last in parts.values())
            )
    return sizes


def _metric(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_feed_with_duplicates_and_dropped_ids(settings: Settings, unique: str) -> None:
    """5% duplicates and 1% dropped ids: the table has no duplicate and the gap ledger lists exactly the drops."""
    exchange = f"seq{unique}"
    settings = _settings(settings, unique, landing_sequential_exchanges=exchange, landing_commit_rows=3_000)
    rng = random.Random(2026)
    symbols = [f"S{i}{unique.upper()}USDT" for i in range(4)]
    dropped: set[tuple[str, int]] = set()
    streams = []
    for i, symbol in enumerate(symbols):
        rows = make_trades(symbol, 10_000 * (i + 1), 5_000, exchange=exchange, seed=i)
        # Interior ids only: a dropped last id has no later id to reveal it.
        drop = set(rng.sample(range(1, len(rows) - 1), len(rows) // 100))
        dropped.update((symbol, rows[j]["trade_id"]) for j in drop)
        streams.append([r for j, r in enumerate(rows) if j not in drop])
    feed: list[dict[str, Any]] = []
    cursors = [0] * len(streams)
    while any(c < len(s) for c, s in zip(cursors, streams, strict=True)):  # interleave, per-symbol order kept
        k = rng.choice([i for i, s in enumerate(streams) if cursors[i] < len(s)])
        feed.append(streams[k][cursors[k]])
        cursors[k] += 1
    sent = len(feed)
    for _ in range(sent * 5 // 100):  # each duplicate re-sent at a random later position
        j = rng.randrange(len(feed) - 1)
        feed.insert(rng.randrange(j + 1, len(feed) + 1), feed[j])
    topics = [topic_name("crypto", "trades", exchange)]
    half = len(feed) // 2
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, feed[:half])
    land_messages(LandingConsumer(settings, topics=topics), half)
    with MarketDataProducer(settings) as producer:  # the rest after a restart: duplicates cross it
        producer.send_many(TRADE, feed[half:])
    consumer = LandingConsumer(settings, topics=topics)
    land_messages(consumer, len(feed) - half)

    keys = [k for k in table_keys(consumer.tables["trades"]) if k[0] == exchange]
    assert len(keys) == len(set(keys)) == sent
    assert {(s, i) for _, s, i in keys} == {(r["symbol"], r["trade_id"]) for r in feed}
    gaps = current_gaps(consumer.tables["gaps"], exchange=exchange)
    listed = {
        (row["symbol"], i)
        for row in gaps.to_pylist()
        for i in range(row["first_missing_id"], row["last_missing_id"] + 1)
    }
    assert listed == dropped
    assert set(gaps["status"].to_pylist()) == {"open"}
    assert sum(gaps["missing_count"].to_pylist()) == len(dropped)
    # `k2 gaps` lists the same ledger.
    env = {"K2_DATA_DIR": str(settings.data_dir), "COLUMNS": "300"}
    listed_cli = CliRunner().invoke(app, ["gaps", "--exchange", exchange], env=env)
    assert listed_cli.exit_code == 0, listed_cli.output
    assert f"{gaps.num_rows} gaps" in listed_cli.output
    first = gaps.to_pylist()[0]
    assert first["symbol"] in listed_cli.output and str(first["first_missing_id"]) in listed_cli.output


def test_dedup_across_restarts_and_reimports_with_bounded_marks(settings: Settings, unique: str) -> None:
    """A re-import of everything plus new ids lands only the new ids; the LRU of marks stays within its capacity."""
    exchange = f"seq{unique}"
    settings = _settings(
        settings,
        unique,
        landing_sequential_exchanges=exchange,
        landing_hwm_cache_size=2,
        landing_commit_rows=700,
    )
    symbols = [f"R{i}{unique.upper()}USDT" for i in range(6)]
    first = [
        r for i, s in enumerate(symbols) for r in make_trades(s, 1_000 * (i + 1), 300, exchange=exchange)
    ]
    more = [
        r
        for i, s in enumerate(symbols)
        for r in make_trades(s, 1_000 * (i + 1) + 300, 100, exchange=exchange)
    ]
    topics = [topic_name("crypto", "trades", exchange)]
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, first)
    consumer = LandingConsumer(settings, topics=topics)
    land_messages(consumer, len(first))
    assert len(consumer.marks["trades"]) <= 2
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, first + more)  # a re-import of the same data, then new ids
    consumer = LandingConsumer(settings, topics=topics)  # a restart: marks recovered from the table
    stats = land_messages(consumer, len(first) + len(more))
    assert stats.duplicates == len(first)
    assert stats.landed == len(more)
    assert len(consumer.marks["trades"]) <= 2
    keys = [k for k in table_keys(consumer.tables["trades"]) if k[0] == exchange]
    assert keys == sorted((exchange, r["symbol"], r["trade_id"]) for r in first + more)
    assert current_gaps(consumer.tables["gaps"], exchange=exchange).num_rows == 0


def test_commit_every_n_rows(settings: Settings, unique: str) -> None:
    exchange = f"n{unique}"
    settings = _settings(settings, unique, landing_commit_rows=700, landing_commit_interval_seconds=300.0)
    rows = make_trades("BTCUSDT", 1, 3_000, exchange=exchange) + make_trades(
        "ETHUSDT", 1, 100, exchange=exchange
    )
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, rows)
    consumer = LandingConsumer(settings, topics=[topic_name("crypto", "trades", exchange)])
    consumer.run(idle_exit_seconds=2)
    # Every commit holds exactly N messages; the remainder is flushed when the consumer stops.
    assert _commit_sizes(consumer.tables["trades"]) == [700] * 4 + [len(rows) - 2_800]


def test_commit_every_t_seconds(settings: Settings, unique: str) -> None:
    exchange = f"t{unique}"
    interval = 1.0
    settings = _settings(
        settings, unique, landing_commit_rows=1_000_000, landing_commit_interval_seconds=interval
    )
    topic = topic_name("crypto", "trades", exchange)
    rows = make_trades("BTCUSDT", 1, 2_000, exchange=exchange)
    consumer = LandingConsumer(settings, topics=[topic])
    commits: list[float] = []
    # When each committed flush *began*: the policy spaces flush starts by the interval. Completion times
    # are not spaced so (a commit slowed by a loaded machine finishes late, the next one on time: 0.77 s
    # apart was seen at load 11-16), so they are not what is asserted.
    consumer.on_commit = lambda short, landed: commits.append(consumer._buffer.last_flush_started)
    runner = threading.Thread(target=consumer.run, kwargs={"max_seconds": 60})
    with MarketDataProducer(settings) as producer:
        producer.encoder(TRADE, topic)  # topic exists before the consumer subscribes
        runner.start()
        time.sleep(2.0)  # group join
        for start in range(0, len(rows), 50):  # a slow feed: 50 trades every 0.1 s for 4 s
            producer.send_many(TRADE, rows[start : start + 50])
            producer.flush()
            time.sleep(0.1)
    time.sleep(interval * 2)
    consumer.stop()
    runner.join(timeout=30)
    gaps = [b - a for a, b in zip(commits, commits[1:], strict=False)]
    assert len(commits) >= 3  # rows alone (1,000,000) would never have triggered a commit
    assert min(gaps) >= interval * 0.99, gaps  # a flush never starts sooner than T after the previous one
    assert [k[2] for k in table_keys(consumer.tables["trades"]) if k[0] == exchange] == list(range(1, 2_001))


def test_slow_iceberg_pauses_and_bounds_buffered_bytes(settings: Settings, unique: str) -> None:
    """With Iceberg made slow, memory stays within landing_max_buffered_bytes (plus at most one fetch)."""
    exchange = f"b{unique}"
    bound = 1_000_000  # each buffered message counts its value bytes + _ROW_MEMORY (~2 KiB): ~460 per commit
    fetch = 65_536
    settings = _settings(
        settings,
        unique,
        landing_max_buffered_bytes=bound,
        consumer_fetch_max_bytes=fetch,
        landing_commit_rows=1_000_000,
        landing_commit_interval_seconds=300.0,
    )
    rows = make_trades("BTCUSDT", 1, 4_000, exchange=exchange) + make_trades(
        "ETHUSDT", 1, 4_000, exchange=exchange
    )
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, rows)
    consumer = LandingConsumer(settings, topics=[topic_name("crypto", "trades", exchange)])
    paused_during_commit: list[float] = []

    def slow(short: str, rows: int) -> None:
        paused_during_commit.append(_metric("k2_landing_paused_partitions"))
        time.sleep(0.3)

    consumer.before_commit = slow
    stats = consumer.run(idle_exit_seconds=2)
    assert stats.landed == len(rows)
    assert stats.peak_buffered_bytes <= bound + fetch
    # Commits were triggered by the byte bound (rows and time were set out of reach).
    assert stats.commits >= len(rows) * (100 + _ROW_MEMORY) // (bound + fetch)
    assert paused_during_commit and all(p == 4 for p in paused_during_commit)  # all 4 partitions paused
    assert _metric("k2_landing_paused_partitions") == 0


def test_full_producer_queue_blocks_and_never_drops(settings: Settings, unique: str) -> None:
    exchange = f"p{unique}"
    settings = _settings(settings, unique, producer_queue_max_messages=20, producer_linger_ms=50)
    rows = make_trades("BTCUSDT", 1, 3_000, exchange=exchange)
    before = _metric("k2_producer_blocked_seconds_total")
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, rows)
    assert producer.delivered == len(rows)
    assert _metric("k2_producer_blocked_seconds_total") > before
    consumer = LandingConsumer(settings, topics=[topic_name("crypto", "trades", exchange)])
    land_messages(consumer, len(rows))
    assert [k[2] for k in table_keys(consumer.tables["trades"]) if k[0] == exchange] == list(range(1, 3_001))


def test_lag_and_freshness_gauges(settings: Settings, unique: str) -> None:
    """Lag = messages known to exist minus messages landed, per partition; never looping until end offsets."""
    exchange = f"l{unique}"
    settings = _settings(
        settings,
        unique,
        landing_commit_rows=1_000_000,
        landing_commit_interval_seconds=300.0,
        topic_partitions=1,
    )
    topic = topic_name("crypto", "trades", exchange)
    first = make_trades("BTCUSDT", 1, 1_000, exchange=exchange)
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, first)
    consumer = LandingConsumer(settings, topics=[topic])
    consumer.subscribe()

    def lag() -> float:
        consumer.update_gauges()
        return _metric("k2_landing_consumer_lag", topic=topic, partition="0")

    def consume_until(count: int) -> None:
        deadline = time.monotonic() + 30
        while consumer.stats.consumed < count and time.monotonic() < deadline:
            consumer.poll_once()
        assert consumer.stats.consumed == count

    try:
        consume_until(len(first))
        assert lag() == len(first)  # all consumed and buffered, none landed
        consumer.flush()
        assert lag() == 0
        newest = max(r["exchange_ts"] for r in first)
        freshness = _metric("k2_landing_freshness_seconds", table="trades")
        assert abs(freshness - (now_micros() - newest) / 1e6) < 60
        with MarketDataProducer(settings) as producer:
            producer.send_many(TRADE, make_trades("BTCUSDT", 1_001, 500, exchange=exchange))
        consume_until(len(first) + 500)
        assert lag() == 500
        consumer.flush()
        assert lag() == 0
    finally:
        consumer.close()


def test_concurrent_commit_conflict_is_retried_without_losing_offsets(
    settings: Settings, unique: str
) -> None:
    """Writer B commits between writer A's offset check and A's append: A must refresh, recompute, retry.

    pyiceberg would otherwise rebase A's append with A's stale summary and erase B's offsets.
    """
    settings = _settings(
        settings, unique, landing_commit_rows=1_000_000, landing_commit_interval_seconds=300.0
    )
    topic_a, topic_b = (
        topic_name("crypto", "trades", f"ca{unique}"),
        topic_name("crypto", "trades", f"cb{unique}"),
    )
    rows_a = make_trades("BTCUSDT", 1, 500, exchange=f"ca{unique}")
    rows_b = make_trades("BTCUSDT", 1, 300, exchange=f"cb{unique}")
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, rows_a + rows_b)
    a = LandingConsumer(
        settings.model_copy(update={"consumer_group": f"ga-{unique}"}), topics=[topic_a], name="writer-a"
    )
    b = LandingConsumer(
        settings.model_copy(update={"consumer_group": f"gb-{unique}"}), topics=[topic_b], name="writer-b"
    )
    try:
        for consumer, count in ((a, len(rows_a)), (b, len(rows_b))):
            consumer.subscribe()
            deadline = time.monotonic() + 30
            while consumer.stats.consumed < count and time.monotonic() < deadline:
                consumer.poll_once()
        interleaved: list[int] = []

        def b_commits_first(short: str, rows: int) -> None:
            if not interleaved:
                interleaved.append(rows)
                b.flush()  # lands between A's summary computation and A's append

        a.before_commit = b_commits_first
        a.flush()
    finally:
        a.close()
        b.close()
    assert interleaved and b.stats.commits == 1
    assert a.stats.commit_conflicts == 1 and a.stats.commits == 1
    table = a.tables["trades"]
    table.refresh()
    stored = json.loads(table.current_snapshot().summary.additional_properties["k2.kafka.offsets"])  # type: ignore[union-attr]
    assert sum(stored[topic_a].values()) == len(rows_a)
    assert sum(stored[topic_b].values()) == len(rows_b)  # B's offsets survived A's retried commit
    keys = table_keys(table)
    assert [k for k in keys if k[0] == f"ca{unique}"] == [
        (f"ca{unique}", "BTCUSDT", i) for i in range(1, 501)
    ]
    assert [k for k in keys if k[0] == f"cb{unique}"] == [
        (f"cb{unique}", "BTCUSDT", i) for i in range(1, 301)
    ]
