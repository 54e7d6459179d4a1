"""`k2 keys create|list|revoke` and `k2 api serve` (the command `k2 up` runs), as real processes.

The refusals and the listing run in process (typer's runner: a `python -m k2.cli` process costs ~1 s of CPU
in imports); creating and revoking a key, whose effect the served API must see, are real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from k2.api.keycache import KEY_CACHE_SECONDS
from k2.cli import app
from k2.telemetry.procs import ManagedProcess, free_port
from tests.conftest import REPO


def k2(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "k2.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_keys_commands_and_api_serve(tmp_path: Path, broker: str) -> None:
    port = free_port()
    env = {
        **os.environ,
        "K2_DATA_DIR": str(tmp_path / "k2"),
        "K2_KAFKA_BOOTSTRAP_SERVERS": broker,
        "K2_API_PORT": str(port),
        "K2_CONFIG_FILE": str(REPO / "tests" / "k2-test.toml"),
    }
    created = k2(env, "keys", "create", "--name", "ci", "--scope", "admin")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("k2_")
    bad_scope = CliRunner().invoke(app, ["keys", "create", "--name", "x", "--scope", "root"], env=env)
    assert bad_scope.exit_code == 2 and "expected one of ['read', 'admin'], found 'root'" in bad_scope.stdout

    listed = CliRunner().invoke(app, ["keys", "list"], env=env)
    assert listed.exit_code == 0 and "ci" in listed.stdout and "admin" in listed.stdout
    assert key not in listed.stdout and key.split("_", 2)[2] not in listed.stdout

    server = ManagedProcess(
        "api", (sys.executable, "-m", "k2.cli", "api", "serve"), port, tmp_path / "api.log", env=env
    )
    server.start(timeout=60)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            assert c.get("/health").json() == {"status": "ok"}
            assert c.get("/v1/keys", headers={"X-API-Key": key}).status_code == 200
            key_id = key.split("_")[1]
            revoked = k2(env, "keys", "revoke", key_id)
            assert revoked.returncode == 0 and f"revoked {key_id}" in revoked.stdout
            # A process remembers a verified key for KEY_CACHE_SECONDS: the revocation takes effect within that.
            deadline = time.monotonic() + KEY_CACHE_SECONDS + 5.0
            while c.get("/v1/keys", headers={"X-API-Key": key}).status_code == 200:
                assert time.monotonic() < deadline, "revoked key still accepted"
                time.sleep(0.1)
            assert c.get("/v1/keys", headers={"X-API-Key": key}).status_code == 401
    finally:
        server.stop()
    assert CliRunner().invoke(app, ["keys", "revoke", "no-such-key"], env=env).exit_code == 2
