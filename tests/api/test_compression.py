"""Throughput pieces (issue 12 §2): zstd/gzip negotiated from Accept-Encoding on streamed bodies, and
`k2 api serve` running K2_API_WORKERS worker processes."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import psutil
import pyarrow as pa
import pytest

from k2.api.keys import KeyStore
from k2.telemetry.procs import free_port
from tests.api.conftest import Api
from tests.support.api_process import REPO, api_process

PARAMS = {"symbol": "BTCUSDT", "limit": 3000, "include_recent": "false"}


@pytest.mark.parametrize("fmt", ["json", "csv", "arrow"])
@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
def test_compressed_bodies_equal_identity(api: Api, fmt: str, encoding: str) -> None:
    with api.client(api.read_key) as c:
        plain = c.get("/v1/trades", params={**PARAMS, "format": fmt}, headers={"Accept-Encoding": "identity"})
        packed = c.get(
            "/v1/trades",
            params={**PARAMS, "format": fmt},
            headers={"Accept-Encoding": f"{encoding}, identity;q=0.5"},
        )
    assert plain.status_code == packed.status_code == 200
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == encoding and "Accept-Encoding" in packed.headers["vary"]
    if fmt == "arrow":  # compare tables: IPC padding bytes are not guaranteed equal between two writes
        assert (
            pa.ipc.open_stream(packed.content).read_all().equals(pa.ipc.open_stream(plain.content).read_all())
        )
    else:
        assert packed.content == plain.content  # httpx decodes zstd and gzip
    assert packed.num_bytes_downloaded * 3 < plain.num_bytes_downloaded
    assert packed.headers["x-row-count"] == "3000" and packed.headers["x-request-id"]


def test_zstd_preferred_and_refusals_respected(api: Api) -> None:
    with api.client(api.read_key) as c:
        both = c.get("/v1/trades", params=PARAMS, headers={"Accept-Encoding": "gzip, deflate, br, zstd"})
        assert both.headers["content-encoding"] == "zstd"
        refused = c.get("/v1/trades", params=PARAMS, headers={"Accept-Encoding": "zstd;q=0, gzip;q=0"})
        assert "content-encoding" not in refused.headers
        error = c.get("/v1/trades", params={**PARAMS, "limit": 0}, headers={"Accept-Encoding": "zstd"})
        assert error.status_code == 422 and error.json()["error"]["code"] == "invalid_parameter"


def test_api_workers_setting_runs_worker_processes(tmp_path: Path, postgres_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update({
        "K2_CONFIG_FILE": str(REPO / "tests" / "k2-test.toml"), "K2_DATA_DIR": str(tmp_path / "k2"),
        "K2_API_KEYS_DATABASE_URL": postgres_url, "K2_API_WORKERS": "2", "K2_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
    })  # fmt: skip
    key, _ = KeyStore(postgres_url).create("w", "read")
    with api_process(env, tmp_path / "w.log") as url:
        parent = next(
            p
            for p in psutil.process_iter(["cmdline"])
            if url.rsplit(":", 1)[1] in " ".join(p.info["cmdline"] or [])
        )
        assert len(parent.children(recursive=True)) >= 2  # uvicorn's supervisor and its two workers
        for _ in range(4):
            assert httpx.get(f"{url}/v1/snapshots", headers={"X-API-Key": key}, timeout=30).status_code == 200
