"""K2's HTTP servers keep an idle connection open longer than httpx's pool keeps it (5 s), so a client
(``k2.connect``, the registry client) never reuses a connection the server is closing at that moment.

With uvicorn's default (5 s, equal to the client's), a request sent on a connection idle for 5 s could
meet the server's close and fail with "Server disconnected without sending a response". Each test
sends a request, waits past 5 s on the same idle connection, and sends another: before the fix the
server had closed it.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from k2.telemetry.procs import free_port
from tests.support.api_process import REPO, api_process

CLIENT_POOL_EXPIRY_SECONDS = 5.0  # httpx's default keepalive_expiry (the registry client's and k2.connect's)


def _two_requests_on_one_connection(url: str, path: str, idle_seconds: float) -> tuple[bytes, bytes]:
    """The status lines of two GETs of ``path`` on one TCP connection, ``idle_seconds`` apart."""
    host, port = url.removeprefix("http://").split(":")
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n".encode()
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        first = _exchange(conn, request)
        time.sleep(idle_seconds)
        second = _exchange(conn, request)
    return first, second


def _exchange(conn: socket.socket, request: bytes) -> bytes:
    """Send ``request``; return the response's status line (b"" when the server had closed the connection)."""
    try:
        conn.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(65536)
            if not chunk:
                return b""
            head += chunk
    except (BrokenPipeError, ConnectionResetError):
        return b""
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    body = head.split(b"\r\n\r\n", 1)[1]
    while len(body) < length:
        body += conn.recv(65536)
    return head.split(b"\r\n", 1)[0]


def test_the_schema_registry_keeps_an_idle_connection_past_the_client_pool_expiry(
    schema_registry: str,
) -> None:
    first, second = _two_requests_on_one_connection(
        schema_registry, "/subjects", CLIENT_POOL_EXPIRY_SECONDS + 1
    )
    assert first == b"HTTP/1.1 200 OK"
    assert second == b"HTTP/1.1 200 OK", (
        "expected the registry to answer on the idle connection, found it closed"
    )


def test_the_api_keeps_an_idle_connection_past_the_client_pool_expiry(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update({
        "K2_CONFIG_FILE": str(REPO / "tests" / "k2-test.toml"), "K2_DATA_DIR": str(tmp_path / "k2"),
        "K2_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
    })  # fmt: skip
    with api_process(env, tmp_path / "api.log") as url:
        first, second = _two_requests_on_one_connection(url, "/health", CLIENT_POOL_EXPIRY_SECONDS + 1)
    assert first == b"HTTP/1.1 200 OK"
    assert second == b"HTTP/1.1 200 OK", (
        "expected `k2 api serve` to answer on the idle connection, found it closed"
    )
