"""Rate limits across processes (issue 12 §4): the per-key token bucket lives in the key-store database, so
two real API processes (`k2 api serve`) sharing one PostgreSQL key store give ONE limit per key."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from k2.api.keys import KeyStore
from k2.telemetry.procs import free_port
from tests.support.api_process import api_process

REPO = Path(__file__).resolve().parents[2]


def test_two_api_processes_share_one_limit_per_key(tmp_path: Path, postgres_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update({
        "K2_CONFIG_FILE": str(REPO / "tests" / "k2-test.toml"), "K2_DATA_DIR": str(tmp_path / "k2"),
        "K2_API_KEYS_DATABASE_URL": postgres_url, "K2_API_RATE_LIMIT_PER_SECOND": "0.01", "K2_API_RATE_LIMIT_BURST": "6",
        "K2_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
    })  # fmt: skip
    key, _ = KeyStore(postgres_url).create("shared", "read")
    other, _ = KeyStore(postgres_url).create("other", "read")
    with api_process(env, tmp_path / "a.log") as a, api_process(env, tmp_path / "b.log") as b:
        statuses: list[int] = []
        for i in range(6):
            url = (a, b)[i % 2]
            statuses.append(
                httpx.get(f"{url}/v1/snapshots", headers={"X-API-Key": key}, timeout=30).status_code
            )
        assert statuses == [200] * 6
        for url in (a, b):  # the 6-token burst is spent across both processes
            refused = httpx.get(f"{url}/v1/snapshots", headers={"X-API-Key": key}, timeout=30)
            assert refused.status_code == 429, refused.text
            assert (
                refused.json()["error"]["code"] == "rate_limited" and int(refused.headers["retry-after"]) >= 1
            )
        # Another key has its own (shared) bucket.
        assert httpx.get(f"{b}/v1/snapshots", headers={"X-API-Key": other}, timeout=30).status_code == 200
