"""`k2 dlq list / show / replay` through the real CLI (typer's CliRunner), broker, registry and catalog.

Scenario: a feed whose clock runs two hours ahead is dead-lettered (timestamp_out_of_window); the operator
lists and inspects it, fixes the setting (K2_LANDING_MAX_FUTURE_SECONDS), replays, and the message lands
through the normal path, exactly once; a second replay moves nothing (the letter was moved, not copied).
Replay validates first: letters that still fail stay in the DLQ, reported, however often replay runs.
"""

from __future__ import annotations

from typing import Any

from typer.testing import CliRunner

from k2.bus import MarketDataProducer, topic_name
from k2.cli import app
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.landing import LandingConsumer
from k2.landing.dlq import read_dead_letters
from k2.model import TRADE
from k2.model.values import now_micros
from tests.landing.helpers import make_trades, table_keys
from tests.support.landing import land_messages


def _env(settings: Settings, **extra: str) -> dict[str, Any]:
    return {
        "K2_DATA_DIR": str(settings.data_dir),
        "K2_KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "K2_SCHEMA_REGISTRY_URL": settings.registry_url,
        "K2_CONSUMER_GROUP": settings.consumer_group,
        "COLUMNS": "300",
        **extra,
    }


def test_dlq_list_show_replay_after_fix_lands_exactly_once(settings: Settings, unique: str) -> None:
    exchange = f"v{unique}"
    topic = topic_name("crypto", "trades", exchange)
    dlq = topic + ".dlq"
    settings = settings.model_copy(
        update={
            "consumer_group": f"g-{unique}",
            "landing_max_future_seconds": 3_600.0,
            "consumer_session_timeout_ms": 1000,
        }
    )
    good = make_trades("BTCUSDT", 1, 5, exchange=exchange)
    ahead = {
        **make_trades("BTCUSDT", 6, 1, exchange=exchange)[0],
        "exchange_ts": now_micros() + 2 * 3_600 * 1_000_000,
    }
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, good)
        producer.send(TRADE, ahead, headers={"origin": "skewed-feed"})
    land_messages(LandingConsumer(settings, topics=[topic]), len(good) + 1)
    trades = ensure_tables(load_catalog(settings), settings)["trades"]
    keys = [k[2] for k in table_keys(trades) if k[0] == exchange]
    assert keys == [1, 2, 3, 4, 5]

    runner = CliRunner()
    listed = runner.invoke(app, ["dlq", "list", "--topic", dlq], env=_env(settings))
    assert listed.exit_code == 0, listed.output
    assert "timestamp_out_of_window" in listed.output and "1 dead letters" in listed.output

    letter = read_dead_letters(settings, dlq, idle_seconds=1.0)[0]
    shown = runner.invoke(
        app, ["dlq", "show", dlq, str(letter.dlq_partition), str(letter.dlq_offset)], env=_env(settings)
    )
    assert shown.exit_code == 0, shown.output
    assert "timestamp_out_of_window" in shown.output
    assert (letter.value or b"").hex() in shown.output.replace("\n", "")
    assert f"{topic}[{letter.source_partition}]@{letter.source_offset}" in shown.output
    missing = runner.invoke(app, ["dlq", "show", dlq, "0", "999999"], env=_env(settings))
    assert missing.exit_code == 1 and "no dead letter" in missing.output

    fixed = settings.model_copy(update={"landing_max_future_seconds": 86_400.0})
    fix_env = _env(fixed, K2_LANDING_MAX_FUTURE_SECONDS="86400")
    for moved in (1, 0):  # replayed twice: moved once
        replayed = runner.invoke(app, ["dlq", "replay", "--topic", dlq], env=fix_env)
        assert replayed.exit_code == 0, replayed.output
        assert f"replayed {moved} dead letters" in replayed.output
        landing = LandingConsumer(fixed, topics=[topic])
        # Nothing moved: the idle exit is what shows nothing arrives.
        stats = land_messages(landing, moved) if moved else landing.run(idle_exit_seconds=2)
        assert stats.consumed == moved and stats.dead_lettered == 0
    assert "1 already replayed" in replayed.output
    keys = [k[2] for k in table_keys(trades) if k[0] == exchange]
    assert keys == [1, 2, 3, 4, 5, 6]
    assert (
        len(read_dead_letters(settings, dlq, idle_seconds=1.0)) == 1
    )  # the fix did not dead-letter it again
    listed = runner.invoke(app, ["dlq", "list", "--topic", dlq], env=_env(settings))
    assert "1 dead letters, 1 replayed" in listed.output, listed.output
    from k2.ops.status import collect_status

    status = collect_status(settings)
    assert status["dlq"][dlq] >= 1 and status["dlq_replayed"][dlq] == 1
    assert f"{dlq}.replayed" not in {t for s in status["sources"].values() for t in s["topics"]}


def test_repeated_replays_leave_still_invalid_letters_where_they_are(settings: Settings, unique: str) -> None:
    """Issue 10 §8: replay used to re-dead-letter still-invalid letters (18 -> 36 -> 40 -> 52)."""
    exchange = f"w{unique}"
    topic = topic_name("crypto", "trades", exchange)
    dlq = topic + ".dlq"
    settings = settings.model_copy(
        update={
            "consumer_group": f"g-{unique}",
            "landing_max_future_seconds": 3_600.0,
            "consumer_session_timeout_ms": 1000,
        }
    )
    rows = make_trades("BTCUSDT", 1, 4, exchange=exchange)
    bad = [
        {**rows[0], "price": 0},  # never valid
        {**rows[1], "side": "SIDEWAYS"},  # never valid
        {
            **rows[2],
            "exchange_ts": now_micros() + 2 * 3_600 * 1_000_000,
        },  # valid once the clock window is widened
    ]
    with MarketDataProducer(settings) as producer:
        producer.send_many(TRADE, [*bad, rows[3]])
        producer.produce_raw(topic, b"BTCUSDT", b"\x00\x00\x00\x00\x01not avro")  # never decodable
    land_messages(LandingConsumer(settings, topics=[topic]), len(bad) + 2)
    assert len(read_dead_letters(settings, dlq, idle_seconds=1.0)) == 4

    runner = CliRunner()
    for _ in range(3):
        replayed = runner.invoke(app, ["dlq", "replay", "--topic", dlq], env=_env(settings))
        assert replayed.exit_code == 0, replayed.output
        assert (
            "replayed 0 dead letters" in replayed.output
            and "4 still invalid, left in the DLQ" in replayed.output
        )
        assert "non_positive_price: 1" in replayed.output and "timestamp_out_of_window: 1" in replayed.output
        LandingConsumer(settings, topics=[topic]).run(idle_exit_seconds=1.5)
        assert len(read_dead_letters(settings, dlq, idle_seconds=1.0)) == 4

    fixed = settings.model_copy(update={"landing_max_future_seconds": 86_400.0})
    fix_env = _env(fixed, K2_LANDING_MAX_FUTURE_SECONDS="86400")
    for moved in (1, 0, 0):
        replayed = runner.invoke(app, ["dlq", "replay", "--topic", dlq], env=fix_env)
        assert f"replayed {moved} dead letters" in replayed.output and "3 still invalid" in replayed.output, (
            replayed.output
        )
        landing = LandingConsumer(fixed, topics=[topic])
        land_messages(landing, moved) if moved else landing.run(idle_exit_seconds=1.5)
    trades = ensure_tables(load_catalog(settings), settings)["trades"]
    assert [k[2] for k in table_keys(trades) if k[0] == exchange] == [3, 4]
    assert len(read_dead_letters(settings, dlq, idle_seconds=1.0)) == 4
    listed = runner.invoke(app, ["dlq", "list", "--topic", dlq], env=_env(settings))
    assert "4 dead letters, 1 replayed" in listed.output, listed.output


def test_dlq_list_and_show_print_hostile_reasons_literally(settings: Settings, unique: str) -> None:
    """A dead letter's reason, detail and headers come from whoever produced it: escape codes and rich
    markup in them are shown as text, never interpreted by the operator's terminal."""
    from confluent_kafka import Producer

    from k2.bus.dlq import dlq_headers
    from k2.bus.topics import ensure_topics

    dlq = topic_name("crypto", "trades", f"h{unique}") + ".dlq"
    ensure_topics(settings, [dlq])
    hostile = "\x1b[2J[blink]pwned[/blink]"
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    headers = dlq_headers(hostile, f"detail {hostile}", "t", 0, 7, original=[("origin", hostile.encode())])
    producer.produce(dlq, value=b"\x00bytes", headers=headers)
    assert producer.flush(30) == 0
    runner = CliRunner()
    listed = runner.invoke(app, ["dlq", "list", "--topic", dlq], env=_env(settings))
    assert listed.exit_code == 0, listed.output
    letter = read_dead_letters(settings, dlq, idle_seconds=1.0)[0]
    shown = runner.invoke(
        app, ["dlq", "show", dlq, str(letter.dlq_partition), str(letter.dlq_offset)], env=_env(settings)
    )
    assert shown.exit_code == 0, shown.output
    for output in (listed.output, shown.output):
        assert "\x1b" not in output
        assert "\\x1b[2J[blink]pwned[/blink]" in output.replace("\n", "")
