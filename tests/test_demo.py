"""`k2 demo` end to end, exactly as `make demo` runs it, on random free ports and a fresh data dir.

The demo starts the real local stack (Tansu broker, K2's registry, the landing service, the REST API)
as detached subprocesses, replays the real Binance capture through Kafka into Iceberg and checks every
landed trade against the source JSON; `k2 down` must then stop every part it started.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from k2.telemetry.procs import free_port, pid_alive, port_open
from tests.support.stack import storage_port

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "k2.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_demo_lands_the_capture_exactly_and_down_stops_the_stack(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("BROKER", "REGISTRY", "API", "LANDING_METRICS", "PROMETHEUS")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update({f"K2_{name}_PORT": str(port) for name, port in ports.items()})
    env["K2_STORAGE_PORT"] = str(storage_port())  # the local SeaweedFS that keeps the broker's log
    env["K2_DATA_DIR"] = str(tmp_path / "k2")
    env["K2_CONFIG_FILE"] = str(REPO / "tests" / "k2-test.toml")
    env["COLUMNS"] = "200"
    try:
        demo = _run(["demo", "--timeout", "240"], env, timeout=420)
        output = demo.stdout + demo.stderr
        assert demo.returncode == 0, output[-4000:]
        assert "19,904 distinct" in output, output[-4000:]
        assert re.search(r"mismatches against the source JSON: 0 ->\s+exact", output), output[-4000:]
        assert "1-minute OHLCV bars" in output and "Last 10 trades" in output and "Iceberg snapshot" in output
        assert f"research console: http://127.0.0.1:{ports['API']}/console/" in output  # issue 16
        assert "book matches the bookTicker" in output, output[-4000:]
        # The demo leaves the stack up: status reads it, and the parts listen on the configured ports.
        assert port_open("127.0.0.1", ports["BROKER"]) and port_open("127.0.0.1", ports["REGISTRY"])
        status = _run(["status", "--json"], env, timeout=120)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "market_data.trades" in status.stdout
    finally:
        pids = []
        run_dir = tmp_path / "k2" / "run"
        for pid_file in run_dir.glob("*.pid") if run_dir.exists() else []:
            pids.append(int(pid_file.read_text().split()[0]))
        down = _run(["down"], env, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert pids, "expected pid files for the parts the demo started"
    assert not [pid for pid in pids if pid_alive(pid)], "expected `k2 down` to stop every part"
