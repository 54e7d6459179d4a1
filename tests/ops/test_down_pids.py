"""``k2 down`` signals only the processes K2 started: a pid file naming someone else's process is refused.

A pid is recycled by the kernel once its process exits, so a stale pid file can name an unrelated live
process; the pid file records the start time and command line and ``k2 down`` checks both first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from k2.telemetry.procs import ManagedProcess, free_port, pid_alive

REPO = Path(__file__).resolve().parents[2]


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update(
        K2_CONFIG_FILE=os.environ["K2_CONFIG_FILE"], K2_DATA_DIR=str(data_dir), K2_API_PORT=str(free_port()),
        K2_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}", K2_SCHEMA_REGISTRY_URL=f"http://127.0.0.1:{free_port()}",
        K2_LANDING_METRICS_PORT="0", K2_PROMETHEUS_ENABLED="false",
    )  # fmt: skip
    return env


def _down(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "k2.cli", "down"],
        env=_env(data_dir),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_down_does_not_kill_an_unrelated_process_a_pid_file_names(tmp_path: Path) -> None:
    data_dir = tmp_path / "k2"
    run = data_dir / "run"
    run.mkdir(parents=True)
    old_format = subprocess.Popen(["sleep", "300"])
    recycled = subprocess.Popen(["sleep", "301"])
    try:
        # A pid file as `k2 up` wrote it before this check existed: pid and port only.
        (run / "api.pid").write_text(f"{old_format.pid}\n{free_port()}\n")
        # A pid file whose process exited and whose pid now belongs to someone else (other command, other start).
        k2_cmdline = [sys.executable, "-m", "k2.cli", "land"]
        (run / "landing.pid").write_text(
            f"{recycled.pid}\n{free_port()}\n1700000000.0\n{json.dumps(k2_cmdline)}\n"
        )
        result = _down(data_dir)
        output = result.stdout + result.stderr
        assert pid_alive(old_format.pid) and pid_alive(recycled.pid), output
        assert result.returncode == 1, output
        assert "api" in output and "refused" in output and "old pid file" in output, output
        assert "(the pid was reused)" in output and "sleep 301" in output, output
        assert (run / "api.pid").exists() and (
            run / "landing.pid"
        ).exists()  # kept for the operator to look at
    finally:
        old_format.kill()
        recycled.kill()
        old_format.wait()
        recycled.wait()


def test_down_stops_the_process_k2_started(tmp_path: Path) -> None:
    data_dir = tmp_path / "k2"
    port = free_port()
    server = ManagedProcess(
        "api", [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], port,
        tmp_path / "api.log", pid_path=data_dir / "run" / "api.pid",
    ).start(detach=True)  # fmt: skip
    assert server.process is not None
    pid = server.process.pid
    result = _down(data_dir)
    server.process.wait(timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not pid_alive(pid) and "stopped" in result.stdout
    assert not (data_dir / "run" / "api.pid").exists()
