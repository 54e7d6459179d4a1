"""One error model for every 4xx/5xx response of the REST API.

Every error body is ``{"error": {"code", "message", "details", "request_id"}}``: ``code`` is a stable
machine-readable string (``unauthorized``, ``rate_limited``, ``invalid_parameter``...), ``message`` a
sentence for humans saying what was expected and what was found, ``details`` structured extras (the
failing parameters, ``retry_after_seconds``...), ``request_id`` the value of the ``X-Request-ID``
response header, to quote when reporting a problem.

Example:
    >>> APIError(404, "unknown_symbol", "no data for symbol 'XYZ'").body("r1")["error"]["code"]
    'unknown_symbol'
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """The inside of an error response."""

    code: str = Field(description="Stable machine-readable error code.", examples=["invalid_parameter"])
    message: str = Field(
        description="What was expected and what was found.",
        examples=["interval: expected a duration like 1s, 1m, 5m, 1h, 1d, found '7x'"],
    )
    details: dict[str, Any] = Field(
        default_factory=dict, description="Structured extras (fields, limits, retry hints)."
    )
    request_id: str = Field(
        description="Same as the X-Request-ID response header.", examples=["5f0c2d7e9b1a4c3d"]
    )


class ErrorResponse(BaseModel):
    """Body of every 4xx/5xx response."""

    error: ErrorBody

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "error": {
                        "code": "unauthorized",
                        "message": "expected an API key in the X-API-Key header or Authorization: Bearer, found none",
                        "details": {},
                        "request_id": "5f0c2d7e9b1a4c3d",
                    }
                }
            ]
        }
    }


class APIError(Exception):
    """An error the API reports with the standard body; raise it from anywhere in a request."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})
        self.headers = dict(headers or {})

    def body(self, request_id: str) -> dict[str, Any]:
        """The JSON error body for this error."""
        return error_body(self.code, self.message, self.details, request_id)


def error_body(code: str, message: str, details: Mapping[str, Any] | None, request_id: str) -> dict[str, Any]:
    """Build the standard error body.

    Example:
        >>> error_body("not_found", "no route", None, "abc")["error"]["details"]
        {}
    """
    return {
        "error": {
            "code": code,
            "message": message,
            "details": _jsonable(dict(details or {})),
            "request_id": request_id,
        }
    }


def _jsonable(value: Any) -> Any:
    # Validation error contexts may hold exceptions or other objects json cannot encode.
    return json.loads(json.dumps(value, default=str))


# Status -> (code, description) of the errors every endpoint documents.
STANDARD_ERRORS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "Invalid parameter value (bad cursor, bad time range, range too long...)."),
    401: ("unauthorized", "No API key, or the key is unknown or revoked."),
    403: ("forbidden", "The key's scope does not allow this endpoint."),
    404: ("not_found", "Unknown route, symbol or snapshot."),
    405: ("method_not_allowed", "HTTP method not allowed on this route."),
    406: ("not_acceptable", "No supported format matches the Accept header or `format`."),
    413: ("payload_too_large", "Request body larger than `api_max_body_bytes`."),
    422: ("invalid_parameter", "A parameter failed validation, or the result exceeds `query_max_rows`."),
    429: ("rate_limited", "The key's token bucket is empty; retry after the `Retry-After` seconds."),
    500: ("internal_error", "Unexpected server error (quote the request id)."),
    503: (
        "unavailable",
        "A dependency is unavailable (/ready: catalog, engine or broker; include_recent=true: Kafka).",
    ),
    504: ("timeout", "The request took longer than `api_request_timeout_seconds`."),
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries (error model) for ``statuses``.

    Example:
        >>> sorted(error_responses(401, 429))
        [401, 429]
    """
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        code, description = STANDARD_ERRORS[status]
        entry: dict[str, Any] = {
            "model": ErrorResponse,
            "description": description,
            "content": {
                "application/json": {
                    "example": {
                        "error": {
                            "code": code,
                            "message": description,
                            "details": {},
                            "request_id": "5f0c2d7e9b1a4c3d",
                        }
                    }
                }
            },
        }
        if status == 429:
            entry["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer"},
                }
            }
        out[status] = entry
    return out
