"""``GET /v1/book``: the order book of a symbol at a moment, as an ``APIRouter`` (``read`` scope).

The levels come from :func:`k2.query.book.book` via the shared query client (the same query as
``k2 book`` and ``Client.book``), run in the API's worker pool with its timeout. Prices and sizes are
JSON strings (exact decimals, never floats). Errors use the API's standard body: an unknown symbol or
no snapshot before ``at`` is 404, a bad parameter 400/422.

``include_recent`` as for ``/v1/trades``: depth rows still in Kafka are applied on top of the landed ones
(default on when ``at`` is absent or within ``query_recent_window_seconds`` of now; refused with
``as_of``). The answer carries the same hybrid-read fields and ``X-Recent-*`` headers as trades
(``recent_truncated``, ``recent_truncated_reason``, ``recent_stopped_at``, ``recent_error``); a book
built over a cut Kafka read is the book through the last row read, so it also says ``partial: true``
(``X-Partial``).

Example::

    GET /v1/book?symbol=BTCUSDT&at=2024-08-09T00:00:00Z&depth=5
    {"symbol": "BTCUSDT", "exchange": "binance", "last_update_id": 50093421289,
     "exchange_ts": "2024-08-08T23:59:59.973000+00:00", "bids": [{"price": "61685.99000000", "size": "1.38154000"}, ...], ...}
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated parameters at definition time.

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from k2.api.errors import error_responses
from k2.api.params import AsOf, IncludeRecent, check_as_of
from k2.api.respond import DATA_ERRORS, DATA_HEADERS, recent_fields, recent_headers
from k2.api.state import run

TEXT = r"^[A-Za-z0-9._:/-]+$"


def book_router(dependencies: Sequence[Any]) -> APIRouter:
    """The ``/v1/book`` router; ``dependencies`` are the app's read-scope auth dependencies."""
    router = APIRouter(tags=["data"], dependencies=list(dependencies))

    @router.get(
        "/v1/book",
        summary="Order book (top N levels per side) of a symbol at a moment",
        responses={
            200: {"description": "The book.", "headers": DATA_HEADERS},
            **error_responses(*DATA_ERRORS),
        },
    )
    async def get_book(
        request: Request,
        response: Response,
        symbol: Annotated[
            str, Query(min_length=1, max_length=64, pattern=TEXT, description="Exchange-native symbol.")
        ],
        at: Annotated[
            datetime | None, Query(description="Moment, ISO-8601 with offset (default: now).")
        ] = None,
        depth: Annotated[int, Query(ge=1, le=1000, description="Levels per side.")] = 10,
        exchange: Annotated[
            str | None, Query(min_length=1, max_length=32, pattern=TEXT, description="Venue code.")
        ] = None,
        update_id: Annotated[int | None, Query(ge=0, description="Only events up to this update id.")] = None,
        as_of: AsOf = None,
        include_recent: IncludeRecent = None,
    ) -> dict[str, Any]:
        as_of = check_as_of(as_of)
        state = request.app.state.k2
        book = await run(
            state,
            lambda: state.client().book(
                symbol,
                at,
                depth,
                exchange=exchange,
                update_id=update_id,
                as_of=as_of,
                include_recent=include_recent,
            ),
        )
        recent = recent_fields(book, aggregate=True)  # the book is built over the rows read
        response.headers.update(recent_headers(recent))
        levels = book.levels.to_pylist()

        def side(name: str) -> list[dict[str, str]]:
            return [{"price": str(r["price"]), "size": str(r["size"])} for r in levels if r["side"] == name]

        return {
            "symbol": book.symbol,
            "exchange": book.exchange,
            "last_update_id": book.last_update_id,
            "exchange_ts": book.exchange_ts.isoformat() if book.exchange_ts else None,
            "snapshot_id": book.snapshot_id,
            "bids": side("BID"),
            "asks": side("ASK"),
            **recent,
        }

    return router
