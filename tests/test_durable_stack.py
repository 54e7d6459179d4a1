"""The local stack is durable: `k2 down`/`k2 up` cycles and broker SIGKILLs lose nothing.

The real stack as users run it (`k2 up`: SeaweedFS, Tansu on `s3://`, K2's registry, the landing
service, the API; random ports, a tmp data dir) takes five `k2 down`/`k2 up` cycles (issue 10's test)
and two broker SIGKILLs + restarts while `k2 import ... --via-kafka` runs file after file and `k2 stream binance`
reads the fake exchange. Afterwards the trades table holds exactly the sent keys, once each, and the
dead-letter topic still holds every letter it held mid-way (and every bad import line is accounted for).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from k2.bus.dlq import DeadLetter
from k2.config import Settings
from k2.lake.catalog import ensure_tables, load_catalog
from k2.ops.drain import pending
from k2.sources.fake_exchange import load_binance
from k2.telemetry.procs import ManagedProcess, free_port
from tests.landing.helpers import table_keys
from tests.sources.helpers import BINANCE_CAPTURES
from tests.support.stack import REPO, k2, stack_env

pytestmark = pytest.mark.slow

TOPIC = "market.crypto.trades.binance"
DLQ = TOPIC + ".dlq"
FILES = 8
ROWS_PER_FILE = 1_250
STREAM_MESSAGES = 4_000


def _import_file(folder: Path, index: int) -> tuple[Path, set[int], int]:
    """An ETHUSDT Binance trades file with unique ids and one bad line; (path, good ids, bad line number)."""
    path = folder / f"ETHUSDT-trades-2021-01-03.part{index}.csv"
    first = 700_000_000 + index * ROWS_PER_FILE
    bad_line = 1 + index * 7
    lines, ids = [], set()
    for i in range(ROWS_PER_FILE):
        if i + 1 == bad_line:
            lines.append(
                f"{first + i},-1.5,0.01000000,0.1,1609632000000,True,True"
            )  # price < 0: dead-lettered
            continue
        lines.append(f"{first + i},730.{i % 100:02d}000000,0.01039300,7.5,{1609632000000 + i * 7},True,True")
        ids.add(first + i)
    path.write_text("\n".join(lines) + "\n")
    return path, ids, bad_line


def _dead_letters(settings: Settings) -> set[tuple[str, bytes, str]]:
    """(reason, original bytes, source file:line or detail) of every letter in the DLQ topic."""
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"dlq-{time.monotonic_ns()}",
            "enable.auto.commit": False,
        }
    )
    found: set[tuple[str, bytes, str]] = set()
    try:
        topics = consumer.list_topics(timeout=10).topics
        if DLQ not in topics:
            return found
        consumer.assign([TopicPartition(DLQ, p, OFFSET_BEGINNING) for p in topics[DLQ].partitions])
        quiet = time.monotonic()
        while time.monotonic() - quiet < 3:
            for msg in consumer.consume(1000, timeout=0.3):
                if msg.error() is None:
                    quiet = time.monotonic()
                    letter = DeadLetter.from_message(msg)
                    headers = dict(letter.original_headers)
                    where = f"{headers.get('k2.source.file', b'').decode()}:{headers.get('k2.source.line', b'').decode()}"
                    found.add((letter.reason, letter.value or b"", where if where != ":" else letter.detail))
    finally:
        consumer.close()
    return found


def _local_rejects(data_dir: Path) -> set[tuple[str, int]]:
    """(file, line) of bad import lines kept in the local rejects files (when no broker answered)."""
    found = set()
    for path in (data_dir / "rejects").rglob("*.jsonl") if (data_dir / "rejects").exists() else []:
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            found.add((Path(entry["file"]).name, int(entry["line"])))
    return found


def _wait_landed(settings: Settings, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    left: dict[tuple[str, int], int] = {}
    while time.monotonic() < deadline:
        left = pending(settings)
        if not left:
            return
        time.sleep(1)
    raise AssertionError(f"expected the landing to catch up, found still pending: {left}")


def test_down_up_cycles_and_broker_kills_lose_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "k2"
    env = stack_env(data_dir, down_drain_seconds="5", producer_stall_seconds="3", source_stall_seconds="20")
    settings = Settings(
        data_dir=data_dir, broker_port=int(env["K2_BROKER_PORT"]), registry_port=int(env["K2_REGISTRY_PORT"]),
    )  # fmt: skip
    started = k2(["up"], env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        status = k2(["status", "--json"], env)
        parts = {p["name"]: p["healthy"] for p in json.loads(status.stdout)["parts"]}
        assert parts.get("storage") is True and parts.get("broker") is True, status.stdout[-2000:]
        _cycles_while_importing_and_streaming(tmp_path, env, settings)
    finally:
        k2(["down", "--force"], env)


def _cycles_while_importing_and_streaming(tmp_path: Path, env: dict[str, str], settings: Settings) -> None:
    data_dir = settings.data_dir
    messages = load_binance(BINANCE_CAPTURES)[:STREAM_MESSAGES]
    served = {m.trade_id for m in messages if m.channel == "btcusdt@trade" and m.trade_id is not None}
    fake_port = free_port()
    fake = ManagedProcess(
        "fake-exchange",
        [sys.executable, "-m", "k2.cli", "fake-exchange", "serve", "--port", str(fake_port), "--max-messages", str(STREAM_MESSAGES),
         "--stall-every", "40", "--stall-seconds", "1", "--malformed-every", "500",
         "--capture", str(BINANCE_CAPTURES[0]), "--capture", str(BINANCE_CAPTURES[1])],
        fake_port, tmp_path / "fake.log", env=env,
    ).start()  # fmt: skip
    with open(tmp_path / "stream.log", "w") as stream_log:
        stream = subprocess.Popen(
            [sys.executable, "-m", "k2.cli", "stream", "binance", "--symbols", "BTCUSDT", "--url", f"ws://127.0.0.1:{fake_port}",
             "--rest-url", f"http://127.0.0.1:{fake_port}", "--idle-exit", "20"],
            env=env, cwd=REPO, stdout=stream_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    files = [_import_file(tmp_path, i) for i in range(FILES)]
    import_results: list[subprocess.CompletedProcess[str]] = []

    def run_imports() -> None:
        # An import started while the stack is down cannot reach the registry and exits non-zero at once;
        # the operator re-runs it (a re-sent row is dropped by the landing's dedup).
        for path, _, _ in files:
            for _attempt in range(10):
                result = k2(
                    ["import", "binance-trades", str(path), "--via-kafka", "--quiet", "--max-rejects", "1"],
                    env,
                    timeout=300,
                )
                import_results.append(result)
                if result.returncode == 0:
                    break
                time.sleep(3)
            time.sleep(2)

    importer = threading.Thread(target=run_imports)
    importer.start()
    mid_dlq: set[tuple[str, bytes, str]] = set()
    try:
        for cycle in range(5):
            time.sleep(3)
            if cycle in (1, 3):  # a broker crash, then `k2 up` restarts it
                pid = int((data_dir / "run" / "broker.pid").read_text().split()[0])
                os.kill(pid, signal.SIGKILL)
                time.sleep(1)
                restarted = k2(["up"], env)
                assert restarted.returncode == 0 and "broker     started" in restarted.stdout, (
                    restarted.stdout + restarted.stderr
                )
                time.sleep(3)
            down = k2(["down"], env)
            assert down.returncode == 0, down.stdout + down.stderr
            up = k2(["up"], env)
            assert up.returncode == 0, up.stdout + up.stderr
            if cycle == 2:
                mid_dlq = _dead_letters(settings)
        importer.join(timeout=600)
        assert stream.wait(timeout=300) == 0, (tmp_path / "stream.log").read_text()[-3000:]
    finally:
        if stream.poll() is None:
            stream.kill()
        fake.stop()
        importer.join(timeout=60)
    succeeded = [r for r in import_results if r.returncode == 0]
    assert len(succeeded) == FILES, [r.stderr[-500:] for r in import_results if r.returncode != 0]

    _wait_landed(settings)
    final_dlq = _dead_letters(settings)
    table = ensure_tables(load_catalog(settings), settings)["trades"]
    keys = table_keys(table)
    stopped = k2(["down"], env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr

    expected = sorted(
        [("binance", "BTCUSDT", i) for i in served]
        + [("binance", "ETHUSDT", i) for _, ids, _ in files for i in ids]
    )
    assert len(keys) == len(set(keys)), "expected no duplicate trades"
    assert keys == expected, (
        f"missing {len(set(expected) - set(keys))}, unexpected {len(set(keys) - set(expected))}"
    )
    assert mid_dlq and mid_dlq <= final_dlq, "expected the dead letters held mid-way to survive the cycles"
    assert any(reason != "non_positive_price" for reason, _, _ in final_dlq), (
        "expected the stream's malformed frames"
    )
    bad_lines = {(path.name, line) for path, _, line in files}
    in_dlq = {
        (where.split(":")[0], int(where.split(":")[1]))
        for reason, _, where in final_dlq
        if reason == "non_positive_price"
    }
    assert in_dlq | _local_rejects(data_dir) == bad_lines, (
        "expected every bad import line in the DLQ or the rejects file"
    )
