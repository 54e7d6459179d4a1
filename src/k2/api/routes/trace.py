"""``GET /v1/trace``: where one landed row came from (:meth:`k2.query.client.Client.trace`).

``/v1/trace?table=trades&id=binance:BTCUSDT:3735683259`` answers one JSON object: the row(s), the source
(Kafka topic/partition/offset and message id, or file and line), the snapshot that committed it and the
gap-ledger context. A malformed id or an unknown table is a 400 that says what was expected; an id
with no row is a 404.
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated aliases at definition time.

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from k2.api.auth import read_auth
from k2.api.errors import error_responses
from k2.api.respond import DATA_ERRORS
from k2.api.state import ApiState, run


def router(state: ApiState) -> APIRouter:
    """The trace route."""
    router = APIRouter()

    @router.get(
        "/v1/trace",
        tags=["reference"],
        dependencies=read_auth(state),
        responses={
            200: {"description": "The row, its source, the committing snapshot and adjacent gaps."},
            **error_responses(*DATA_ERRORS),
        },
        summary="Trace one landed row to its Kafka message or file line",
    )
    async def trace(
        request: Request,
        table: Annotated[
            Literal["trades", "quotes", "book_deltas"], Query(description="Table of the row.")
        ] = "trades",
        id: Annotated[
            str, Query(max_length=300, description="EXCHANGE:SYMBOL:ID, e.g. binance:BTCUSDT:3735683259.")
        ] = "",
    ) -> Any:
        """One row's lineage: source message or file line, committing snapshot (with its Kafka offsets), gaps."""

        def work() -> JSONResponse:
            return JSONResponse(state.client().trace(table, id).to_dict())

        return await run(state, work, request)

    return router
