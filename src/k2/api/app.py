"""The REST API: ``create_app(settings)`` builds the FastAPI application served by ``k2 api serve``.

Endpoints (all ``GET``): ``/v1/trades``, ``/v1/quotes`` (cursor-paged), ``/v1/bars``, ``/v1/vwap``,
``/v1/twap``, ``/v1/spread``, ``/v1/asof``, ``/v1/symbols``, ``/v1/snapshots``, ``/v1/gaps``, ``/v1/replay``
(cursor-paged export of a range of a table) with the ``read`` scope; ``/v1/dlq`` and ``/v1/keys``
with the ``admin`` scope; ``/health``, ``/ready`` and ``/metrics`` without a key (probes, Prometheus).

Conventions:

* **Auth**: ``X-API-Key: k2_...`` or ``Authorization: Bearer k2_...`` (keys from ``k2 keys create``);
  401 without a valid key, 403 when the scope is insufficient.
* **Limits**: per-key token bucket (429 + ``Retry-After``), ``limit`` at most ``query_max_rows``, time
  ranges at most ``query_max_range_days``, ``api_request_timeout_seconds`` (504), ``api_max_body_bytes``
  (413).
* **Formats**: ``format=json|csv|parquet|arrow`` or the ``Accept`` header; bodies are streamed per record
  batch (:mod:`k2.api.formats`).
* **Time travel**: every data endpoint takes ``as_of`` (a snapshot id, or an ISO-8601 time with offset).
* **Pagination**: ``next_cursor`` (JSON body and ``X-Next-Cursor`` header); pass it back as ``cursor``.
  Every page of one walk reads the Iceberg snapshot the first page read, whatever lands meanwhile. A
  walk that spans more than one page reads only the table (rows still in Kafka, ``include_recent``,
  are returned only when the whole result fits in the first page; ``recent_included`` says so).
* **Errors**: ``{"error": {"code", "message", "details", "request_id"}}`` for every 4xx/5xx.

Layout: this module builds the app (state, middleware, error handlers, OpenAPI); the endpoints are FastAPI
routers per resource in :mod:`k2.api.routes` (ops, rows, aggregates, reference, admin), included in one loop in
:func:`create_app` — the one place to include more routers.

Example::

    app = create_app(load_settings())
    uvicorn.run(app, host="127.0.0.1", port=8000)
"""

import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from k2 import __version__ as K2_VERSION
from k2.api.admission import Admission
from k2.api.auth import KeyBeforeBody, admin_auth, read_auth
from k2.api.book import book_router
from k2.api.cache import ResultCache
from k2.api.compression import CompressionMiddleware
from k2.api.console_routes import install_console
from k2.api.cursor import CursorCodec
from k2.api.errors import APIError, error_body, error_responses
from k2.api.keycache import VerifiedKeys
from k2.api.keys import KeyStore
from k2.api.middleware import RequestContextMiddleware
from k2.api.ratelimit import SharedTokenBuckets, TokenBuckets
from k2.api.routes import ROUTERS
from k2.api.shared_cache import SharedResultCache
from k2.api.state import ApiState, default_client_factory, request_id, run
from k2.config import Settings
from k2.query.errors import (
    InvalidRangeError,
    K2QueryError,
    LimitExceededError,
    QueryError,
    UnknownSymbolError,
)
from k2.query.recent import RecentUnavailableError
from k2.telemetry.metrics import declare_all

log = logging.getLogger("k2.api")


# -- the app ----------------------------------------------------------------------------------------

_QUERY_ERROR_STATUS: tuple[tuple[type[K2QueryError], int, str], ...] = (
    (UnknownSymbolError, 404, "unknown_symbol"),
    (InvalidRangeError, 400, "invalid_range"),
    (LimitExceededError, 422, "limit_exceeded"),
    (QueryError, 400, "invalid_query"),
    (K2QueryError, 400, "bad_request"),
)
_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
}


def create_app(settings: Settings, *, client_factory: Callable[[], Any] | None = None) -> FastAPI:
    """Build the REST API for ``settings`` (``client_factory`` builds the query client; default ``Client(settings)``).

    Example::

        from fastapi.testclient import TestClient
        app = create_app(Settings(data_dir="/tmp/k2"))
        TestClient(app).get("/health").json()   # {'status': 'ok'}
    """
    keys = KeyStore.from_settings(settings)
    state = ApiState(
        settings=settings,
        keys=keys,
        verified_keys=VerifiedKeys(keys),
        buckets=SharedTokenBuckets(
            keys.engine, settings.api_rate_limit_per_second, settings.api_rate_limit_burst
        ),
        anonymous=TokenBuckets(settings.api_rate_limit_per_second, settings.api_rate_limit_burst),
        admission=Admission(settings.api_max_concurrent_per_key, settings.api_max_concurrent_requests),
        cache=(
            SharedResultCache(settings.api_cache_max_bytes, Path(settings.api_cache_dir))
            if settings.api_cache_dir
            else ResultCache(settings.api_cache_max_bytes)
        ),
        cursors=CursorCodec(keys.secret("cursor")),
        executor=ThreadPoolExecutor(
            max_workers=max(4, settings.query_pool_size * 2), thread_name_prefix="k2-api"
        ),
        client_factory=client_factory or default_client_factory(settings),
    )
    declare_all()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if settings.api_warm_up:  # in the background: the server answers at once (see ApiState.warm_up)
            state.executor.submit(state.warm_up)
        yield
        state.close()

    app = FastAPI(
        title="K2 market data API",
        version=K2_VERSION,
        description=_API_DESCRIPTION,
        lifespan=lifespan,
        responses={500: error_responses(500)[500]},
    )
    app.state.k2 = state
    app.add_middleware(KeyBeforeBody)  # innermost: a body route's key is checked before its body is read
    app.add_middleware(CompressionMiddleware)  # inside the request-context layer: errors and ids unchanged
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.api_max_body_bytes)
    _install_error_handlers(app)

    for build in ROUTERS:  # one router per resource (k2.api.routes); add new ones there
        app.include_router(build(state))
    app.include_router(book_router(read_auth(state)))  # /v1/book (k2.api.book)

    # /console, offline /docs, POST /v1/sql, POST /v1/dlq/replay
    install_console(
        app,
        settings=settings,
        run=lambda fn: run(state, fn),
        read_auth=read_auth(state),
        admin_auth=admin_auth(state),
        client=state.client,
    )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def app_from_settings() -> FastAPI:
    """``create_app(load_settings())``: the factory each uvicorn worker process calls (``K2_API_WORKERS`` > 1)."""
    from k2.config import load_settings

    return create_app(load_settings())


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, APIError)
        return JSONResponse(exc.body(request_id(request)), status_code=exc.status, headers=exc.headers)

    async def query_error(request: Request, exc: Exception) -> JSONResponse:
        for cls, status, code in _QUERY_ERROR_STATUS:
            if isinstance(exc, cls):
                return JSONResponse(
                    error_body(code, str(exc), {"error_type": type(exc).__name__}, request_id(request)),
                    status_code=status,
                )
        raise exc  # pragma: no cover - the tuple ends with the base class

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        status = exc.status_code
        if status == 404:
            message = f"expected a known route (see /docs), found {request.method} {request.url.path}"
        elif status == 405:
            message = f"expected one of the allowed methods for {request.url.path}, found {request.method}"
        else:
            message = str(exc.detail)
        return JSONResponse(
            error_body(_HTTP_CODES.get(status, "http_error"), message, {}, request_id(request)),
            status_code=status,
            headers=exc.headers,
        )

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "header", "path", "body"))
            found = err.get("input")
            found_text = "nothing" if found is None else repr(found)[:100]
            problems.append(
                {
                    "parameter": loc,
                    "message": err.get("msg", ""),
                    "type": err.get("type", ""),
                    "found": found_text,
                }
            )
        message = "; ".join(
            f"{p['parameter']}: expected {_expected(p['message'])}, found {p['found']}" for p in problems
        )
        return JSONResponse(
            error_body("invalid_parameter", message, {"errors": problems}, request_id(request)),
            status_code=422,
        )

    async def recent_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            error_body(
                "recent_unavailable",
                f"include_recent=true: expected Kafka to answer, found {exc}",
                {},
                request_id(request),
            ),
            status_code=503,
        )

    app.add_exception_handler(RecentUnavailableError, recent_error)
    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(K2QueryError, query_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)


def _expected(pydantic_message: str) -> str:
    # pydantic says "Input should be a valid integer"; the error model says "expected a valid integer".
    for prefix in ("Input should be ", "String should ", "Value should "):
        if pydantic_message.startswith(prefix):
            return pydantic_message[len(prefix) :]
    return pydantic_message[:1].lower() + pydantic_message[1:]


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    request_id_header = {
        "description": "Request id (echoes a valid incoming X-Request-ID).",
        "schema": {"type": "string"},
    }
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            for response in operation.get("responses", {}).values():
                response.setdefault("headers", {})["X-Request-ID"] = request_id_header
    app.openapi_schema = schema
    return schema


_API_DESCRIPTION = """
Every trade and quote K2 stored, over HTTP.

* **Auth**: send an API key (`k2 keys create --name NAME --scope read|admin`) as `X-API-Key` or
  `Authorization: Bearer`. `/health`, `/ready` and `/metrics` need none.
* **Formats**: JSON (default), CSV, Parquet and Arrow IPC stream, chosen with `format=` or `Accept`.
  JSON carries exact decimals as strings and times as ISO-8601 UTC.
* **Pagination**: follow `next_cursor` (body) / `X-Next-Cursor` / `Link: rel="next"`; all pages of a walk
  read the snapshot of the first page.
* **Time travel**: `as_of` = snapshot id (see `/v1/snapshots`) or ISO-8601 time.
* **Limits**: per-key rate limit (429 + `Retry-After`), rows per request, time range per request,
  request timeout (504), body size (413).
* **Errors**: every 4xx/5xx body is `{"error": {"code", "message", "details", "request_id"}}`, and every
  response has an `X-Request-ID` header.
"""
