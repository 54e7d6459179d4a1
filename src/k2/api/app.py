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

Example::

    app = create_app(load_settings())
    uvicorn.run(app, host="127.0.0.1", port=8000)
"""

# No `from __future__ import annotations`: FastAPI must see the local Annotated aliases at definition time.

import asyncio
import base64
import json
import logging
import math
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from k2 import __version__ as K2_VERSION
from k2.api import models
from k2.api.book import book_router
from k2.api.cursor import CursorCodec, params_digest
from k2.api.errors import APIError, error_body, error_responses
from k2.api.formats import MEDIA_TYPES, Format, encode, negotiate
from k2.api.keys import KeyInfo, KeyStore
from k2.api.middleware import RequestContextMiddleware
from k2.api.ratelimit import TokenBuckets
from k2.config import Settings
from k2.query.cancel import CancelScope
from k2.query.errors import (
    InvalidRangeError,
    K2QueryError,
    LimitExceededError,
    QueryError,
    UnknownSymbolError,
)
from k2.query.params import parse_duration
from k2.query.recent import RecentUnavailableError
from k2.telemetry.metrics import declare_all, metric

log = logging.getLogger("k2.api")
T = TypeVar("T")

# Times outside this window are refused with 400 (market data K2 stores lies well inside it).
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(2200, 1, 1, tzinfo=UTC)
MAX_SNAPSHOT_ID = 2**63 - 1
ID_COLUMN = {"trades": "trade_id", "quotes": "update_id"}

# Printable text without control characters: what every free-text parameter must look like.
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]+$"
TOPIC_PATTERN = r"^[A-Za-z0-9._-]+$"
CURSOR_PATTERN = r"^[A-Za-z0-9_.-]+$"
SHORT_TOKEN_PATTERN = r"^[A-Za-z0-9.]+$"
TOLERANCE_PATTERN = r"^[0-9]{1,9}(ms|s|m|h|d)$"

DATA_CONTENT: dict[str, Any] = {
    MEDIA_TYPES["csv"]: {
        "schema": {"type": "string"},
        "example": '"exchange","symbol","trade_id","price"\nbinance,BTCUSDT,3721405481,61837.63000000\n',
    },
    MEDIA_TYPES["parquet"]: {"schema": {"type": "string", "format": "binary"}},
    MEDIA_TYPES["arrow"]: {"schema": {"type": "string", "format": "binary"}},
}
DATA_HEADERS: dict[str, Any] = {
    "X-Row-Count": {"description": "Rows in the body.", "schema": {"type": "integer"}},
    "X-Snapshot-Ids": {"description": "JSON object: Iceberg snapshot id read per table.", "schema": {"type": "string"}},
}
PAGED_HEADERS: dict[str, Any] = {
    **DATA_HEADERS,
    "X-Next-Cursor": {"description": "Cursor of the next page (absent on the last page).", "schema": {"type": "string"}},
    "Link": {"description": 'URL of the next page with rel="next" (absent on the last page).', "schema": {"type": "string"}},
}
DATA_ERRORS = (400, 401, 403, 404, 406, 413, 422, 429, 500, 503, 504)


def _data_responses(paged: bool = False) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": "Rows, in the requested format (JSON shown; CSV, Parquet, Arrow IPC stream alike).",
            "content": DATA_CONTENT,
            "headers": PAGED_HEADERS if paged else DATA_HEADERS,
        },
        **error_responses(*DATA_ERRORS),
    }


# -- request state ---------------------------------------------------------------------------------


@dataclass
class ApiState:
    """Everything a request handler needs, created once per app."""

    settings: Settings
    keys: KeyStore
    buckets: TokenBuckets
    cursors: CursorCodec
    executor: ThreadPoolExecutor
    client_factory: Callable[[], Any]
    _client: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self) -> Any:
        """The shared query client (thread-safe, created on first use)."""
        with self._lock:
            if self._client is None:
                self._client = self.client_factory()
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None and hasattr(self._client, "close"):
                self._client.close()
            self._client = None
        self.executor.shutdown(wait=False, cancel_futures=True)


def _default_client_factory(settings: Settings) -> Callable[[], Any]:
    def make() -> Any:
        from k2.query.client import Client

        return Client(settings)

    return make


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "-")


async def _run(state: ApiState, fn: Callable[[], T]) -> T:
    """Run blocking query work in the API's pool, bounded by ``api_request_timeout_seconds`` (504).

    On timeout the DuckDB statements of the request are interrupted (:class:`CancelScope`), so the worker
    thread and its pooled connection are free again within milliseconds instead of finishing the query.
    """
    loop = asyncio.get_running_loop()
    scope = CancelScope()

    def call() -> T:
        with scope:
            return fn()

    inner = state.executor.submit(call)
    # Once the request has answered 504, the worker's QueryCancelledError has nobody to report to.
    inner.add_done_callback(lambda f: f.cancelled() or f.exception())
    future = asyncio.wrap_future(inner, loop=loop)
    timeout = state.settings.api_request_timeout_seconds
    try:
        return await asyncio.wait_for(future, timeout=timeout)
    except TimeoutError:
        scope.cancel()
        inner.cancel()  # not started yet (all workers busy): never start it
        raise APIError(
            504,
            "timeout",
            f"request: expected to finish within api_request_timeout_seconds={timeout:g}s, found it still running",
            {"timeout_seconds": timeout},
        ) from None


# -- parameter checks -------------------------------------------------------------------------------


def _check_time(name: str, value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise APIError(
            400, "invalid_time", f"{name}: expected an ISO-8601 time with an offset or Z, found {value.isoformat()!r} (no offset)", {"parameter": name}
        )
    if not MIN_TIME <= value < MAX_TIME:
        raise APIError(
            400,
            "invalid_time",
            f"{name}: expected a time between {MIN_TIME.isoformat()} and {MAX_TIME.isoformat()}, found {value.isoformat()!r}",
            {"parameter": name},
        )
    return value.astimezone(UTC)


def _check_range(settings: Settings, start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None:
        if end < start:
            raise APIError(
                400,
                "invalid_range",
                f"end: expected a time at or after start {start.isoformat()}, found {end.isoformat()}",
                {"start": start.isoformat(), "end": end.isoformat()},
            )
        days = (end - start) / timedelta(days=1)
        if days > settings.query_max_range_days:
            raise APIError(
                422,
                "range_too_long",
                f"start..end: expected at most query_max_range_days={settings.query_max_range_days:g} days, found {days:.2f} days",
                {"max_days": settings.query_max_range_days, "found_days": round(days, 3)},
            )


def _check_as_of(value: int | datetime | None) -> int | datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return _check_time("as_of", value)
    if not 0 <= value <= MAX_SNAPSHOT_ID:
        raise APIError(
            400, "invalid_as_of", f"as_of: expected a snapshot id 0..{MAX_SNAPSHOT_ID} or an ISO-8601 time, found {value}", {"parameter": "as_of"}
        )
    return value


def _check_window(
    settings: Settings, start: datetime | None, end: datetime | None, as_of: int | datetime | None
) -> tuple[datetime | None, datetime | None, int | datetime | None]:
    """The checks every data endpoint applies to its time window and ``as_of``, in one place."""
    start, end = _check_time("start", start), _check_time("end", end)
    _check_range(settings, start, end)
    return start, end, _check_as_of(as_of)


def _check_tolerance(settings: Settings, value: str) -> None:
    # The query client enforces the same bound (InvalidRangeError); checking here answers before any work.
    if re.match(TOLERANCE_PATTERN, value) is None:  # the Query pattern already refused it; kept for direct callers
        raise APIError(400, "invalid_parameter", f"tolerance: expected a duration like 500ms, 1s or 2m, found {value!r}", {"parameter": "tolerance"})
    try:
        parse_duration(value, "tolerance", maximum=timedelta(days=settings.query_max_range_days), maximum_hint=" (query_max_range_days)")
    except InvalidRangeError as exc:
        raise APIError(
            400, "invalid_parameter", str(exc), {"parameter": "tolerance", "max_seconds": settings.query_max_range_days * 86400}
        ) from None


def _micros(value: Any) -> int:
    if isinstance(value, datetime):
        return int((value - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
    return int(value)


def _from_micros(value: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)


def _ts_micros(column: pa.ChunkedArray) -> list[int]:
    return pc.cast(column, pa.int64()).to_pylist()


# -- response building -------------------------------------------------------------------------------


def _as_table(result: Any) -> pa.Table:
    table = getattr(result, "table", result)
    if not isinstance(table, pa.Table):
        table = pa.table(table)
    return table


def _recent(result: Any) -> dict[str, Any]:
    """Envelope fields about the Kafka part of a hybrid query (only when it was skipped)."""
    error = getattr(result, "recent_error", None)
    return {"recent_error": str(error)} if error else {}


def _snapshot_ids(result: Any) -> dict[str, int | None]:
    ids = getattr(result, "snapshot_ids", None) or {}
    return {str(k): (None if v is None else int(v)) for k, v in dict(ids).items()}


def _respond(
    request: Request,
    fmt: Format,
    table: pa.Table,
    snapshot_ids: Mapping[str, int | None],
    *,
    next_cursor: str | None = None,
    paged: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> StreamingResponse:
    envelope: dict[str, Any] = {"row_count": table.num_rows, "snapshot_ids": dict(snapshot_ids)}
    if paged:
        envelope["next_cursor"] = next_cursor
    envelope.update(extra or {})
    headers = {"X-Row-Count": str(table.num_rows), "X-Snapshot-Ids": json.dumps(dict(snapshot_ids), separators=(",", ":"))}
    if next_cursor is not None:
        headers["X-Next-Cursor"] = next_cursor
        headers["Link"] = f'<{request.url.include_query_params(cursor=next_cursor)}>; rel="next"'
    return StreamingResponse(encode(table, fmt, envelope), media_type=MEDIA_TYPES[fmt], headers=headers)


# -- the app ----------------------------------------------------------------------------------------

_QUERY_ERROR_STATUS: tuple[tuple[type[K2QueryError], int, str], ...] = (
    (UnknownSymbolError, 404, "unknown_symbol"),
    (InvalidRangeError, 400, "invalid_range"),
    (LimitExceededError, 422, "limit_exceeded"),
    (QueryError, 400, "invalid_query"),
    (K2QueryError, 400, "bad_request"),
)
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request", 401: "unauthorized", 403: "forbidden"}


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
        buckets=TokenBuckets(settings.api_rate_limit_per_second, settings.api_rate_limit_burst),
        cursors=CursorCodec(keys.secret("cursor")),
        executor=ThreadPoolExecutor(max_workers=max(4, settings.query_pool_size * 2), thread_name_prefix="k2-api"),
        client_factory=client_factory or _default_client_factory(settings),
    )
    declare_all()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
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
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.api_max_body_bytes)
    _install_error_handlers(app)

    api_key_header = APIKeyHeader(
        name="X-API-Key", auto_error=False, scheme_name="ApiKeyAuth", description="API key from `k2 keys create`."
    )
    bearer = HTTPBearer(auto_error=False, scheme_name="BearerAuth", description="The same API key as a bearer token.")

    def authenticate(scope: str) -> Callable[..., Any]:
        async def dependency(
            api_key: Annotated[str | None, Security(api_key_header)] = None,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)] = None,
        ) -> KeyInfo:
            given = api_key or (credentials.credentials if credentials is not None else None)
            if not given:
                raise APIError(
                    401,
                    "unauthorized",
                    "expected an API key in the X-API-Key header or as Authorization: Bearer <key>, found none",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            info = state.keys.verify(given.strip())
            if info is None:
                raise APIError(
                    401,
                    "unauthorized",
                    "expected a valid, unrevoked API key, found a key that is unknown, malformed or revoked",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            wait = state.buckets.take(info.key_id)
            if wait > 0:
                metric("k2_api_rate_limited_total").unlabelled().inc()
                retry = max(1, math.ceil(wait))
                raise APIError(
                    429,
                    "rate_limited",
                    f"rate limit: expected at most {settings.api_rate_limit_per_second:g} requests/s (burst {settings.api_rate_limit_burst}) "
                    f"per key, found the bucket empty; retry after {retry}s",
                    {"retry_after_seconds": retry, "rate_per_second": settings.api_rate_limit_per_second, "burst": settings.api_rate_limit_burst},
                    headers={"Retry-After": str(retry)},
                )
            if scope == "admin" and info.scope != "admin":
                raise APIError(
                    403, "forbidden", f"expected a key with the admin scope for this endpoint, found scope {info.scope!r}", {"required_scope": "admin", "key_scope": info.scope}
                )
            return info

        return dependency

    read_auth = [Depends(authenticate("read"))]
    admin_auth = [Depends(authenticate("admin"))]
    app.include_router(book_router(read_auth))  # /v1/book (k2.api.book)

    # Shared parameter declarations.
    Symbol = Annotated[str, Query(min_length=1, max_length=64, pattern=TEXT_PATTERN, description="Exchange-native symbol.", examples=["BTCUSDT"])]
    OptSymbol = Annotated[
        str | None, Query(min_length=1, max_length=64, pattern=TEXT_PATTERN, description="Exchange-native symbol.", examples=["BTCUSDT"])
    ]
    Exchange = Annotated[
        str | None, Query(min_length=1, max_length=32, pattern=TEXT_PATTERN, description="Venue code (all venues when absent).", examples=["binance"])
    ]
    Start = Annotated[
        datetime | None,
        Query(description="Inclusive start, ISO-8601 with offset (between 1970 and 2200).", examples=["2024-08-08T23:54:00Z"]),
    ]
    End = Annotated[datetime | None, Query(description="Exclusive end, ISO-8601 with offset.", examples=["2024-08-09T00:06:00Z"])]
    ReqStart = Annotated[datetime, Query(description="Inclusive start, ISO-8601 with offset.", examples=["2024-08-08T23:54:00Z"])]
    ReqEnd = Annotated[datetime, Query(description="Exclusive end, ISO-8601 with offset.", examples=["2024-08-09T00:06:00Z"])]
    AsOf = Annotated[
        int | datetime | None,
        Query(
            description="Time travel: an Iceberg snapshot id (see /v1/snapshots) or an ISO-8601 time "
            "(the latest snapshot committed at or before it).",
            examples=["2024-08-09T00:10:00Z"],
        ),
    ]
    IncludeRecent = Annotated[
        bool | None,
        Query(description="Add rows still in Kafka (not yet in Iceberg). Default: on when the range ends within "
              "query_recent_window_seconds of now. Not allowed with as_of."),
    ]
    Fmt = Annotated[
        Literal["json", "csv", "parquet", "arrow"] | None,
        Query(alias="format", description="Response format; overrides the Accept header."),
    ]
    Limit = Annotated[
        int | None,
        Query(ge=1, le=settings.query_max_rows, description=f"Rows per page (default api_page_size={settings.api_page_size}; at most query_max_rows)."),
    ]
    Cursor = Annotated[
        str | None,
        Query(min_length=1, max_length=4096, pattern=CURSOR_PATTERN, description="next_cursor of the previous page."),
    ]

    def fmt_of(request: Request, format_param: str | None) -> Format:
        return negotiate(format_param, request.headers.get("accept"))

    def pinned(client: Any, as_of: int | datetime | None) -> Any:
        return client if as_of is None else client.as_of(as_of)

    # -- health --------------------------------------------------------------------------------------

    @app.get("/health", tags=["ops"], response_model=models.Health, summary="Liveness", responses=error_responses(500))
    async def health() -> dict[str, str]:
        """Liveness: the process serves requests (no dependency is checked)."""
        return {"status": "ok"}

    @app.get(
        "/ready",
        tags=["ops"],
        response_model=models.Ready,
        summary="Readiness (catalog, engine, broker)",
        responses=error_responses(500, 503),
    )
    async def ready(request: Request) -> Any:
        """Readiness: the Iceberg catalog answers, the query engine runs a query, the Kafka broker answers."""
        checks = await asyncio.gather(
            _check(state, "catalog", lambda: _check_catalog(settings)),
            _check(state, "engine", lambda: _check_engine(state)),
            _check(state, "broker", lambda: _check_broker(settings)),
        )
        result = {name: {"ok": ok, "detail": detail, "seconds": round(sec, 4)} for name, ok, detail, sec in checks}
        if all(c["ok"] for c in result.values()):
            return {"status": "ready", "checks": result}
        failed = sorted(n for n, c in result.items() if not c["ok"])
        return JSONResponse(
            status_code=503,
            content=error_body("not_ready", f"expected catalog, engine and broker to answer, found {failed} failing", {"checks": result}, _request_id(request)),
        )

    @app.get(
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format."}, **error_responses(500)},
    )
    async def metrics_endpoint() -> Response:
        """Every K2 metric of this process, in the Prometheus text format."""
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST.split(";")[0] + "; charset=utf-8")

    # -- trades / quotes (paged) ----------------------------------------------------------------------

    def paged_rows(
        request: Request,
        table_name: Literal["trades", "quotes"],
        symbol: str,
        start: datetime | None,
        end: datetime | None,
        exchange: str | None,
        limit: int | None,
        cursor: str | None,
        as_of: int | datetime | None,
        include_recent: bool | None,
        fmt: Format,
    ) -> Callable[[], StreamingResponse]:
        start, end, as_of = _check_window(settings, start, end, as_of)
        page_size = limit or min(settings.api_page_size, settings.query_max_rows)
        digest = params_digest(
            {"t": table_name, "symbol": symbol, "start": start, "end": end, "exchange": exchange, "as_of": as_of, "recent": include_recent}
        )
        payload = state.cursors.decode(cursor) if cursor is not None else None
        if payload is not None and (payload.get("ep") != table_name or payload.get("q") != digest):
            raise APIError(
                400,
                "invalid_cursor",
                "cursor: expected a cursor issued for this endpoint and these parameters (symbol, start, end, exchange, as_of, "
                "include_recent), found one issued for a different query",
                {"parameter": "cursor"},
            )

        def work() -> StreamingResponse:
            client = state.client()
            method = client.trades if table_name == "trades" else client.quotes
            recent_included: bool | None = None
            prev_ts: int | None = None
            prev_skip = 0
            if payload is None:
                fetch = min(page_size + 1, settings.query_max_rows)
                capped = fetch == settings.query_max_rows
                result = method(symbol, start, end, exchange=exchange, limit=fetch, as_of=as_of, include_recent=include_recent)
                snap = _snapshot_ids(result).get(table_name)
                data = _as_table(result)
                recent = int(getattr(result, "recent_rows", 0) or 0)
                recent_included = recent > 0
                if data.num_rows > page_size and recent and snap is not None:
                    # A multi-page walk reads the pinned snapshot only (Kafka rows are not pinnable).
                    try:
                        result = method(symbol, start, end, exchange=exchange, limit=fetch, as_of=snap, include_recent=False)
                        data = _as_table(result)
                    except UnknownSymbolError:  # the symbol exists only in Kafka so far
                        data = data.slice(0, 0)
                    recent_included = False
                capped = capped and data.num_rows == fetch
            capped = False
            if payload is not None:
                snap = payload.get("snap")
                prev_ts, prev_skip = int(payload["ts"]), int(payload["skip"])
                # Resume at the last page's time: skip the rows of that time already returned.
                fetch = page_size + prev_skip + 1
                capped = fetch > settings.query_max_rows
                fetch = min(fetch, settings.query_max_rows)
                result = method(symbol, _from_micros(prev_ts), end, exchange=exchange, limit=fetch, as_of=snap, include_recent=False)
                raw = _as_table(result)
                capped = capped and raw.num_rows == fetch
                data = raw.slice(prev_skip)
            snapshot_ids: dict[str, int | None] = {table_name: snap}
            more = data.num_rows > page_size or (capped and data.num_rows > 0)
            page = data.slice(0, page_size)
            next_cursor = None
            if more and page.num_rows and snap is not None:
                stamps = _ts_micros(page["exchange_ts"])
                last = stamps[-1]
                at_last = sum(1 for s in stamps if s == last)
                skip = at_last + (prev_skip if last == prev_ts else 0)
                next_cursor = state.cursors.encode({"ep": table_name, "q": digest, "snap": snap, "ts": last, "skip": skip})
            extra: dict[str, Any] = {"recent_included": recent_included} if recent_included is not None else {}
            extra.update(_recent(result))
            return _respond(request, fmt, page, snapshot_ids, next_cursor=next_cursor, paged=True, extra=extra)

        return work

    @app.get(
        "/v1/trades",
        tags=["data"],
        dependencies=read_auth,
        response_model=models.TradesPage,
        responses=_data_responses(paged=True),
        summary="Trades of a symbol (cursor-paged)",
    )
    async def trades(
        request: Request,
        symbol: Symbol,
        start: Start = None,
        end: End = None,
        exchange: Exchange = None,
        limit: Limit = None,
        cursor: Cursor = None,
        as_of: AsOf = None,
        include_recent: IncludeRecent = None,
        format: Fmt = None,
    ) -> Any:
        """Trades in (exchange_ts, trade_id) order, ``limit`` per page; follow ``next_cursor`` for more."""
        fmt = fmt_of(request, format)
        work = paged_rows(request, "trades", symbol, start, end, exchange, limit, cursor, as_of, include_recent, fmt)
        return await _run(state, work)

    @app.get(
        "/v1/quotes",
        tags=["data"],
        dependencies=read_auth,
        response_model=models.QuotesPage,
        responses=_data_responses(paged=True),
        summary="Quotes (top of book) of a symbol (cursor-paged)",
    )
    async def quotes(
        request: Request,
        symbol: Symbol,
        start: Start = None,
        end: End = None,
        exchange: Exchange = None,
        limit: Limit = None,
        cursor: Cursor = None,
        as_of: AsOf = None,
        include_recent: IncludeRecent = None,
        format: Fmt = None,
    ) -> Any:
        """Best bid/ask updates in (exchange_ts, update_id) order, ``limit`` per page; follow ``next_cursor``."""
        fmt = fmt_of(request, format)
        work = paged_rows(request, "quotes", symbol, start, end, exchange, limit, cursor, as_of, include_recent, fmt)
        return await _run(state, work)

    # -- aggregates ------------------------------------------------------------------------------------

    @app.get(
        "/v1/bars",
        tags=["data"],
        dependencies=read_auth,
        response_model=models.BarsResponse,
        responses=_data_responses(),
        summary="OHLCV bars (time, volume or tick bars)",
    )
    async def bars(
        request: Request,
        symbol: Symbol,
        interval: Annotated[
            str, Query(min_length=1, max_length=16, pattern=SHORT_TOKEN_PATTERN, description="Bar length for kind=time: 1s..1d (units s, m, h, d).", examples=["1m"])
        ] = "1m",
        start: Start = None,
        end: End = None,
        exchange: Exchange = None,
        kind: Annotated[Literal["time", "volume", "tick"], Query(description="time: fixed intervals; volume: `size` base volume per bar; tick: `size` trades per bar.")] = "time",
        size: Annotated[
            str | None, Query(min_length=1, max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?$", description="Bar size for kind=volume (decimal) or tick (integer).", examples=["10"])
        ] = None,
        fill_empty: Annotated[bool, Query(description="Emit empty time bars (no trades) carrying the previous close.")] = False,
        as_of: AsOf = None,
        include_recent: IncludeRecent = None,
        format: Fmt = None,
    ) -> Any:
        """Bars from trades; at most ``query_max_rows`` bars per request (422 ``limit_exceeded`` beyond)."""
        fmt = fmt_of(request, format)
        start, end, checked_as_of = _check_window(settings, start, end, as_of)
        size_value: Any = size
        if size is not None and kind == "tick":
            if "." in size:
                raise APIError(400, "invalid_parameter", f"size: expected an integer number of trades for kind=tick, found {size!r}", {"parameter": "size"})
            size_value = int(size)

        def work() -> StreamingResponse:
            result = state.client().bars(
                symbol, interval, start, end, exchange=exchange, kind=kind, size=size_value, fill_empty=fill_empty,
                as_of=checked_as_of, include_recent=include_recent,
            )
            return _respond(request, fmt, _as_table(result), _snapshot_ids(result), extra=_recent(result))

        return await _run(state, work)

    def stat_endpoint(name: Literal["vwap", "twap"]) -> Callable[..., Any]:
        async def endpoint(
            request: Request,
            symbol: Symbol,
            start: ReqStart,
            end: ReqEnd,
            exchange: Exchange = None,
            as_of: AsOf = None,
            include_recent: IncludeRecent = None,
            format: Fmt = None,
        ) -> Any:
            fmt = fmt_of(request, format)
            s, e, checked_as_of = _check_window(settings, start, end, as_of)

            def work() -> StreamingResponse:
                fn = getattr(state.client(), name)
                result = fn(symbol, s, e, exchange=exchange, as_of=checked_as_of, include_recent=include_recent)
                return _respond(request, fmt, _as_table(result), _snapshot_ids(result), extra=_recent(result))

            return await _run(state, work)

        return endpoint

    app.get(
        "/v1/vwap",
        tags=["data"],
        dependencies=read_auth,
        response_model=models.StatResponse,
        responses=_data_responses(),
        summary="Volume-weighted average price over a range",
        description="One row per (exchange, symbol): the volume-weighted average trade price over [start, end).",
    )(stat_endpoint("vwap"))
    app.get(
        "/v1/twap",
        tags=["data"],
        dependencies=read_auth,
        response_model=models.StatResponse,
        responses=_data_responses(),
        summary="Time-weighted average price over a range",
        description="One row per (exchange, symbol): the time-weighted average trade price over [start, min(end, now)), "
        "each price weighted by how long it prevailed, starting with the last trade before start (within query_max_range_days) "
        "when there is one.",
    )(stat_endpoint("twap"))

    @app.get(
        "/v1/spread",
        tags=["data"],
        dependencies=read_auth,
        response_model=models.SpreadResponse,
        responses=_data_responses(),
        summary="Bid-ask spread statistics over a range (from quotes)",
    )
    async def spread(
        request: Request,
        symbol: Symbol,
        start: ReqStart,
        end: ReqEnd,
        exchange: Exchange = None,
        as_of: AsOf = None,
        format: Fmt = None,
    ) -> Any:
        """One row per (exchange, symbol): count, mean/median/min/max and time-weighted spread, mean spread in
        basis points of the mid, crossed and locked counts, over quotes with both sides > 0 in [start, end).
        Reads the quotes table only (no Kafka rows)."""
        fmt = fmt_of(request, format)
        s, e, checked_as_of = _check_window(settings, start, end, as_of)

        def work() -> StreamingResponse:
            result = state.client().spread_stats(symbol, s, e, exchange=exchange, as_of=checked_as_of)
            return _respond(request, fmt, _as_table(result), _snapshot_ids(result))

        return await _run(state, work)

    @app.get(
        "/v1/asof",
        tags=["data"],
        dependencies=read_auth,
        response_model=models.AsofResponse,
        responses=_data_responses(),
        summary="Trades joined with the prevailing quote (as-of join)",
    )
    async def asof(
        request: Request,
        symbol: Symbol,
        start: ReqStart,
        end: ReqEnd,
        exchange: Exchange = None,
        tolerance: Annotated[
            str,
            Query(
                min_length=2, max_length=12, pattern=TOLERANCE_PATTERN, description=f"Oldest quote age joined, e.g. 500ms, 1s, 2m; at most query_max_range_days={settings.query_max_range_days:g} days.", examples=["1s"]
            ),
        ] = "1s",
        as_of: AsOf = None,
        format: Fmt = None,
    ) -> Any:
        """Each trade with the latest quote at or before its time, no older than ``tolerance``."""
        fmt = fmt_of(request, format)
        s, e, checked_as_of = _check_window(settings, start, end, as_of)
        _check_tolerance(settings, tolerance)

        def work() -> StreamingResponse:
            result = state.client().asof_join(symbol, s, e, exchange=exchange, tolerance=tolerance, as_of=checked_as_of)
            return _respond(request, fmt, _as_table(result), _snapshot_ids(result))

        return await _run(state, work)

    # -- catalog views ---------------------------------------------------------------------------------

    @app.get(
        "/v1/symbols",
        tags=["reference"],
        dependencies=read_auth,
        response_model=models.SymbolsResponse,
        responses=_data_responses(),
        summary="Stored symbols with counts and time ranges",
    )
    async def symbols(request: Request, exchange: Exchange = None, as_of: AsOf = None, format: Fmt = None) -> Any:
        """Every (exchange, symbol) with trade and quote counts and first/last times."""
        fmt = fmt_of(request, format)
        checked_as_of = _check_as_of(as_of)

        def work() -> StreamingResponse:
            result = pinned(state.client(), checked_as_of).symbols(exchange=exchange)
            return _respond(request, fmt, _as_table(result), _snapshot_ids(result))

        return await _run(state, work)

    @app.get(
        "/v1/snapshots",
        tags=["reference"],
        dependencies=read_auth,
        response_model=models.SnapshotsResponse,
        responses=_data_responses(),
        summary="Iceberg snapshots of a table (time-travel targets)",
    )
    async def snapshots(
        request: Request,
        table: Annotated[Literal["trades", "quotes", "instruments", "gaps"], Query(description="Table.")] = "trades",
        as_of: AsOf = None,
        format: Fmt = None,
    ) -> Any:
        """Snapshots (commits) of a table, with the Kafka offsets each covers; ``as_of`` keeps those committed by then."""
        fmt = fmt_of(request, format)
        checked_as_of = _check_as_of(as_of)

        def work() -> StreamingResponse:
            result = pinned(state.client(), checked_as_of).snapshots(table)
            return _respond(request, fmt, _as_table(result), _snapshot_ids(result))

        return await _run(state, work)

    @app.get(
        "/v1/gaps",
        tags=["reference"],
        dependencies=read_auth,
        response_model=models.GapsResponse,
        responses=_data_responses(),
        summary="The gap ledger (missing exchange ids)",
    )
    async def gaps(
        request: Request,
        status: Annotated[Literal["open", "backfilled", "lost"] | None, Query(description="Only gaps in this state.")] = None,
        exchange: Exchange = None,
        symbol: OptSymbol = None,
        as_of: AsOf = None,
        format: Fmt = None,
    ) -> Any:
        """Gaps in exchange id sequences (latest state per gap)."""
        fmt = fmt_of(request, format)
        checked_as_of = _check_as_of(as_of)

        def work() -> StreamingResponse:
            result = pinned(state.client(), checked_as_of).gaps(status=status, exchange=exchange, symbol=symbol)
            return _respond(request, fmt, _as_table(result), _snapshot_ids(result))

        return await _run(state, work)

    # -- replay (paged export) --------------------------------------------------------------------------

    @app.get(
        "/v1/replay",
        tags=["data"],
        dependencies=read_auth,
        response_model=models.ReplayPage,
        responses=_data_responses(paged=True),
        summary="Cursor-paged export of a time range of a table (all symbols)",
    )
    async def replay(
        request: Request,
        start: ReqStart,
        end: ReqEnd,
        table: Annotated[Literal["trades", "quotes"], Query(description="Table to export.")] = "trades",
        exchange: Exchange = None,
        symbol: OptSymbol = None,
        limit: Limit = None,
        cursor: Cursor = None,
        as_of: AsOf = None,
        format: Fmt = None,
    ) -> Any:
        """Every row of ``table`` in [start, end) in (exchange_ts, exchange, symbol, id) order, pinned to one snapshot."""
        fmt = fmt_of(request, format)
        s, e, checked_as_of = _check_window(settings, start, end, as_of)
        assert s is not None and e is not None
        page_size = limit or min(settings.api_page_size, settings.query_max_rows)
        digest = params_digest({"t": table, "start": s, "end": e, "exchange": exchange, "symbol": symbol, "as_of": checked_as_of})
        payload = state.cursors.decode(cursor) if cursor is not None else None
        if payload is not None and (payload.get("ep") != "replay" or payload.get("q") != digest):
            raise APIError(
                400, "invalid_cursor", "cursor: expected a cursor issued for this endpoint and these parameters, found one issued for a different query",
                {"parameter": "cursor"},
            )

        def work() -> StreamingResponse:
            client = state.client()
            if payload is None:
                snap = client.snapshot_id(table, as_of=checked_as_of)
                last = None
            else:
                snap, last = payload.get("snap"), payload.get("last")
            if snap is None:
                empty = pa.Table.from_batches([], schema=_replay_schema(table))
                return _respond(request, fmt, empty, {table: None}, paged=True)
            sql, params = _replay_sql(table, s, e, exchange, symbol, last, page_size + 1)
            data = _as_table(client.as_of(int(snap)).sql(sql, params))
            more = data.num_rows > page_size
            page = data.slice(0, page_size)
            next_cursor = None
            if more:
                row = page.slice(page.num_rows - 1).to_pylist()[0]
                key = [_micros(row["exchange_ts"]), row["exchange"], row["symbol"], row[ID_COLUMN[table]]]
                next_cursor = state.cursors.encode({"ep": "replay", "q": digest, "snap": int(snap), "last": key})
            return _respond(request, fmt, page, {table: int(snap)}, next_cursor=next_cursor, paged=True)

        return await _run(state, work)

    # -- admin -----------------------------------------------------------------------------------------

    @app.get(
        "/v1/dlq",
        tags=["admin"],
        dependencies=admin_auth,
        response_model=models.DeadLettersResponse,
        responses=_data_responses(),
        summary="Dead letters (read-only; admin scope)",
    )
    async def dlq(
        request: Request,
        topic: Annotated[
            str | None, Query(min_length=1, max_length=249, pattern=TOPIC_PATTERN, description="One DLQ topic (all when absent).", examples=["market.crypto.trades.binance.dlq"])
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="Most dead letters returned.")] = 100,
        format: Fmt = None,
    ) -> Any:
        """Dead letters with reason, source position and original bytes (base64), oldest first per partition."""
        fmt = fmt_of(request, format)

        def work() -> StreamingResponse:
            from k2.landing.dlq import read_dead_letters

            budget = max(1.0, min(10.0, settings.api_request_timeout_seconds - 1.0))
            try:
                letters = read_dead_letters(settings, topic, limit=limit, idle_seconds=0.5, max_seconds=budget)
            except KeyError as exc:
                raise APIError(404, "unknown_topic", str(exc.args[0]), {"parameter": "topic"}) from None
            return _respond(request, fmt, _dead_letter_table(letters), {})

        return await _run(state, work)

    @app.get(
        "/v1/keys",
        tags=["admin"],
        dependencies=admin_auth,
        response_model=models.KeysResponse,
        responses=error_responses(401, 403, 429, 500),
        summary="API keys (metadata only; admin scope)",
    )
    async def list_keys() -> Any:
        """Every API key's id, name, scope and state; secrets are never stored, so never shown."""
        infos = await _run(state, state.keys.list_keys)
        return {
            "data": [
                {"key_id": i.key_id, "name": i.name, "scope": i.scope, "created_at": i.created_at, "revoked_at": i.revoked_at, "active": i.active}
                for i in infos
            ]
        }

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


# -- helpers used by the endpoints ------------------------------------------------------------------


def _replay_schema(table: str) -> pa.Schema:
    from k2.model import QUOTE, TRADE

    return (TRADE if table == "trades" else QUOTE).arrow_schema()


def _replay_sql(
    table: str, start: datetime, end: datetime, exchange: str | None, symbol: str | None, last: list[Any] | None, limit: int
) -> tuple[str, list[Any]]:
    """Keyset-paged SELECT over a view; the table and id column come from a fixed map, values are bound."""
    id_col = ID_COLUMN[table]
    where = ["exchange_ts >= ?", "exchange_ts < ?"]
    params: list[Any] = [start, end]
    if exchange is not None:
        where.append("exchange = ?")
        params.append(exchange)
    if symbol is not None:
        where.append("symbol = ?")
        params.append(symbol)
    if last is not None:
        ts, ex, sym, ident = _from_micros(int(last[0])), str(last[1]), str(last[2]), int(last[3])
        where.append(
            f"(exchange_ts > ? OR (exchange_ts = ? AND (exchange > ? OR (exchange = ? AND (symbol > ? OR (symbol = ? AND {id_col} > ?))))))"
        )
        params += [ts, ts, ex, ex, sym, sym, ident]
    sql = (
        f"SELECT * FROM {table} WHERE {' AND '.join(where)} "  # noqa: S608 - identifiers from ID_COLUMN, values bound
        f"ORDER BY exchange_ts, exchange, symbol, {id_col} LIMIT {int(limit)}"
    )
    return sql, params


def _dead_letter_table(letters: list[Any]) -> pa.Table:
    def b64(value: bytes | None) -> str | None:
        return None if value is None else base64.b64encode(value).decode()

    return pa.table(
        {
            "dlq_topic": pa.array([d.dlq_topic for d in letters], pa.string()),
            "dlq_partition": pa.array([d.dlq_partition for d in letters], pa.int64()),
            "dlq_offset": pa.array([d.dlq_offset for d in letters], pa.int64()),
            "reason": pa.array([d.reason for d in letters], pa.string()),
            "detail": pa.array([d.detail for d in letters], pa.string()),
            "source_topic": pa.array([d.source_topic for d in letters], pa.string()),
            "source_partition": pa.array([d.source_partition for d in letters], pa.int64()),
            "source_offset": pa.array([d.source_offset for d in letters], pa.int64()),
            "source_timestamp": pa.array([d.source_timestamp for d in letters], pa.int64()),
            "dead_lettered_at": pa.array([d.dead_lettered_ts if d.dead_lettered_ts > 0 else None for d in letters], pa.timestamp("us", tz="UTC")),
            "key_base64": pa.array([b64(d.key) for d in letters], pa.string()),
            "value_base64": pa.array([b64(d.value) for d in letters], pa.string()),
        }
    )


async def _check(state: ApiState, name: str, fn: Callable[[], str]) -> tuple[str, bool, str, float]:
    started = time.perf_counter()
    scope = CancelScope(timeout=5.0)  # a stuck engine check is interrupted, not left running

    def call() -> str:
        with scope:
            return fn()

    try:
        detail = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(state.executor, call), timeout=5.0)
        return name, True, detail, time.perf_counter() - started
    except Exception as exc:  # a failing dependency is the check's answer, not a server error
        return name, False, f"{type(exc).__name__}: {exc}"[:500], time.perf_counter() - started


def _check_catalog(settings: Settings) -> str:
    from k2.lake.catalog import load_catalog

    namespaces = load_catalog(settings).list_namespaces()
    return f"{len(namespaces)} namespaces"


def _check_engine(state: ApiState) -> str:
    result = state.client().sql("SELECT 42 AS answer")
    value = _as_table(result)["answer"][0].as_py()
    if value != 42:
        raise RuntimeError(f"expected SELECT 42 to return 42, found {value!r}")
    return "query ok"


def _check_broker(settings: Settings) -> str:
    from confluent_kafka.admin import AdminClient

    metadata = AdminClient(settings.kafka_client_config()).list_topics(timeout=3.0)
    return f"{len(metadata.brokers)} broker(s), {len(metadata.topics)} topics"


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, APIError)
        return JSONResponse(exc.body(_request_id(request)), status_code=exc.status, headers=exc.headers)

    async def query_error(request: Request, exc: Exception) -> JSONResponse:
        for cls, status, code in _QUERY_ERROR_STATUS:
            if isinstance(exc, cls):
                return JSONResponse(error_body(code, str(exc), {"error_type": type(exc).__name__}, _request_id(request)), status_code=status)
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
            error_body(_HTTP_CODES.get(status, "http_error"), message, {}, _request_id(request)), status_code=status, headers=exc.headers
        )

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "header", "path", "body"))
            found = err.get("input")
            found_text = "nothing" if found is None else repr(found)[:100]
            problems.append({"parameter": loc, "message": err.get("msg", ""), "type": err.get("type", ""), "found": found_text})
        message = "; ".join(f"{p['parameter']}: expected {_expected(p['message'])}, found {p['found']}" for p in problems)
        return JSONResponse(error_body("invalid_parameter", message, {"errors": problems}, _request_id(request)), status_code=422)

    async def recent_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            error_body("recent_unavailable", f"include_recent=true: expected Kafka to answer, found {exc}", {}, _request_id(request)),
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
    request_id_header = {"description": "Request id (echoes a valid incoming X-Request-ID).", "schema": {"type": "string"}}
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
