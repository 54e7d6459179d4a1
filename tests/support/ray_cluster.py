"""A real multi-node Ray cluster on one machine: a head node and N worker nodes, each its own ``ray start`` process.

Each node runs ``ray start --block`` in its own process group with its own temp dir, 1 CPU, no
dashboard, usage stats off, and is stopped by its process group id (never ``ray stop``, which would
stop every Ray process on the machine, other users' included). Workers are stopped before the head.

Hazards, found on Ray 2.60:

* ``--node-ip-address 127.0.0.1`` is rewritten by Ray to the machine's outward address (it assumes a
  loopback address cannot be a cluster address). ``127.0.0.2`` (also loopback on Linux) is kept as
  given, so every node advertises and is reached on 127.0.0.2: nothing leaves the machine.
* Some of Ray's gRPC servers still *listen* on all interfaces (Ray has no bind-address option) and the
  cluster has no token authentication: fine on a test box, not on a shared network.
* ``ray start --block`` on SIGTERM drains the node through the head for up to 30 s;
  ``RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0`` makes it stop at once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from k2.telemetry.procs import free_port, port_open

NODE_IP = "127.0.0.2"


def ray_binary() -> str:
    candidate = Path(sys.executable).parent / "ray"
    found = str(candidate) if candidate.exists() else shutil.which("ray")
    if found is None:
        raise RuntimeError("expected the `ray` command (pip install 'k2-lakehouse[distributed]'), found none")
    return found


class RayCluster:
    """``with RayCluster(workers=2) as cluster: cluster.connect(); cluster.wait_for_nodes(3); ...; ray.shutdown()``."""

    def __init__(self, workers: int = 2, cpus_per_node: int = 1) -> None:
        self.worker_count = workers
        self.cpus = cpus_per_node
        self.root = Path(tempfile.mkdtemp(prefix="k2-ray-"))
        self.port = free_port()
        self.head: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    @property
    def address(self) -> str:
        return f"{NODE_IP}:{self.port}"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update({"RAY_USAGE_STATS_ENABLED": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"})
        return env

    def _node(self, name: str, extra: list[str]) -> subprocess.Popen[bytes]:
        ports = [f"--{flag}={free_port()}" for flag in (
            "metrics-export-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
        )]  # fmt: skip
        argv = [
            ray_binary(), "start", *extra, f"--num-cpus={self.cpus}", f"--node-ip-address={NODE_IP}", "--block",
            "--disable-usage-stats", f"--temp-dir={self.root / name}", *ports,
        ]  # fmt: skip
        log = (self.root / f"{name}.log").open("wb")
        return subprocess.Popen(
            argv, env=self._env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start(self, timeout: float = 120.0) -> RayCluster:
        head_flags = [
            "--head",
            f"--port={self.port}",
            "--include-dashboard=false",
            f"--ray-client-server-port={free_port()}",
        ]
        self.head = self._node("head", head_flags)
        deadline = time.monotonic() + timeout
        while not port_open(NODE_IP, self.port):
            if self.head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"expected Ray's head on {self.address}, found nothing; log:\n{self.log('head')}"
                )
            time.sleep(0.2)
        self.add_workers(self.worker_count, deadline)
        return self

    def add_workers(self, count: int, deadline: float | None = None) -> None:
        for _ in range(count):
            self.workers.append(self._node(f"worker{len(self.workers)}", [f"--address={self.address}"]))

    def connect(self, timeout: float = 240.0) -> None:
        """``ray.init`` this process as a driver of the cluster, retrying while the head's GCS is still starting.

        On a loaded machine the GCS port opens well before the GCS answers, and ``ray.init`` then fails with
        "Timed out while waiting for GCS to become available" (seen at load average 30 on 2 cores).
        """
        import ray

        deadline = time.monotonic() + timeout
        while True:
            try:
                ray.init(address=self.address, _node_ip_address=NODE_IP, log_to_driver=False)
                return
            except Exception as exc:  # RpcError / RuntimeError / ConnectionError, depending on the stage
                ray.shutdown()
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"expected to connect to Ray at {self.address}, found {exc!r}; head log:\n{self.log('head')}"
                    ) from exc
                time.sleep(1.0)

    def wait_for_nodes(self, expected: int, timeout: float = 120.0) -> None:
        """Wait (in a connected driver) until ``expected`` nodes are alive."""
        import ray

        deadline = time.monotonic() + timeout
        while (alive := sum(1 for node in ray.nodes() if node["Alive"])) < expected:
            if time.monotonic() > deadline:
                logs = "\n".join(self.log(f"worker{i}") for i in range(len(self.workers)))
                raise TimeoutError(
                    f"expected {expected} Ray nodes alive, found {alive}; worker logs:\n{logs}"
                )
            time.sleep(0.2)

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else f"(no {name} log)"

    def stop_workers(self) -> None:
        _stop(self.workers)
        self.workers = []

    def stop(self) -> None:
        self.stop_workers()
        _stop([self.head] if self.head is not None else [])
        self.head = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop(processes: list[subprocess.Popen[bytes]], timeout: float = 60.0) -> None:
    """SIGTERM each node's own process group (raylet, GCS, workers), then SIGKILL what is left."""
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        with contextlib.suppress(
            ProcessLookupError
        ):  # the node's children share its group: none may outlive it
            os.killpg(process.pid, signal.SIGKILL)
