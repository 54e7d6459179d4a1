"""Opaque, signed pagination cursors.

A cursor is ``base64url(json payload) + "." + base64url(HMAC-SHA256(secret, payload))``. The payload
holds the endpoint, a digest of the query parameters it belongs to, the snapshot the first page read
(so every later page reads the same snapshot, whatever lands meanwhile) and the position after the
last row returned. A cursor that was tampered with, belongs to another query, or is not a cursor at
all is refused with 400 ``invalid_cursor``.

Example:
    >>> codec = CursorCodec(b"s" * 32)
    >>> token = codec.encode({"ep": "trades", "pos": 3})
    >>> codec.decode(token)["pos"]
    3
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from k2.api.errors import APIError


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def params_digest(params: Mapping[str, Any]) -> str:
    """A short digest of the query parameters a cursor belongs to.

    Example:
        >>> params_digest({"a": 1}) == params_digest({"a": 1}) != params_digest({"a": 2})
        True
    """
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


class CursorCodec:
    """Signs and verifies cursors with a server secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def encode(self, payload: Mapping[str, Any]) -> str:
        """An opaque cursor for ``payload``."""
        raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        sig = hmac.new(self._secret, raw, hashlib.sha256).digest()
        return f"{_b64(raw)}.{_b64(sig)}"

    def decode(self, token: str) -> dict[str, Any]:
        """The payload of a cursor this server issued (APIError 400 ``invalid_cursor`` otherwise)."""
        bad = APIError(
            400,
            "invalid_cursor",
            "cursor: expected the opaque next_cursor value returned by a previous page, found a value that is not one",
            {"parameter": "cursor"},
        )
        if len(token) > 4096 or token.count(".") != 1:
            raise bad
        body, sig = token.split(".")
        try:
            raw, given = _unb64(body), _unb64(sig)
        except (ValueError, TypeError):
            raise bad from None
        if not hmac.compare_digest(hmac.new(self._secret, raw, hashlib.sha256).digest(), given):
            raise bad
        try:
            payload = json.loads(raw)
        except ValueError:
            raise bad from None
        if not isinstance(payload, dict):
            raise bad
        return payload
