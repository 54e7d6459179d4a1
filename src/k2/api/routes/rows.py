"""Row routes, cursor-paged through :mod:`k2.api.paging`: ``/v1/trades``, ``/v1/quotes`` and ``/v1/replay``."""

# No `from __future__ import annotations`: FastAPI must see the Annotated aliases at definition time.

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from k2.api import bigpage, models, paging
from k2.api.auth import read_auth
from k2.api.cursor import params_digest
from k2.api.formats import Format
from k2.api.params import (
    AsOf,
    Cursor,
    End,
    Exchange,
    Fmt,
    IncludeRecent,
    OptSymbol,
    ReqEnd,
    ReqStart,
    Start,
    Symbols,
    check_window,
    fmt_of,
    page_size_of,
    symbols_of,
)
from k2.api.respond import data_responses, recent_fields, respond
from k2.api.state import ApiState, key_id_of, run


def router(state: ApiState) -> APIRouter:
    """The rows routes."""
    settings = state.settings
    router = APIRouter()
    read_auth_ = read_auth(state)
    Limit = Annotated[
        int | None,
        Query(
            ge=1,
            le=settings.query_max_rows,
            description=f"Rows per page (default api_page_size={settings.api_page_size}; at most query_max_rows).",
        ),
    ]

    # -- trades / quotes (paged) ----------------------------------------------------------------------

    def paged_rows(
        request: Request,
        table_name: Literal["trades", "quotes"],
        symbols: list[str],
        start: datetime | None,
        end: datetime | None,
        exchange: str | None,
        limit: int | None,
        cursor: str | None,
        as_of: int | datetime | str | None,
        include_recent: bool | None,
        fmt: Format,
    ) -> Callable[[], StreamingResponse]:
        start, end, as_of = check_window(settings, start, end, as_of)
        digest = params_digest(
            {
                "t": table_name,
                "symbols": sorted(symbols),
                "start": start,
                "end": end,
                "exchange": exchange,
                "as_of": as_of,
                "recent": include_recent,
            }
        )
        query = paging.PageQuery(
            table_name,
            table_name,
            tuple(symbols),
            start,
            end,
            exchange,
            page_size_of(settings, limit),
            settings.query_max_rows,
            digest,
            key_id_of(request),
        )
        payload = paging.decode_cursor(state.cursors, cursor, query)

        def work() -> StreamingResponse:
            client = state.client()
            if payload is None:
                page = bigpage.first_page(client, state.cursors, query, as_of, include_recent)
            else:
                page = bigpage.next_page(
                    client,
                    state.cursors,
                    query,
                    payload.get("snap"),
                    payload["last"],
                    paging.unknown_of(payload),
                )
            extra = {
                **page.extra,
                **recent_fields(page.result),
                "unknown_symbols": list(page.unknown_symbols),
            }
            return respond(
                request,
                fmt,
                page.table,
                {table_name: page.snapshot_id},
                next_cursor=page.next_cursor,
                paged=True,
                extra=extra,
            )

        return work

    @router.get(
        "/v1/trades",
        tags=["data"],
        dependencies=read_auth_,
        response_model=models.TradesPage,
        responses=data_responses(paged=True),
        summary="Trades of one or several symbols (cursor-paged)",
    )
    async def trades(
        request: Request,
        symbol: OptSymbol = None,
        symbols: Symbols = None,
        start: Start = None,
        end: End = None,
        exchange: Exchange = None,
        limit: Limit = None,
        cursor: Cursor = None,
        as_of: AsOf = None,
        include_recent: IncludeRecent = None,
        format: Fmt = None,
    ) -> Any:
        """Trades of ``symbol`` (or ``symbols``, comma-separated) in (exchange_ts, exchange, symbol, trade_id)
        order, ``limit`` per page; follow ``next_cursor`` for more."""
        fmt = fmt_of(request, format)
        names = symbols_of(symbol, symbols)
        work = paged_rows(
            request, "trades", names, start, end, exchange, limit, cursor, as_of, include_recent, fmt
        )
        return await run(state, work, request)

    @router.get(
        "/v1/quotes",
        tags=["data"],
        dependencies=read_auth_,
        response_model=models.QuotesPage,
        responses=data_responses(paged=True),
        summary="Quotes (top of book) of one or several symbols (cursor-paged)",
    )
    async def quotes(
        request: Request,
        symbol: OptSymbol = None,
        symbols: Symbols = None,
        start: Start = None,
        end: End = None,
        exchange: Exchange = None,
        limit: Limit = None,
        cursor: Cursor = None,
        as_of: AsOf = None,
        include_recent: IncludeRecent = None,
        format: Fmt = None,
    ) -> Any:
        """Best bid/ask updates of ``symbol`` (or ``symbols``) in (exchange_ts, exchange, symbol, update_id)
        order, ``limit`` per page; follow ``next_cursor``."""
        fmt = fmt_of(request, format)
        names = symbols_of(symbol, symbols)
        work = paged_rows(
            request, "quotes", names, start, end, exchange, limit, cursor, as_of, include_recent, fmt
        )
        return await run(state, work, request)

    # -- replay (paged export) --------------------------------------------------------------------------

    @router.get(
        "/v1/replay",
        tags=["data"],
        dependencies=read_auth_,
        response_model=models.ReplayPage,
        responses=data_responses(paged=True),
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
        s, e, checked_as_of = check_window(settings, start, end, as_of)
        assert s is not None and e is not None
        digest = params_digest(
            {"t": table, "start": s, "end": e, "exchange": exchange, "symbol": symbol, "as_of": checked_as_of}
        )
        query = paging.PageQuery(
            "replay",
            table,
            () if symbol is None else (symbol,),
            s,
            e,
            exchange,
            page_size_of(settings, limit),
            settings.query_max_rows,
            digest,
            key_id_of(request),
        )
        payload = paging.decode_cursor(state.cursors, cursor, query)

        def work() -> StreamingResponse:
            client = state.client()
            if payload is None:
                page = bigpage.next_page(
                    client, state.cursors, query, client.snapshot_id(table, as_of=checked_as_of), None
                )
            else:
                page = bigpage.next_page(client, state.cursors, query, payload.get("snap"), payload["last"])
            return respond(
                request, fmt, page.table, {table: page.snapshot_id}, next_cursor=page.next_cursor, paged=True
            )

        return await run(state, work, request)

    return router
