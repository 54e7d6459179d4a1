"""The commands users run: ``k2 fake-exchange serve`` and ``k2 stream binance`` as real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from confluent_kafka import Consumer

from k2.bus.broker import end_offsets
from k2.bus.topics import list_topics
from k2.config import Settings
from k2.landing.ledger import current_gaps
from k2.model import TRADE
from k2.sources.fake_exchange import CaptureMessage
from k2.sources.gaps import GapLedger
from k2.telemetry.procs import ManagedProcess, free_port
from tests.sources.helpers import BINANCE_CAPTURES, consume


def test_stream_command_lands_a_faulty_feed_in_kafka(
    private_settings: Settings, tmp_path: Path, binance_messages: list[CaptureMessage]
) -> None:
    port = free_port()
    served = [m.trade_id for m in binance_messages[:6_000] if m.channel == "btcusdt@trade"]
    fake = ManagedProcess(
        "fake-exchange",
        [
            sys.executable,
            "-m",
            "k2.cli",
            "fake-exchange",
            "serve",
            "--port",
            str(port),
            "--max-messages",
            "6000",
            "--drop-every",
            "1500",
            "--max-drops",
            "3",
            "--reconnect-advance",
            "30",
            "--capture",
            str(BINANCE_CAPTURES[0]),
            "--capture",
            str(BINANCE_CAPTURES[1]),
        ],
        port,
        tmp_path / "fake.log",
    ).start()
    data_dir = tmp_path / "k2"
    env = {
        **os.environ,
        "K2_KAFKA_BOOTSTRAP_SERVERS": str(private_settings.kafka_bootstrap_servers),
        "K2_SCHEMA_REGISTRY_URL": str(private_settings.schema_registry_url),
        "K2_DATA_DIR": str(data_dir),
        "K2_SOURCE_STALL_SECONDS": "1",
        "K2_SOURCE_BACKOFF_INITIAL_SECONDS": "0.05",
    }
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "k2.cli",
                "stream",
                "binance",
                "--symbols",
                "BTCUSDT",
                "--url",
                f"ws://127.0.0.1:{port}",
                "--rest-url",
                f"http://127.0.0.1:{port}",
                "--idle-exit",
                "3",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        fake.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "Feed summary" in result.stdout
        and f"ws://127.0.0.1:{port}/stream?streams=btcusdt@trade/btcusdt@bookTicker" in result.stdout
    )
    assert "drops=3" in (tmp_path / "fake.log").read_text()

    ids = consume(private_settings, "market.crypto.trades.binance", TRADE, expected=len(served))[
        "trade_id"
    ].to_pylist()
    assert sorted(ids) == served  # every trade once, 3 reconnect gaps backfilled
    settings = private_settings.model_copy(update={"data_dir": data_dir})
    gaps = current_gaps(GapLedger.for_settings(settings).table).to_pylist()  # type: ignore[arg-type]
    trade_gaps = [g for g in gaps if g["data_type"] == "trades"]
    assert len(trade_gaps) >= 3 and {g["status"] for g in trade_gaps} == {"backfilled"}, trade_gaps
    # A reconnect also breaks the depth chain: the book resyncs from a REST snapshot and the ids in
    # between are lost by nature (no REST history of depth). The fake's drops are on the trade stream's
    # connection; on a loaded machine the 1 s stall limit can reconnect the depth stream too.
    others = [g for g in gaps if g["data_type"] != "trades"]
    assert all(
        g["data_type"] == "depth" and g["status"] == "lost" and "resynced" in g["detail"] for g in others
    ), others


def test_bad_arguments_are_refused_with_the_expected_form() -> None:
    from typer.testing import CliRunner

    from k2.cli import app

    runner = CliRunner()
    for args, message in (
        (["stream", "binance", "--symbols", "BTC/USDT"], "expected a Binance symbol like BTCUSDT"),
        (
            ["stream", "binance", "--symbols", "BTCUSDT", "--market", "moon"],
            "expected one of ['spot', 'us', 'usdm']",
        ),
        (
            [
                "replay",
                "--symbols",
                "BTCUSDT",
                "--start",
                "2024-08-08T23:54:00Z",
                "--end",
                "2024-08-09T00:06:00Z",
                "--to-topic",
                "t",
                "--speed",
                "fast",
            ],
            "expected a speed like 10x",
        ),
        (
            [
                "replay",
                "--symbols",
                "BTCUSDT",
                "--start",
                "2024-08-08T23:54:00",
                "--end",
                "2024-08-09T00:06:00Z",
                "--to-topic",
                "t",
            ],
            "expected a time with a zone",
        ),
        (["reference", "binance", "--market", "moon"], "expected one of ['spot', 'us', 'usdm']"),
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in " ".join(result.output.split()), (args, result.output)


def _wait_for_messages(settings: Settings, topic: str, count: int, stream: subprocess.Popen[str]) -> None:
    """Until the broker holds at least ``count`` messages of ``topic`` (its high watermark is a lower bound)."""
    import time

    consumer = Consumer({**settings.kafka_client_config(), "group.id": "sigterm-wait"})
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert stream.poll() is None, stream.communicate()[1][-3000:]
            topics = list_topics(settings)
            if topic in topics:
                ends = end_offsets(consumer, [(topic, p) for p in range(topics[topic])], timeout=5)
                if sum(high for _, high in ends.values()) >= count:
                    return
            time.sleep(0.2)
        raise AssertionError(f"expected {count} messages on {topic} within 180 s")
    finally:
        consumer.close()


def test_sigterm_right_after_start_still_exits_cleanly(private_settings: Settings, tmp_path: Path) -> None:
    """A SIGTERM before the feeds' own handlers exist (here: as soon as the command printed its first line)
    is honoured when they do: exit 0 with the summary. Before, the default action killed it (-15)."""
    import signal

    env = {
        **os.environ,
        "K2_KAFKA_BOOTSTRAP_SERVERS": str(private_settings.kafka_bootstrap_servers),
        "K2_SCHEMA_REGISTRY_URL": str(private_settings.schema_registry_url),
        "K2_DATA_DIR": str(tmp_path / "k2"),
        "PYTHONUNBUFFERED": "1",
    }
    port = free_port()  # nothing listens: the stop must not wait for a connection either
    stream = subprocess.Popen(
        [sys.executable, "-m", "k2.cli", "stream", "binance", "--symbols", "BTCUSDT", "--no-quotes"]
        + ["--url", f"ws://127.0.0.1:{port}", "--rest-url", f"http://127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert stream.stdout is not None
    first = stream.stdout.readline()
    stream.send_signal(signal.SIGTERM)
    out, err = stream.communicate(timeout=120)
    assert stream.returncode == 0, (first, err[-3000:])
    assert "Feed summary" in first + out


def test_sigterm_stops_the_stream_cleanly(private_settings: Settings, tmp_path: Path) -> None:
    import signal

    port = free_port()
    fake = ManagedProcess(
        "fake-exchange",
        [
            sys.executable,
            "-m",
            "k2.cli",
            "fake-exchange",
            "serve",
            "--port",
            str(port),
            "--speed",
            "5",
            "--capture",
            str(BINANCE_CAPTURES[0]),
        ],
        port,
        tmp_path / "fake.log",
    ).start()
    env = {
        **os.environ,
        "K2_KAFKA_BOOTSTRAP_SERVERS": str(private_settings.kafka_bootstrap_servers),
        "K2_SCHEMA_REGISTRY_URL": str(private_settings.schema_registry_url),
        "K2_DATA_DIR": str(tmp_path / "k2"),
        "PYTHONUNBUFFERED": "1",
    }
    try:
        stream = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "k2.cli",
                "stream",
                "binance",
                "--symbols",
                "BTCUSDT",
                "--no-quotes",
                "--url",
                f"ws://127.0.0.1:{port}",
                "--rest-url",
                f"http://127.0.0.1:{port}",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert stream.stdout is not None
        first = (
            stream.stdout.readline()
        )  # printed once the command has started (imports done; a loaded machine is slow)
        _wait_for_messages(private_settings, "market.crypto.trades.binance", 11, stream)
        stream.send_signal(signal.SIGTERM)
        out, err = stream.communicate(timeout=30)
        out = first + out
    finally:
        fake.stop()
    assert stream.returncode == 0, err[-3000:]
    assert "Feed summary" in out
    ids = consume(private_settings, "market.crypto.trades.binance", TRADE, expected=1, idle_seconds=1.0)[
        "trade_id"
    ].to_pylist()
    # Everything produced before the signal was flushed: a gap-free prefix of the capture.
    assert len(ids) > 10 and sorted(ids) == list(range(min(ids), min(ids) + len(ids)))
