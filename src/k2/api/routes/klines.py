"""``/v1/klines``: the venue-published bars written by ``k2 import binance-klines`` (issue 12 §5).

Klines are imported directly into Iceberg and never come from Kafka, so every answer is pinnable and goes
through the result cache when its range ends in the past. One response holds at most ``query_max_rows``
klines (422 ``limit_exceeded`` beyond, or pass ``limit``): a symbol-day of one-minute klines is 1,440 rows.
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated aliases at definition time.

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from k2.api import models
from k2.api.auth import read_auth
from k2.api.cache import cached_query
from k2.api.params import (
    SHORT_TOKEN_PATTERN,
    AsOf,
    End,
    Exchange,
    Fmt,
    OptSymbol,
    Start,
    Symbols,
    check_window,
    fmt_of,
    one_or_many,
    symbols_of,
)
from k2.api.respond import as_table, data_responses, respond, snapshot_ids_of, symbol_fields
from k2.api.state import ApiState, run


def router(state: ApiState) -> APIRouter:
    """The klines route."""
    settings = state.settings
    router = APIRouter()
    Limit = Annotated[
        int | None,
        Query(ge=1, le=settings.query_max_rows, description="At most this many klines (first in order)."),
    ]

    @router.get(
        "/v1/klines",
        tags=["data"],
        dependencies=read_auth(state),
        response_model=models.KlinesResponse,
        responses=data_responses(),
        summary="Venue-published OHLCV bars (klines) of one or several symbols",
    )
    async def klines(
        request: Request,
        symbol: OptSymbol = None,
        symbols: Symbols = None,
        interval: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=8,
                pattern=SHORT_TOKEN_PATTERN,
                description="Interval as the venue names it (1m, 1h, 1d ...); every stored interval when absent.",
                examples=["1m"],
            ),
        ] = None,
        start: Start = None,
        end: End = None,
        exchange: Exchange = None,
        limit: Limit = None,
        as_of: AsOf = None,
        format: Fmt = None,
    ) -> Any:
        """Klines with ``open_time`` in [start, end), ordered by (exchange, symbol, interval, open_time)."""
        fmt = fmt_of(request, format)
        names = symbols_of(symbol, symbols)
        start, end, checked_as_of = check_window(settings, start, end, as_of)
        params = {
            "symbols": sorted(names),
            "interval": interval,
            "start": start,
            "end": end,
            "exchange": exchange,
            "limit": limit,
        }

        def work() -> StreamingResponse:
            client = state.client()
            result = cached_query(
                state.cache, client, "klines", "klines", params,
                (checked_as_of, end, False, settings.query_recent_window_seconds),
                lambda pin: client.klines(
                    one_or_many(names), interval, start, end, exchange=exchange, limit=limit, as_of=pin
                ),
            )  # fmt: skip
            return respond(
                request, fmt, as_table(result), snapshot_ids_of(result), extra=symbol_fields(result)
            )

        return await run(state, work, request)

    return router
