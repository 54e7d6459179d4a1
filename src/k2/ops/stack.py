"""The local stack: ``k2 up`` / ``k2 down`` / ``k2 status``.

Parts (each a managed subprocess with a pid file under ``<data_dir>/run`` and a log under
``<data_dir>/logs``): the Tansu broker, K2's schema registry, the landing service, the REST API and,
when installed (``K2_PROMETHEUS_ENABLED``), Prometheus scraping them (:mod:`k2.ops.prometheus`).
A part whose settings point at an external service (``K2_KAFKA_BOOTSTRAP_SERVERS``,
``K2_SCHEMA_REGISTRY_URL``) is not started; ``k2 status`` checks it over the network instead.

``k2 up`` is idempotent: a part whose pid is alive and whose port answers is left alone.

Example:
    >>> from k2.config import Settings
    >>> [p.name for p in planned_parts(Settings(kafka_bootstrap_servers="kafka:9092"))][:1]
    ['registry']
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from k2.config import Settings
from k2.telemetry.procs import ManagedProcess, pid_alive, port_open, stop_pid


@dataclass(frozen=True)
class Part:
    """One local-stack part: how to start it and where it listens."""

    name: str
    port: int
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


def run_dir(settings: Settings) -> Path:
    return settings.data_dir.resolve() / "run"


def log_dir(settings: Settings) -> Path:
    return settings.data_dir.resolve() / "logs"


def _k2(*args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "k2.cli", *args)


def planned_parts(settings: Settings) -> list[Part]:
    """The parts ``k2 up`` starts for these settings, in start order."""
    parts: list[Part] = []
    if settings.kafka_bootstrap_servers is None:
        from k2.bus.broker import tansu_binary

        url = f"tcp://127.0.0.1:{settings.broker_port}"
        env: tuple[tuple[str, str], ...] = ()
        if settings.broker_storage.startswith("s3://"):
            env = tuple(
                (k, v)
                for k, v in (
                    ("AWS_ACCESS_KEY_ID", settings.s3_access_key_id or ""),
                    ("AWS_SECRET_ACCESS_KEY", settings.s3_secret_access_key or ""),
                    ("AWS_DEFAULT_REGION", settings.s3_region),
                    ("AWS_ENDPOINT", settings.s3_endpoint or ""),
                    ("AWS_ALLOW_HTTP", "true" if (settings.s3_endpoint or "").startswith("http://") else "false"),
                )
                if v
            )
        parts.append(
            Part(
                "broker",
                settings.broker_port,
                (str(tansu_binary()), "broker", "--storage-engine", settings.broker_storage, "--listener-url", url, "--advertised-listener-url", url),
                env,
            )
        )
    if settings.schema_registry_url is None:
        parts.append(
            Part(
                "registry",
                settings.registry_port,
                (sys.executable, "-m", "k2.bus.registry", "--port", str(settings.registry_port), "--database-url", settings.registry_db_url,
                 "--default-compatibility", settings.registry_default_compatibility),
            )
        )
    if settings.landing_metrics_port:
        parts.append(Part("landing", settings.landing_metrics_port, _k2("land")))
    parts.append(Part("api", settings.api_port, _k2("api", "serve")))
    from k2.ops.prometheus import prometheus_wanted  # ops: Prometheus scraping the parts above

    if prometheus_wanted(settings):
        parts.append(Part("prometheus", settings.prometheus_port, _k2("prometheus", "serve")))
    return parts


def _pid_file(settings: Settings, name: str) -> Path:
    return run_dir(settings) / f"{name}.pid"


def read_pid(settings: Settings, name: str) -> tuple[int, int] | None:
    """(pid, port) from a part's pid file, or None."""
    path = _pid_file(settings, name)
    try:
        pid, port = path.read_text().split()[:2]
        return int(pid), int(port)
    except (OSError, ValueError):
        return None


def part_running(settings: Settings, part: Part) -> bool:
    found = read_pid(settings, part.name)
    return found is not None and pid_alive(found[0]) and port_open("127.0.0.1", part.port)


def up(settings: Settings, parts: list[str] | None = None, timeout: float = 60.0) -> list[tuple[str, str]]:
    """Start the parts that are not running; returns (name, 'started'|'running') for each."""
    import os

    report = []
    env_base = {"K2_" + k.upper(): str(v) for k, v in settings.model_dump(exclude_none=True).items()}
    env_base["K2_DATA_DIR"] = str(settings.data_dir.resolve())
    for part in planned_parts(settings):
        if parts and part.name not in parts:
            continue
        if part_running(settings, part):
            report.append((part.name, "running"))
            continue
        if port_open("127.0.0.1", part.port):
            raise RuntimeError(
                f"{part.name}: expected port {part.port} to be free, found another process listening "
                f"(set K2_{'BROKER' if part.name == 'broker' else part.name.upper()}_PORT or stop it)"
            )
        env = {**os.environ, **env_base, **dict(part.env)}
        ManagedProcess(
            part.name,
            part.argv,
            part.port,
            log_dir(settings) / f"{part.name}.log",
            pid_path=_pid_file(settings, part.name),
            env=env,
        ).start(timeout=timeout, detach=True)
        report.append((part.name, "started"))
    return report


def down(settings: Settings) -> list[tuple[str, str]]:
    """Stop every part with a pid file (reverse start order)."""
    report = []
    names = [p.name for p in planned_parts(settings)]
    extra = sorted(p.stem for p in run_dir(settings).glob("*.pid") if p.stem not in names) if run_dir(settings).exists() else []
    for name in reversed(names + extra):
        found = read_pid(settings, name)
        if found is None:
            continue
        stopped = stop_pid(found[0])
        _pid_file(settings, name).unlink(missing_ok=True)
        report.append((name, "stopped" if stopped else "was not running"))
    return report
