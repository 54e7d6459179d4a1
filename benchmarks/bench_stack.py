"""A private broker and schema registry for one benchmark run (random ports, a temporary directory).

with bench_stack() as (root, settings):
    ...   # settings point at the running broker and registry; data_dir is root / "k2"
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from k2.bus.broker import tansu_process  # noqa: E402
from k2.bus.registry.server import registry_process  # noqa: E402
from k2.config import Settings  # noqa: E402
from k2.telemetry.procs import free_port  # noqa: E402


@contextmanager
def bench_stack(**overrides: Any) -> Iterator[tuple[Path, Settings]]:
    """Start Tansu (memory storage) and K2's registry; yield (temporary root, settings); stop both.

    ``overrides`` are further settings (nothing else differs from K2's defaults).
    """
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        broker = tansu_process(free_port(), root / "tansu.log").start()
        registry = registry_process(
            free_port(), f"sqlite:///{root / 'registry.db'}", root / "registry.log"
        ).start()
        try:
            yield (
                root,
                Settings(
                    **{
                        "data_dir": root / "k2",
                        "kafka_bootstrap_servers": f"127.0.0.1:{broker.port}",
                        "schema_registry_url": f"http://127.0.0.1:{registry.port}",
                        "consumer_session_timeout_ms": 1000,
                        "landing_metrics_port": 0,
                        **overrides,
                    }
                ),
            )
        finally:
            registry.stop()
            broker.stop()


def git_commit() -> str:
    """The short commit id of the checkout being measured."""
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip()
