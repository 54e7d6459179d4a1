"""Reference routes: ``/v1/symbols``, ``/v1/snapshots``, ``/v1/gaps``."""

# No `from __future__ import annotations`: FastAPI must see the Annotated aliases at definition time.

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from k2.api import models
from k2.api.auth import read_auth
from k2.api.params import (
    AsOf,
    Exchange,
    Fmt,
    OptSymbol,
    check_as_of,
    fmt_of,
    pinned,
)
from k2.api.respond import as_table, data_responses, respond, snapshot_ids_of
from k2.api.state import ApiState, run


def router(state: ApiState) -> APIRouter:
    """The reference routes."""
    router = APIRouter()
    read_auth_ = read_auth(state)

    # -- catalog views ---------------------------------------------------------------------------------

    @router.get(
        "/v1/symbols",
        tags=["reference"],
        dependencies=read_auth_,
        response_model=models.SymbolsResponse,
        responses=data_responses(),
        summary="Stored symbols with counts and time ranges",
    )
    async def symbols(
        request: Request, exchange: Exchange = None, as_of: AsOf = None, format: Fmt = None
    ) -> Any:
        """Every (exchange, symbol) with trade and quote counts and first/last times."""
        fmt = fmt_of(request, format)
        checked_as_of = check_as_of(as_of)

        def work() -> StreamingResponse:
            result = pinned(state.client(), checked_as_of).symbols(exchange=exchange)
            return respond(request, fmt, as_table(result), snapshot_ids_of(result))

        return await run(state, work, request)

    @router.get(
        "/v1/snapshots",
        tags=["reference"],
        dependencies=read_auth_,
        response_model=models.SnapshotsResponse,
        responses=data_responses(),
        summary="Iceberg snapshots of a table (time-travel targets)",
    )
    async def snapshots(
        request: Request,
        table: Annotated[
            Literal["trades", "quotes", "instruments", "gaps"], Query(description="Table.")
        ] = "trades",
        as_of: AsOf = None,
        format: Fmt = None,
    ) -> Any:
        """Snapshots (commits) of a table, with the Kafka offsets each covers; ``as_of`` keeps those committed by then."""
        fmt = fmt_of(request, format)
        checked_as_of = check_as_of(as_of)

        def work() -> StreamingResponse:
            result = pinned(state.client(), checked_as_of).snapshots(table)
            return respond(request, fmt, as_table(result), snapshot_ids_of(result))

        return await run(state, work, request)

    @router.get(
        "/v1/gaps",
        tags=["reference"],
        dependencies=read_auth_,
        response_model=models.GapsResponse,
        responses=data_responses(),
        summary="The gap ledger (missing exchange ids)",
    )
    async def gaps(
        request: Request,
        status: Annotated[
            Literal["open", "backfilled", "lost"] | None, Query(description="Only gaps in this state.")
        ] = None,
        exchange: Exchange = None,
        symbol: OptSymbol = None,
        as_of: AsOf = None,
        format: Fmt = None,
    ) -> Any:
        """Gaps in exchange id sequences (latest state per gap)."""
        fmt = fmt_of(request, format)
        checked_as_of = check_as_of(as_of)

        def work() -> StreamingResponse:
            result = pinned(state.client(), checked_as_of).gaps(
                status=status, exchange=exchange, symbol=symbol
            )
            return respond(request, fmt, as_table(result), snapshot_ids_of(result))

        return await run(state, work, request)

    return router
