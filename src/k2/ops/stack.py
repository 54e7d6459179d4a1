"""The local stack: ``k2 up`` / ``k2 down`` / ``k2 status``.

Parts (each a managed subprocess with a pid file under ``<data_dir>/run`` and a log under
``<data_dir>/logs``): the local SeaweedFS holding the broker's log (``storage``, see
:mod:`k2.ops.storage`; not with ``memory://`` storage), the Tansu broker, K2's schema registry, the landing service, the REST API and,
when installed (``K2_PROMETHEUS_ENABLED``), Prometheus scraping them (:mod:`k2.ops.prometheus`).
A part whose settings point at an external service (``K2_KAFKA_BOOTSTRAP_SERVERS``,
``K2_SCHEMA_REGISTRY_URL``) is not started; ``k2 status`` checks it over the network instead.

``k2 up`` is idempotent: a part whose pid is alive and whose port answers is left alone.

A pid file records the process's start time and command line; ``k2 down`` signals a pid only when both
still match (a recycled pid belongs to someone else) and otherwise refuses and says so.

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
from k2.ops.storage import filer_port, s3_env, storage_wanted, wait_for_bucket, weed_argv
from k2.telemetry.procs import ManagedProcess, pid_alive, port_open, stop_pid, verify_pid


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
    if storage_wanted(settings):
        parts.append(
            Part(
                "storage",
                settings.storage_port,
                weed_argv(settings, log_dir(settings)),
                tuple(s3_env(settings).items()),
            )
        )
    if settings.embedded_broker:
        from k2.bus.broker import tansu_binary

        url = f"tcp://127.0.0.1:{settings.broker_port}"
        env = tuple(s3_env(settings).items()) if settings.broker_storage.startswith("s3://") else ()
        argv = (
            str(tansu_binary()),
            "broker",
            "--storage-engine",
            settings.broker_storage,
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
        )
        parts.append(Part("broker", settings.broker_port, argv, env))
    if settings.schema_registry_url is None:
        parts.append(
            Part(
                "registry",
                settings.registry_port,
                (
                    sys.executable,
                    "-m",
                    "k2.bus.registry",
                    "--port",
                    str(settings.registry_port),
                    "--database-url",
                    settings.registry_db_url,
                    "--default-compatibility",
                    settings.registry_default_compatibility,
                ),
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
    found = read_pid_identity(settings, name)
    return None if found is None else (found[0], found[1])


def read_pid_identity(
    settings: Settings, name: str
) -> tuple[int, int, float | None, list[str] | None] | None:
    """(pid, port, start time, command line) from a part's pid file (the last two None in an old file)."""
    import json

    path = _pid_file(settings, name)
    try:
        lines = path.read_text().splitlines()
        pid, port = int(lines[0]), int(lines[1])
    except (OSError, ValueError, IndexError):
        return None
    try:
        return pid, port, float(lines[2]), [str(a) for a in json.loads(lines[3])]
    except (ValueError, IndexError, TypeError):
        return pid, port, None, None


def is_ours(settings: Settings, name: str) -> bool:
    """True when the part's pid file names a live process that is still the one K2 started."""
    found = read_pid_identity(settings, name)
    return found is not None and pid_alive(found[0]) and verify_pid(found[0], found[2], found[3]) is None


def part_running(settings: Settings, part: Part) -> bool:
    return is_ours(settings, part.name) and port_open("127.0.0.1", part.port)


# Parts started one after the other (each needs the previous); the rest start together.
_SEQUENTIAL = ("storage", "broker")


def up(settings: Settings, parts: list[str] | None = None, timeout: float = 60.0) -> list[tuple[str, str]]:
    """Start the parts that are not running; returns (name, 'started'|'running') for each, in start order.

    Storage then the broker start first, one after the other; the registry, landing, API and Prometheus
    then start concurrently (each is a Python process whose start-up is mostly imports).
    """
    from concurrent.futures import ThreadPoolExecutor

    states: dict[str, str] = {}
    wanted = [p for p in planned_parts(settings) if not parts or p.name in parts]
    for part in wanted:
        if part_running(settings, part):
            states[part.name] = "running"
        elif port_open("127.0.0.1", part.port):
            raise RuntimeError(
                f"{part.name}: expected port {part.port} to be free, found another process listening "
                f"(set K2_{'BROKER' if part.name == 'broker' else part.name.upper()}_PORT or stop it)"
            )
    to_start = [p for p in wanted if p.name not in states]
    for part in [p for p in to_start if p.name in _SEQUENTIAL]:
        _start_part(settings, part, timeout)
        states[part.name] = "started"
    rest = [p for p in to_start if p.name not in _SEQUENTIAL]
    if rest:
        with ThreadPoolExecutor(max_workers=len(rest)) as pool:
            for future in [pool.submit(_start_part, settings, p, timeout) for p in rest]:
                future.result()  # the first failure is raised (the others still finish starting)
        states.update({p.name: "started" for p in rest})
    return [(p.name, states[p.name]) for p in wanted]


_STORAGE_ATTEMPTS = 3
_PORT_BUSY = ("already in use", "is not available")  # the OS's and `weed mini`'s words for a busy port


def _start_part(settings: Settings, part: Part, timeout: float) -> None:
    """Start one part; storage is started again on new ports (all but its S3 port) when one of them was
    taken by another process between choosing and binding it (:func:`k2.ops.storage.weed_argv`)."""
    import os

    env_base = settings.environment()
    env_base["K2_DATA_DIR"] = str(settings.data_dir.resolve())
    env = {**os.environ, **env_base, **dict(part.env)}
    attempts = _STORAGE_ATTEMPTS if part.name == "storage" else 1
    argv = part.argv
    for attempt in range(1, attempts + 1):
        try:
            ManagedProcess(
                part.name,
                argv,
                part.port,
                log_dir(settings) / f"{part.name}.log",
                pid_path=_pid_file(settings, part.name),
                env=env,
            ).start(timeout=timeout, detach=True)
            break
        except RuntimeError as exc:
            if attempt == attempts or not any(sign in str(exc).lower() for sign in _PORT_BUSY):
                raise
            argv = weed_argv(settings, log_dir(settings))  # new ports for every listener but S3's
    if part.name == "storage":
        wait_for_bucket(settings, filer_port(argv), timeout)


def down(settings: Settings) -> list[tuple[str, str]]:
    """Stop every part with a pid file; a pid that is no longer K2's is left alone.

    The landing, API, registry and Prometheus stop together first, then the broker, then storage.
    Returns (name, 'stopped' | 'was not running' | 'refused: <why>') per part in stop order. Draining
    (waiting for the landing to catch up) is :func:`k2.ops.drain.drain`'s job, before this.
    """
    from concurrent.futures import ThreadPoolExecutor

    names = [p.name for p in planned_parts(settings)]
    extra = (
        sorted(p.stem for p in run_dir(settings).glob("*.pid") if p.stem not in names)
        if run_dir(settings).exists()
        else []
    )
    present = [n for n in reversed(names + extra) if read_pid_identity(settings, n) is not None]
    first = [n for n in present if n not in _SEQUENTIAL]
    report: list[tuple[str, str]] = []
    if first:
        with ThreadPoolExecutor(max_workers=len(first)) as pool:
            report += zip(first, pool.map(lambda n: _stop_part(settings, n), first), strict=True)
    report += [(n, _stop_part(settings, n)) for n in reversed(_SEQUENTIAL) if n in present]
    return report


def _stop_part(settings: Settings, name: str) -> str:
    found = read_pid_identity(settings, name)
    if found is None:
        return "was not running"
    pid = found[0]
    if not pid_alive(pid):
        state = "was not running"
    elif (why := verify_pid(pid, found[2], found[3])) is not None:
        return f"refused: {why}; pid file kept at {_pid_file(settings, name)}"
    else:
        state = "stopped" if stop_pid(pid) else "was not running"
    _pid_file(settings, name).unlink(missing_ok=True)
    return state
