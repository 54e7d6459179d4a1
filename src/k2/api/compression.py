"""Response compression negotiated from ``Accept-Encoding``: zstd (preferred) or gzip, streamed.

Pure ASGI, so streamed bodies stay streamed: every body chunk is compressed and flushed as it passes,
so a client gets bytes as soon as the server has them and backpressure still reaches the producer.
Skipped for small bodies whose size is known up front (``min_bytes``), for Parquet (already zstd inside),
for responses that already carry a ``Content-Encoding``, and when the client accepts neither coding
(``q=0`` refuses one). Compressed responses drop ``Content-Length`` and add ``Vary: Accept-Encoding``.

Example (what a client sends)::

    Accept-Encoding: zstd, gzip;q=0.8
"""

from __future__ import annotations

import zlib
from typing import Any

import zstandard

Scope = dict[str, Any]
Message = dict[str, Any]
_SKIP_TYPES = (b"application/vnd.apache.parquet",)


def choose_encoding(accept_encoding: str) -> str | None:
    """``"zstd"``, ``"gzip"`` or None for an ``Accept-Encoding`` value (zstd wins a tie).

    >>> choose_encoding("gzip, deflate, br, zstd"), choose_encoding("gzip;q=0.5"), choose_encoding("zstd;q=0, identity")
    ('zstd', 'gzip', None)
    """
    weights: dict[str, float] = {}
    for part in accept_encoding.lower().split(","):
        pieces = [p.strip() for p in part.split(";")]
        q = 1.0
        for param in pieces[1:]:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if pieces[0]:
            weights[pieces[0]] = q
    star = weights.get("*", 0.0)
    best = max(("zstd", "gzip"), key=lambda e: (weights.get(e, star), e == "zstd"))
    return best if weights.get(best, star) > 0 else None


class _Compressor:
    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        if encoding == "zstd":
            self._zstd = zstandard.ZstdCompressor(level=1).compressobj()
        else:
            self._gzip = zlib.compressobj(1, zlib.DEFLATED, 31)

    def chunk(self, data: bytes, final: bool) -> bytes:
        if self.encoding == "zstd":
            out = self._zstd.compress(data)
            return out + self._zstd.flush(
                zstandard.COMPRESSOBJ_FLUSH_FINISH if final else zstandard.COMPRESSOBJ_FLUSH_BLOCK
            )
        return self._gzip.compress(data) + self._gzip.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)


class CompressionMiddleware:
    """Compress responses with zstd or gzip when the client asks for it (see the module docstring)."""

    def __init__(self, app: Any, min_bytes: int = 1024) -> None:
        self.app = app
        self.min_bytes = min_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        accept = next(
            (v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == b"accept-encoding"), ""
        )
        encoding = choose_encoding(accept) if accept else None
        if encoding is None:
            await self.app(scope, receive, send)
            return
        compressor: _Compressor | None = None

        async def send_compressed(message: Message) -> None:
            nonlocal compressor
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])]
                names = {k.lower(): v for k, v in headers}
                length = names.get(b"content-length")
                small = length is not None and int(length) < self.min_bytes
                skip = (
                    b"content-encoding" in names
                    or small
                    or names.get(b"content-type", b"").startswith(_SKIP_TYPES)
                )
                if not skip:
                    compressor = _Compressor(encoding)
                    headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
                    headers += [(b"content-encoding", encoding.encode()), (b"vary", b"Accept-Encoding")]
                    message = {**message, "headers": headers}
                await send(message)
                return
            if message["type"] == "http.response.body" and compressor is not None:
                more = bool(message.get("more_body", False))
                message = {
                    **message,
                    "body": compressor.chunk(bytes(message.get("body", b"")), final=not more),
                }
            await send(message)

        await self.app(scope, receive, send_compressed)
