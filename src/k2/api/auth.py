"""Authentication: ``X-API-Key`` or ``Authorization: Bearer`` (401 without a valid key, 403 without the scope),
then the key's token bucket (429). Requests without a valid key are limited per client address.
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated aliases at definition time.

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from k2.api.errors import APIError
from k2.api.keys import KeyInfo
from k2.api.state import ApiState, limit_anonymous, refuse_when_empty

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, scheme_name="ApiKeyAuth", description="API key from `k2 keys create`."
)
bearer = HTTPBearer(
    auto_error=False, scheme_name="BearerAuth", description="The same API key as a bearer token."
)


def authenticate(state: ApiState, scope: str) -> Callable[..., Any]:
    """A FastAPI dependency: a valid key of ``scope`` (401/403), within its rate limit (429)."""
    settings = state.settings

    async def dependency(
        request: Request,
        api_key: Annotated[str | None, Security(api_key_header)] = None,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
    ) -> KeyInfo:
        given = api_key or (credentials.credentials if credentials is not None else None)
        info = state.keys.verify(given.strip()) if given else None
        if info is None:
            # Requests without a valid key are limited per client address, like /ready.
            limit_anonymous(state, request)
        if not given:
            raise APIError(
                401,
                "unauthorized",
                "expected an API key in the X-API-Key header or as Authorization: Bearer <key>, found none",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if info is None:
            raise APIError(
                401,
                "unauthorized",
                "expected a valid, unrevoked API key, found a key that is unknown, malformed or revoked",
                headers={"WWW-Authenticate": "Bearer"},
            )
        refuse_when_empty(settings, state.buckets.take(info.key_id), "per key")
        request.state.key_id = info.key_id
        if scope == "admin" and info.scope != "admin":
            raise APIError(
                403,
                "forbidden",
                f"expected a key with the admin scope for this endpoint, found scope {info.scope!r}",
                {"required_scope": "admin", "key_scope": info.scope},
            )
        return info

    return dependency


def refusal_before_body(state: ApiState, request: Request) -> APIError | None:
    """The 401 a ``/v1`` request without a valid key gets, for errors FastAPI raises before dependencies run.

    FastAPI parses a request body before it solves the route's dependencies, so an unparseable body
    would otherwise answer 400 to a caller who sent no key; the key is checked first, as for every request.
    """
    if not request.url.path.startswith("/v1/"):
        return None
    given = (
        request.headers.get("x-api-key")
        or request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    )
    if given and state.keys.verify(given.strip()) is not None:
        return None
    return APIError(
        401,
        "unauthorized",
        "expected a valid, unrevoked API key in the X-API-Key header or as Authorization: Bearer <key>, found "
        + ("an unknown, malformed or revoked key" if given else "none"),
        headers={"WWW-Authenticate": "Bearer"},
    )


def read_auth(state: ApiState) -> list[Any]:
    return [Depends(authenticate(state, "read"))]


def admin_auth(state: ApiState) -> list[Any]:
    return [Depends(authenticate(state, "admin"))]
