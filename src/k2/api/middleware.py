"""The outermost ASGI layer: request ids, body size limit, metrics and the last-resort 500.

Pure ASGI (not ``BaseHTTPMiddleware``) so streamed responses pass through untouched. Every response
gets an ``X-Request-ID`` header (the client's own, when it is a short token, else a new one), and every
unexpected exception becomes the standard 500 error body, logged with the request id.

Example (what a client sees)::

    X-Request-ID: 5f0c2d7e9b1a4c3d
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from k2.api.errors import error_body
from k2.telemetry.metrics import metric

log = logging.getLogger("k2.api")
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

Scope = dict[str, Any]
Message = dict[str, Any]


class _BodyTooLarge(Exception):
    pass


class RequestContextMiddleware:
    """Request id, body-size limit (413), per-route metrics, and 500s in the standard error model."""

    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID_RE.match(given) else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status_holder = {"status": 500, "started": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                raw = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                raw.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": raw}
            await send(message)

        received = 0

        async def receive_wrapper() -> Message:
            nonlocal received
            message: Message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge
            return message

        try:
            length = headers.get("content-length")
            too_large = False
            if length is not None:
                try:
                    too_large = int(length) > self.max_body_bytes
                except ValueError:
                    too_large = False
            if too_large:
                await self._error(
                    send_wrapper,
                    413,
                    "payload_too_large",
                    f"request body: expected at most {self.max_body_bytes} bytes, found Content-Length {length}",
                    {"max_body_bytes": self.max_body_bytes},
                    request_id,
                )
            else:
                await self.app(scope, receive_wrapper, send_wrapper)
        except _BodyTooLarge:
            if not status_holder["started"]:
                await self._error(
                    send_wrapper,
                    413,
                    "payload_too_large",
                    f"request body: expected at most {self.max_body_bytes} bytes, found more",
                    {"max_body_bytes": self.max_body_bytes},
                    request_id,
                )
        except Exception:
            log.exception(
                "unhandled error in request %s %s (request id %s)",
                scope.get("method"),
                scope.get("path"),
                request_id,
            )
            if not status_holder["started"]:
                await self._error(
                    send_wrapper,
                    500,
                    "internal_error",
                    "unexpected server error; quote the request id when reporting it",
                    {},
                    request_id,
                )
            else:
                raise
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            method = str(scope.get("method", ""))
            metric("k2_api_requests_total").labels(
                route=label, method=method, status=status_holder["status"]
            ).inc()
            metric("k2_api_request_seconds").labels(route=label, method=method).observe(
                time.perf_counter() - started
            )

    @staticmethod
    async def _error(
        send: Any, status: int, code: str, message: str, details: dict[str, Any], request_id: str
    ) -> None:
        body = json.dumps(error_body(code, message, details, request_id)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
