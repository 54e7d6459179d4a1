"""What the research console needs from the API process: the console itself, offline ``/docs``, ``POST /v1/sql``.

:func:`install_console` (called once by :func:`k2.api.app.create_app`):

* mounts the static console (:mod:`k2.console`) at ``/console`` and serves the chart library,
  ``/console/vendor/plotly.min.js``, straight from the installed ``plotly`` wheel;
* replaces FastAPI's ``/docs`` (which loads Swagger UI from a CDN and is blank offline) with the same
  page whose script, style and icon come from ``/docs-assets/`` (the installed ``fastapi-offline`` wheel);
* adds ``POST /v1/dlq/replay`` (admin scope, :mod:`k2.api.dlq_replay_route`): what the Quality page's
  replay button calls;
* adds ``POST /v1/sql`` (read scope): the read-only SQL of ``k2 sql`` (``Client.sql``: one SELECT over the
  views trades, quotes, instruments, gaps; parameters bound, never interpolated) in every response format,
  with the snapshot ids read, the column types and the query time.

The pages themselves only call the public ``/v1/...`` endpoints. Hazard: the console and the docs assets
are served without a key (they are static files; every data call they make needs one).

Example::

    curl -H "X-API-Key: $KEY" -H 'Content-Type: application/json' \\
         -d '{"sql": "SELECT count(*) AS n FROM trades WHERE symbol = ?", "params": ["BTCUSDT"]}' \\
         http://127.0.0.1:8000/v1/sql
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated parameter types at definition time.

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.routing import Route

from k2.api.dlq_replay_route import install_dlq_replay
from k2.api.errors import APIError, error_responses
from k2.api.formats import MEDIA_TYPES, encode, negotiate
from k2.config import Settings
from k2.console import STATIC_DIR, plotly_js, swagger_ui_dir

# Bound values a query may take: scalars only (DuckDB binds them; nothing is pasted into the text).
SqlValue = str | int | float | bool | None
Runner = Callable[[Callable[[], Any]], Awaitable[Any]]


class SqlRequest(BaseModel):
    """Body of ``POST /v1/sql``."""

    sql: str = Field(
        min_length=1,
        max_length=100_000,
        description="One read-only SELECT (or WITH ... SELECT) over the views "
        "trades, quotes, instruments and gaps; `?` placeholders for `params`.",
        examples=["SELECT symbol, count(*) AS n FROM trades WHERE exchange = ? GROUP BY symbol"],
    )
    params: list[SqlValue] | None = Field(
        None,
        max_length=1000,
        description="Values bound to the `?` placeholders, in order.",
        examples=[["binance"]],
    )
    as_of: int | datetime | None = Field(
        None, description="Time travel: a snapshot id (see /v1/snapshots) or an ISO-8601 time with offset."
    )


class SqlColumn(BaseModel):
    name: str
    type: str = Field(description="Arrow type of the column, e.g. decimal128(18, 8), timestamp[us, tz=UTC].")


class SqlResponse(BaseModel):
    """JSON answer of ``POST /v1/sql`` (CSV, Parquet and Arrow carry the same rows; headers carry the rest)."""

    data: list[dict[str, Any]]
    row_count: int
    snapshot_ids: dict[str, int | None] = Field(
        description="Iceberg snapshot id each view read (null: table empty)."
    )
    columns: list[SqlColumn]
    query_seconds: float = Field(description="Time the query layer took (also the X-Query-Seconds header).")


def install_console(
    app: FastAPI,
    *,
    settings: Settings,
    run: Runner,
    read_auth: Sequence[Any],
    admin_auth: Sequence[Any],
    client: Callable[[], Any],
) -> None:
    """Add the console, offline ``/docs``, ``POST /v1/sql`` and ``POST /v1/dlq/replay`` to ``app``.

    ``run`` runs blocking work in the API's pool with its timeout; ``client`` gives the shared query client.
    """
    _install_docs(app)
    _install_sql(app, run, read_auth, client)
    install_dlq_replay(app, settings, run, admin_auth)

    async def plotly() -> FileResponse:
        return FileResponse(
            plotly_js(), media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"}
        )

    async def console_root() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=307)

    app.add_api_route("/console/vendor/plotly.min.js", plotly, include_in_schema=False)
    app.add_api_route("/console", console_root, include_in_schema=False)
    app.mount("/console", StaticFiles(directory=STATIC_DIR, html=True), name="console")


def _install_docs(app: FastAPI) -> None:
    """Swagger UI from local files: drop FastAPI's CDN ``/docs`` and serve the same page with local assets."""
    docs_url = app.docs_url or "/docs"
    app.router.routes[:] = [r for r in app.router.routes if not (isinstance(r, Route) and r.path == docs_url)]

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon.png",
            oauth2_redirect_url=app.swagger_ui_oauth2_redirect_url,
        )

    app.add_api_route(docs_url, docs, include_in_schema=False)
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_dir()), name="docs-assets")


def _check_as_of(value: int | datetime | None) -> int | datetime | None:
    if isinstance(value, datetime) and value.tzinfo is None:
        raise APIError(
            400,
            "invalid_range",
            f"as_of: expected an ISO-8601 time with an offset or Z, found {value.isoformat()!r}",
        )
    if isinstance(value, int) and not 0 < value < 2**63:
        raise APIError(
            400, "invalid_query", f"as_of: expected a snapshot id between 1 and 2^63-1, found {value}"
        )
    return value


def _install_sql(app: FastAPI, run: Runner, read_auth: Sequence[Any], client: Callable[[], Any]) -> None:
    Fmt = Annotated[
        Literal["json", "csv", "parquet", "arrow"] | None,
        Query(alias="format", description="Response format; overrides the Accept header."),
    ]

    @app.post(
        "/v1/sql",
        tags=["reference"],
        dependencies=list(read_auth),
        response_model=SqlResponse,
        summary="Read-only SQL over the views trades, quotes, instruments, gaps",
        responses={
            200: {
                "content": {
                    MEDIA_TYPES["csv"]: {"schema": {"type": "string"}},
                    MEDIA_TYPES["parquet"]: {"schema": {"type": "string", "format": "binary"}},
                    MEDIA_TYPES["arrow"]: {"schema": {"type": "string", "format": "binary"}},
                }
            },
            **error_responses(400, 401, 403, 406, 413, 422, 429, 500, 504),
        },
    )
    async def sql(request: Request, body: SqlRequest, format: Fmt = None) -> Any:
        """The read-only SQL of `k2 sql`: exactly one SELECT, at most query_max_rows rows, file and network
        access disabled; `?` parameters are bound. Errors (syntax, unknown column, not a SELECT) come back as
        400 `invalid_query` with K2's message."""
        fmt = negotiate(format, request.headers.get("accept"))
        as_of = _check_as_of(body.as_of)

        def work() -> StreamingResponse:
            started = time.perf_counter()
            base = client()
            result = (base if as_of is None else base.as_of(as_of)).sql(body.sql, body.params)
            seconds = round(time.perf_counter() - started, 6)
            table = result.to_arrow()
            ids = {str(k): (None if v is None else int(v)) for k, v in dict(result.snapshot_ids).items()}
            columns = [{"name": f.name, "type": str(f.type)} for f in table.schema]
            headers = {
                "X-Row-Count": str(table.num_rows),
                "X-Snapshot-Ids": json.dumps(ids, separators=(",", ":")),
                "X-Query-Seconds": f"{seconds:.6f}",
            }
            envelope = {
                "row_count": table.num_rows,
                "snapshot_ids": ids,
                "columns": columns,
                "query_seconds": seconds,
            }
            return StreamingResponse(
                encode(table, fmt, envelope), media_type=MEDIA_TYPES[fmt], headers=headers
            )

        return await run(work)
