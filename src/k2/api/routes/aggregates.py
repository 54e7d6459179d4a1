"""Aggregate routes: ``/v1/bars``, ``/v1/vwap``, ``/v1/twap``, ``/v1/spread``, ``/v1/asof``."""

# No `from __future__ import annotations`: FastAPI must see the Annotated aliases at definition time.

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from k2.api import bigasof, models
from k2.api.auth import read_auth
from k2.api.cache import cached_query
from k2.api.errors import APIError
from k2.api.params import (
    SHORT_TOKEN_PATTERN,
    TOLERANCE_PATTERN,
    AsOf,
    End,
    Exchange,
    Fmt,
    IncludeRecent,
    OptSymbol,
    ReqEnd,
    ReqStart,
    Start,
    Symbol,
    Symbols,
    check_tolerance,
    check_window,
    fmt_of,
    one_or_many,
    symbols_of,
)
from k2.api.respond import as_table, data_responses, recent_fields, respond, snapshot_ids_of, symbol_fields
from k2.api.state import ApiState, run


def router(state: ApiState) -> APIRouter:
    """The aggregates routes."""
    settings = state.settings
    router = APIRouter()
    read_auth_ = read_auth(state)

    # -- aggregates ------------------------------------------------------------------------------------

    @router.get(
        "/v1/bars",
        tags=["data"],
        dependencies=read_auth_,
        response_model=models.BarsResponse,
        responses=data_responses(),
        summary="OHLCV bars (time, volume or tick bars)",
    )
    async def bars(
        request: Request,
        symbol: OptSymbol = None,
        symbols: Symbols = None,
        interval: Annotated[
            str,
            Query(
                min_length=1,
                max_length=16,
                pattern=SHORT_TOKEN_PATTERN,
                description="Bar length for kind=time: 1s..1d (units s, m, h, d).",
                examples=["1m"],
            ),
        ] = "1m",
        start: Start = None,
        end: End = None,
        exchange: Exchange = None,
        kind: Annotated[
            Literal["time", "volume", "tick"],
            Query(
                description="time: fixed intervals; volume: `size` base volume per bar; tick: `size` trades per bar."
            ),
        ] = "time",
        size: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=32,
                pattern=r"^[0-9]+(\.[0-9]+)?$",
                description="Bar size for kind=volume (decimal) or tick (integer).",
                examples=["10"],
            ),
        ] = None,
        fill_empty: Annotated[
            bool, Query(description="Emit empty time bars (no trades) carrying the previous close.")
        ] = False,
        as_of: AsOf = None,
        include_recent: IncludeRecent = None,
        format: Fmt = None,
    ) -> Any:
        """Bars from trades of ``symbol`` (or ``symbols``, comma-separated; one series per exchange and symbol);
        at most ``query_max_rows`` bars per request (422 ``limit_exceeded`` beyond)."""
        fmt = fmt_of(request, format)
        names = symbols_of(symbol, symbols)
        start, end, checked_as_of = check_window(settings, start, end, as_of)
        size_value: Any = size
        if size is not None and kind == "tick":
            if "." in size:
                raise APIError(
                    400,
                    "invalid_parameter",
                    f"size: expected an integer number of trades for kind=tick, found {size!r}",
                    {"parameter": "size"},
                )
            size_value = int(size)

        def work() -> StreamingResponse:
            client = state.client()
            params: dict[str, Any] = {
                "symbol": one_or_many(sorted(names)),
                "interval": interval,
                "start": start,
                "end": end,
                "exchange": exchange,
            }
            params.update({"kind": kind, "size": size_value, "fill_empty": fill_empty})
            result = cached_query(
                state.cache, client, "bars", "trades", params,
                (checked_as_of, end, include_recent, settings.query_recent_window_seconds),
                lambda pin: client.bars(
                    one_or_many(names), interval, start, end, exchange=exchange, kind=kind, size=size_value, fill_empty=fill_empty,
                    as_of=pin, include_recent=include_recent,
                ),
            )  # fmt: skip
            return respond(
                request,
                fmt,
                as_table(result),
                snapshot_ids_of(result),
                extra={**recent_fields(result, aggregate=True), **symbol_fields(result)},
            )

        return await run(state, work, request)

    def stat_endpoint(name: Literal["vwap", "twap"]) -> Callable[..., Any]:
        async def endpoint(
            request: Request,
            start: ReqStart,
            end: ReqEnd,
            symbol: OptSymbol = None,
            symbols: Symbols = None,
            exchange: Exchange = None,
            as_of: AsOf = None,
            include_recent: IncludeRecent = None,
            format: Fmt = None,
        ) -> Any:
            fmt = fmt_of(request, format)
            s, e, checked_as_of = check_window(settings, start, end, as_of)
            names = symbols_of(symbol, symbols)
            key_symbol = one_or_many(sorted(names))
            target = one_or_many(names)

            def work() -> StreamingResponse:
                client = state.client()
                fn = getattr(client, name)
                if name == "vwap":  # TWAP over an end after now depends on the clock: not cached
                    result = cached_query(
                        state.cache, client, name, "trades", {"symbol": key_symbol, "start": s, "end": e, "exchange": exchange},
                        (checked_as_of, e, include_recent, settings.query_recent_window_seconds),
                        lambda pin: fn(target, s, e, exchange=exchange, as_of=pin, include_recent=include_recent),
                    )  # fmt: skip
                else:
                    result = fn(
                        target, s, e, exchange=exchange, as_of=checked_as_of, include_recent=include_recent
                    )
                return respond(
                    request,
                    fmt,
                    as_table(result),
                    snapshot_ids_of(result),
                    extra={**recent_fields(result, aggregate=True), **symbol_fields(result)},
                )

            return await run(state, work, request)

        return endpoint

    router.get(
        "/v1/vwap",
        tags=["data"],
        dependencies=read_auth_,
        response_model=models.StatResponse,
        responses=data_responses(),
        summary="Volume-weighted average price over a range",
        description="One row per (exchange, symbol): the volume-weighted average trade price over [start, end).",
    )(stat_endpoint("vwap"))
    router.get(
        "/v1/twap",
        tags=["data"],
        dependencies=read_auth_,
        response_model=models.StatResponse,
        responses=data_responses(),
        summary="Time-weighted average price over a range",
        description="One row per (exchange, symbol): the time-weighted average trade price over [start, min(end, now)), "
        "each price weighted by how long it prevailed, starting with the last trade before start (within query_max_range_days) "
        "when there is one.",
    )(stat_endpoint("twap"))

    @router.get(
        "/v1/spread",
        tags=["data"],
        dependencies=read_auth_,
        response_model=models.SpreadResponse,
        responses=data_responses(),
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
        s, e, checked_as_of = check_window(settings, start, end, as_of)

        def work() -> StreamingResponse:
            result = state.client().spread_stats(symbol, s, e, exchange=exchange, as_of=checked_as_of)
            return respond(request, fmt, as_table(result), snapshot_ids_of(result))

        return await run(state, work, request)

    @router.get(
        "/v1/asof",
        tags=["data"],
        dependencies=read_auth_,
        response_model=models.AsofResponse,
        responses=data_responses(),
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
                min_length=2,
                max_length=12,
                pattern=TOLERANCE_PATTERN,
                description=f"Oldest quote age joined, e.g. 500ms, 1s, 2m; at most query_max_range_days={settings.query_max_range_days:g} days.",
                examples=["1s"],
            ),
        ] = "1s",
        as_of: AsOf = None,
        format: Fmt = None,
    ) -> Any:
        """Each trade with the latest quote at or before its time, no older than ``tolerance``."""
        fmt = fmt_of(request, format)
        s, e, checked_as_of = check_window(settings, start, end, as_of)
        check_tolerance(settings, tolerance)

        def work() -> StreamingResponse:
            # Large answers stream in chunks of trades joined on pinned snapshots (k2.api.bigasof).
            rows, snapshot_ids = bigasof.asof_rows(
                state.client(),
                settings.query_max_rows,
                symbol,
                s,
                e,
                exchange=exchange,
                tolerance=tolerance,
                as_of=checked_as_of,
            )
            return respond(request, fmt, rows, snapshot_ids)

        return await run(state, work, request)

    return router
