"""Run the real local stack (`k2 up` / `k2 down`) as a user does: subprocesses, random ports, a tmp data dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from k2.telemetry.procs import free_port, free_port_pair

REPO = Path(__file__).resolve().parents[2]


def storage_port() -> int:
    """The local SeaweedFS's S3 port p, with p + 10000 (its gRPC port) free too, both outside the ephemeral range."""
    return free_port_pair()


def stack_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """Environment for `python -m k2.cli` against a fresh stack on random ports (PYTHONPATH kept)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    for name in ("BROKER", "REGISTRY", "API", "LANDING_METRICS"):
        env[f"K2_{name}_PORT"] = str(free_port())
    env["K2_STORAGE_PORT"] = str(storage_port())
    env["K2_PROMETHEUS_ENABLED"] = "false"
    env["K2_DATA_DIR"] = str(data_dir)
    env["K2_CONFIG_FILE"] = str(REPO / "tests" / "k2-test.toml")
    env["K2_CONSUMER_SESSION_TIMEOUT_MS"] = "2000"
    env["K2_LANDING_COMMIT_INTERVAL_SECONDS"] = "0.5"
    env["COLUMNS"] = "200"
    env.update({f"K2_{k.upper()}": v for k, v in settings.items()})
    return env


def k2(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run one `k2` command; returns the completed process (stdout+stderr captured)."""
    return subprocess.run(
        [sys.executable, "-m", "k2.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
