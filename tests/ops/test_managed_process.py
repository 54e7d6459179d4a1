"""A managed server counts as started only when ITS process listens on its port.

Stop 14's CI: a port chosen free a moment earlier was bound by another program first; K2's registry then
failed to bind and exited, yet its port answered, so the start "succeeded" and every request went to the
other program ("Server disconnected without sending a response").
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from k2.telemetry.procs import (
    ManagedProcess,
    PortTakenError,
    ephemeral_port_range,
    free_port_pair,
    listens_on,
    start_on_free_port,
)


def _http_server(port: int, log: Path) -> ManagedProcess:
    return ManagedProcess(
        "web", [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], port, log
    )


def test_a_port_held_by_another_process_fails_the_start_naming_it(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        port = squatter.getsockname()[1]
        server = _http_server(port, tmp_path / "web.log")
        with pytest.raises(PortTakenError, match="web failed to start") as failed:
            server.start(timeout=30)
        assert server.process is not None and server.process.poll() is not None
        assert "Address already in use" in str(failed.value)


def test_a_started_server_is_the_listener_on_its_port(tmp_path: Path) -> None:
    port = free_port_pair()
    server = _http_server(port, tmp_path / "web.log").start(timeout=30)
    try:
        assert server.process is not None and listens_on(server.process.pid, port)
        assert not listens_on(server.process.pid, port + 1)
    finally:
        server.stop()


def test_port_pairs_stay_below_the_ephemeral_range_and_are_free() -> None:
    low, _ = ephemeral_port_range()
    for _ in range(50):
        port = free_port_pair()
        assert port >= 20_000 and port + 10_000 < low
        for each in (port, port + 10_000):
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", each))


def test_a_taken_port_is_left_for_a_new_one(tmp_path: Path) -> None:
    ports: list[int] = []
    with socket.create_server(("127.0.0.1", 0)) as squatter:

        def make(port: int) -> ManagedProcess:  # the first start meets a port another process holds
            ports.append(port)
            return _http_server(squatter.getsockname()[1] if len(ports) == 1 else port, tmp_path / "web.log")

        server = start_on_free_port(make)
    try:
        assert len(ports) == 2 and server.port == ports[1]
        assert server.process is not None and listens_on(server.process.pid, server.port)
    finally:
        server.stop()


def test_a_server_that_fails_for_another_reason_is_not_started_again(tmp_path: Path) -> None:
    ports: list[int] = []

    def make(port: int) -> ManagedProcess:
        ports.append(port)
        return ManagedProcess(
            "bad", [sys.executable, "-c", "raise SystemExit(3)"], port, tmp_path / "bad.log"
        )

    with pytest.raises(RuntimeError, match="exited with 3") as failed:
        start_on_free_port(make)
    assert not isinstance(failed.value, PortTakenError) and len(ports) == 1


def test_storage_starts_again_on_new_ports_when_one_was_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`k2 up`'s SeaweedFS picks its master, volume, filer and admin ports free at start; another process
    can bind one first (test_durable_stack met a busy filer port). The start is tried again on new ports."""
    from k2.config import Settings
    from k2.ops import stack, storage

    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy = free_port_pair()
    taken.bind(("127.0.0.1", busy))
    taken.listen()
    picks = iter([busy])
    monkeypatch.setattr(storage, "free_port_pair", lambda: next(picks, None) or free_port_pair())
    settings = Settings(
        data_dir=tmp_path / "k2", storage_port=free_port_pair(), broker_storage="s3://k2-broker/"
    )
    try:
        assert stack.up(settings, ["storage"]) == [("storage", "started")]
        log = (stack.log_dir(settings) / "storage.log").read_text(errors="replace")
        assert f"port {busy} " in log, "expected the first attempt to meet the busy port"
    finally:
        stack.down(settings)
        taken.close()
