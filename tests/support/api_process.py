"""``k2 api serve`` as a real process, as an operator runs it (the tests that need the CLI's own uvicorn set-up)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from k2.telemetry.procs import free_port

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def api_process(env: dict[str, str], log: Path) -> Iterator[str]:
    """``k2 api serve`` as its own process on a free port; yields its URL once /health answers."""
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "k2.cli", "api", "serve", "--port", str(port)],
            env={**env, "PYTHONPATH": str(REPO / "src")}, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"expected k2 api serve to answer on {url}, found it did not: {log.read_text()[-2000:]}"
                )
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
