"""Authentication: ``X-API-Key`` or ``Authorization: Bearer`` (401 without a valid key, 403 without the scope),
then the key's token bucket (429). Requests without a valid key are limited per client address.

Keys are checked through :class:`k2.api.keycache.VerifiedKeys`: a process remembers a valid key for
``KEY_CACHE_SECONDS`` (2 s), so a revocation takes effect within that bound; tokens come from the shared
bucket in leases (:mod:`k2.api.ratelimit`), so neither costs a database round trip per request.

The check is a route dependency; :class:`KeyBeforeBody` runs the same check earlier for the ``/v1`` routes
that take a body, because FastAPI reads a body before it solves dependencies.
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated aliases at definition time.

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from k2.api.errors import APIError
from k2.api.keys import KeyInfo
from k2.api.state import ApiState, limit_anonymous, refuse_when_empty, request_id

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, scheme_name="ApiKeyAuth", description="API key from `k2 keys create`."
)
bearer = HTTPBearer(
    auto_error=False, scheme_name="BearerAuth", description="The same API key as a bearer token."
)


def _refusal(state: ApiState, request: Request, given: str | None) -> tuple[APIError | None, KeyInfo | None]:
    """(the 429/401 for a request presenting ``given``, or None; the key's info when it is valid)."""
    info = state.verified_keys.verify(given.strip()) if given else None
    if info is None:
        # Requests without a valid key are limited per client address, like /ready.
        try:
            limit_anonymous(state, request)
        except APIError as refused:
            return refused, None
    if not given:
        return APIError(
            401,
            "unauthorized",
            "expected an API key in the X-API-Key header or as Authorization: Bearer <key>, found none",
            headers={"WWW-Authenticate": "Bearer"},
        ), None
    if info is None:
        return APIError(
            401,
            "unauthorized",
            "expected a valid, unrevoked API key, found a key that is unknown, malformed or revoked",
            headers={"WWW-Authenticate": "Bearer"},
        ), None
    return None, info


def authenticate(state: ApiState, scope: str) -> Callable[..., Any]:
    """A FastAPI dependency: a valid key of ``scope`` (401/403), within its rate limit (429)."""
    settings = state.settings

    async def dependency(
        request: Request,
        api_key: Annotated[str | None, Security(api_key_header)] = None,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
    ) -> KeyInfo:
        given = api_key or (credentials.credentials if credentials is not None else None)
        refused, info = _refusal(state, request, given)
        if refused is not None:
            raise refused
        assert info is not None
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


def _given(request: Request) -> str | None:
    """The key a request presents, read as the dependency's ``X-API-Key`` / ``Authorization: Bearer`` do."""
    api_key = request.headers.get("x-api-key")
    if api_key:
        return api_key
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return credentials if scheme.lower() == "bearer" and credentials else None


class KeyBeforeBody:
    """ASGI middleware: the key of a ``/v1`` request that carries a body is checked before the body is read.

    FastAPI parses a request body before it solves the route's dependencies, so an unparseable body would
    otherwise answer 400 (or 422) to a caller who sent no key. For the ``/v1`` routes that take a body
    (``POST /v1/sql``, ``POST /v1/dlq/replay``), a request without a valid key gets the same 429/401 as the
    auth dependency gives, before the body is touched; requests with a valid key go on to the route,
    whose dependency checks the scope and the per-key rate limit as for every request. Other requests
    (GETs, unknown routes, wrong methods) pass untouched: their answers are unchanged.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._body_routes: set[tuple[str, str]] | None = None

    def _routes(self, app: Any) -> set[tuple[str, str]]:
        if self._body_routes is None:
            self._body_routes = {
                (str(route.path), method)
                for route in getattr(app, "routes", [])
                if str(getattr(route, "path", "")).startswith("/v1/")
                for method in (getattr(route, "methods", None) or ())
                if method not in ("GET", "HEAD", "OPTIONS")
            }
        return self._body_routes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        app = scope.get("app")
        if (scope.get("path"), scope.get("method")) not in self._routes(app):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refused, _ = _refusal(app.state.k2, request, _given(request))  # type: ignore[union-attr]
        if refused is None:
            await self.app(scope, receive, send)
            return
        answer = JSONResponse(
            refused.body(request_id(request)), status_code=refused.status, headers=refused.headers
        )
        await answer(scope, receive, send)


def read_auth(state: ApiState) -> list[Any]:
    return [Depends(authenticate(state, "read"))]


def admin_auth(state: ApiState) -> list[Any]:
    return [Depends(authenticate(state, "admin"))]
