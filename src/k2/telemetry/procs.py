"""Managed subprocesses for the local stack: start, wait until listening, pid files, logs, stop.

The same helpers start the broker, the registry and K2's services for ``k2 up`` and for the tests,
so that the tests exercise the exact command lines users run.

Example:
    >>> port = free_port()
    >>> 1024 < port < 65536
    True
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's range for ports it hands out (``bind(0)``, outgoing connections); Linux's default
    when it cannot be read."""
    with contextlib.suppress(OSError, ValueError):
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    return 32768, 60999


def free_port_pair(offset: int = 10_000) -> int:
    """A port ``p`` with ``p`` and ``p + offset`` both free now and both below the kernel's ephemeral range.

    SeaweedFS binds a gRPC port at ``p + 10000`` for each of its HTTP ports. Such a port is nobody's
    reservation: drawn from the ephemeral range, :func:`free_port` or an outgoing connection elsewhere
    can be handed it before SeaweedFS binds it, and a server started on it then fails to bind while its
    port answers (stop 14's CI: K2's registry "answered" with SeaweedFS's gRPC server). Below the range,
    only another caller of this function can collide (the caller's retry on new ports handles that); it starts
    at 20000, above the ports Ray's workers bind by default (10002-19999).

    Example:
        >>> p = free_port_pair()
        >>> p + 10_000 < ephemeral_port_range()[0]
        True
    """
    low, _ = ephemeral_port_range()
    first, last = 20_000, low - offset - 1  # from 20000: Ray's workers take 10002-19999 by default
    if last <= first:
        raise RuntimeError(
            f"expected room below the ephemeral range {low} for a port pair {offset} apart, found none"
        )
    for _ in range(200):
        port = random.randint(first, last)
        if port_bindable(port) and port_bindable(port + offset):
            return port
    raise RuntimeError(f"expected a free pair of ports (p, p+{offset}) below {low}, found none in 200 tries")


def port_bindable(port: int) -> bool:
    """True when a listener could bind 127.0.0.1:``port`` now (no SO_REUSEADDR: TIME_WAIT counts as busy)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


class PortTakenError(RuntimeError):
    """A server's port, free when chosen, was bound by another process first (the server could not bind it)."""


def wait_for_port(
    host: str, port: int, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until host:port accepts connections (from ``process`` or one of its children, when given);
    raise if the process dies or time runs out.

    A listener that is not ``process``'s does not count: a port chosen free a moment ago can be taken by
    another program before ``process`` binds it, and then ``process`` fails to bind while the port answers.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port) and (process is None or listens_on(process.pid, port)):
            return
        if process is not None and process.poll() is not None:
            found = f"found its process exited with {process.returncode}"
            if port_open(host, port):
                raise PortTakenError(
                    f"expected a server on {host}:{port}, {found}; the port is another process's"
                )
            raise RuntimeError(f"expected a server on {host}:{port}, {found}")
        time.sleep(0.05)
    raise TimeoutError(f"expected a server on {host}:{port} within {timeout}s, found none listening")


def listens_on(pid: int, port: int) -> bool:
    """True when process ``pid`` or one of its descendants has a TCP socket listening on ``port``."""
    import psutil

    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return False
    for proc in tree:
        with contextlib.suppress(psutil.Error):
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                    return True
    return False


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (and is not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


@dataclass
class ManagedProcess:
    """A server process with a log file and, optionally, a pid file under K2's data directory."""

    name: str
    argv: Sequence[str]
    port: int
    log_path: Path
    pid_path: Path | None = None
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self, timeout: float = 30.0, detach: bool = False) -> ManagedProcess:
        """Start the process and wait until its port accepts connections."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.cwd,
                start_new_session=detach,
            )
        if self.pid_path is not None:
            write_pid_file(self.pid_path, self.process.pid, self.port)
        try:
            wait_for_port("127.0.0.1", self.port, timeout=timeout, process=self.process)
        except Exception as exc:
            self.stop()
            tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            error = PortTakenError if isinstance(exc, PortTakenError) else RuntimeError
            raise error(f"{self.name} failed to start ({exc}); log tail:\n{tail}") from None
        if (
            self.pid_path is not None
        ):  # again once listening: a part that exec()s (prometheus) has its final command line now
            write_pid_file(self.pid_path, self.process.pid, self.port)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process (SIGTERM, then SIGKILL after ``timeout``) and remove its pid file."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        if self.pid_path is not None:
            self.pid_path.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the process (crash tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> ManagedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def process_identity(pid: int) -> tuple[float, list[str]] | None:
    """(start time, command line) of a live process, or None when it is gone or unreadable."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.create_time(), proc.cmdline()
    except (psutil.Error, OSError):
        return None


def write_pid_file(path: Path, pid: int, port: int) -> None:
    """Write ``pid``, ``port``, the start time and the JSON command line (identity checked by :func:`verify_pid`)."""
    import json

    identity = process_identity(pid)
    started, cmdline = identity if identity is not None else (0.0, [])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid}\n{port}\n{started!r}\n{json.dumps(cmdline)}\n")


def verify_pid(pid: int, started: float | None, cmdline: list[str] | None) -> str | None:
    """None when ``pid`` is still the process a pid file recorded; otherwise why it is not.

    Hazard: a pid is recycled by the kernel once its process exits; signalling a pid read from a
    file without this check can kill an unrelated process. Start time (to the kernel clock tick) *and* command line
    must both match; a pid file without them (written before this check existed) is refused.
    """
    if started is None or not cmdline:
        return f"expected the pid file to record pid {pid}'s start time and command line, found none (old pid file)"
    identity = process_identity(pid)
    if identity is None:
        return (
            None
            if not pid_alive(pid)
            else f"expected to read pid {pid}'s start time and command line, found them unreadable"
        )
    found_started, found_cmdline = identity
    if abs(found_started - started) > 0.02 or found_cmdline != cmdline:
        shown = " ".join(found_cmdline)[:120]
        return (
            f"expected pid {pid} to be {' '.join(cmdline)[:120]!r} started at {started:.3f}, "
            f"found {shown!r} started at {found_started:.3f} (the pid was reused)"
        )
    return None


def stop_pid(pid: int, timeout: float = 10.0) -> bool:
    """Terminate a process by pid (used by ``k2 down``); True when it was running."""
    if not pid_alive(pid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True


def start_on_free_port(
    make: Callable[[int], ManagedProcess], attempts: int = 3, timeout: float = 30.0
) -> ManagedProcess:
    """Start ``make(port)`` on a free port; when another process takes the port before the server binds
    it (:class:`PortTakenError`), start it again on a new one, up to ``attempts`` times.

    Example::

        broker = start_on_free_port(lambda port: tansu_process(port, Path("/tmp/tansu.log")))
        address = f"127.0.0.1:{broker.port}"
    """
    for _ in range(attempts - 1):
        with contextlib.suppress(PortTakenError):
            return make(free_port()).start(timeout=timeout)
    return make(free_port()).start(timeout=timeout)
