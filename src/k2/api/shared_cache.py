"""The result cache shared by the API worker processes of one server: Arrow IPC files in one directory.

With ``K2_API_WORKERS`` > 1 each worker kept its own cache, so a query was computed once per worker that
was asked it and its rows were held once per worker (benchmarks/api_cache.py ``--workers``: 16 distinct
bars queries asked 6 times each over new connections were computed 45 times by two workers against 25 by
one). Here every worker reads and writes the same directory: an answer computed by one is a hit for all.
A hit maps the file (``pa.memory_map``: the pages come from the OS page cache, shared by the processes,
not copied into each); about 0.1 ms against the tens to hundreds of ms of computing it.

Keys are those of :mod:`k2.api.cache` (snapshot ids included), so an entry can never be stale; the
directory is made per server run by ``k2 api serve`` and removed at its exit, so a K2 upgrade cannot serve
an older release's rows. Bounded by the files' total bytes: after each write the least recently used files
(by modification time, which a hit refreshes) are removed until the total fits.

Hazards: two workers missing the same key at once both compute it and both write it (``os.replace`` makes
the last one win whole; single flight is per process). A file removed by another worker's eviction while
mapped stays readable until unmapped (POSIX). The bound is checked after each write, so the directory may
briefly exceed it by the files written at the same moment.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> directory = Path(tempfile.mkdtemp())
    >>> one, other = SharedResultCache(1 << 20, directory), SharedResultCache(1 << 20, directory)
    >>> key = ("bars", '{"symbol":"BTCUSDT"}', (("trades", 42),))
    >>> one.put(key, pa.table({"x": [1, 2]}), ("NOPEUSDT",))
    >>> rows, unknown = other.lookup(key)  # another process's instance sees it
    >>> rows.num_rows, unknown
    (2, ('NOPEUSDT',))
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import pyarrow as pa

from k2.api.cache import CacheKey, ResultCache
from k2.telemetry.metrics import metric

_KEY = b"k2.cache.key"
_UNKNOWN = b"k2.cache.unknown_symbols"
_SUFFIX = ".arrow"


class SharedResultCache(ResultCache):
    """:class:`k2.api.cache.ResultCache` kept in ``directory`` (shared by processes), bounded by ``max_bytes``."""

    def __init__(self, max_bytes: int, directory: Path) -> None:
        super().__init__(max_bytes)
        self.directory = directory
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe = directory / f".{uuid.uuid4().hex}.probe"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ValueError(
                f"api_cache_dir (K2_API_CACHE_DIR): expected a writable directory, found {str(directory)!r}: {exc}"
            ) from exc

    @property
    def bytes(self) -> int:
        return sum(size for _, _, size in self._files())

    def _path(self, key: CacheKey) -> Path:
        return self.directory / (hashlib.sha256(_text(key)).hexdigest() + _SUFFIX)

    def _find(self, key: CacheKey) -> tuple[pa.Table, tuple[str, ...]] | None:
        path = self._path(key)
        try:
            table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
            os.utime(path)  # recency for the eviction order
        except (OSError, pa.ArrowInvalid):  # absent, evicted meanwhile, or cut short: a miss
            return None
        meta = dict(table.schema.metadata or {})
        if meta.pop(_KEY, None) != _text(key):  # a hash collision: not this key's rows
            return None
        unknown = tuple(json.loads(meta.pop(_UNKNOWN, b"[]")))
        return table.replace_schema_metadata(meta or None), unknown

    def put(self, key: CacheKey, table: pa.Table, unknown_symbols: tuple[str, ...] = ()) -> None:
        if int(table.nbytes) > self.max_bytes:
            return
        meta = {
            **(table.schema.metadata or {}),
            _KEY: _text(key),
            _UNKNOWN: json.dumps(unknown_symbols).encode(),
        }
        tagged = table.replace_schema_metadata(meta)
        staging = self.directory / f".{uuid.uuid4().hex}.tmp"
        try:
            with pa.OSFile(str(staging), "wb") as sink, pa.ipc.new_file(sink, tagged.schema) as writer:
                writer.write_table(tagged)
            os.replace(staging, self._path(key))  # readers see the whole file or none
        finally:
            staging.unlink(missing_ok=True)
        metric("k2_api_cache_bytes").unlabelled().set(self._evict())

    def _evict(self) -> int:
        """Remove the least recently used files until the total fits; returns the total kept."""
        files = sorted(self._files())
        total = sum(size for _, _, size in files)
        for _, path, size in files:
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
        return total

    def _files(self) -> list[tuple[float, Path, int]]:
        found = []
        for path in self.directory.glob(f"*{_SUFFIX}"):
            try:
                stat = path.stat()
            except FileNotFoundError:  # evicted by another process meanwhile
                continue
            found.append((stat.st_mtime, path, stat.st_size))
        return found


def _text(key: CacheKey) -> bytes:
    return json.dumps(key, separators=(",", ":")).encode()
