"""HTTP answers of the fake exchange's REST side (served from the WebSocket server's request hook)."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import ROUND_DOWN, Decimal
from typing import Any

import orjson
from websockets.datastructures import Headers
from websockets.http11 import Response


def json_response(status: int, body: Any, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """A JSON response (``Connection: close``) with extra ``headers``."""
    payload = orjson.dumps(body)
    reason = {
        200: "OK",
        400: "Bad Request",
        404: "Not Found",
        418: "I'm a teapot",
        429: "Too Many Requests",
    }.get(status, "Error")
    hdrs = Headers(
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("Connection", "close"),
            *headers,
        ]
    )
    return Response(status, reason, hdrs, payload)


def quote_qty(price: str, qty: str) -> str:
    """Binance's ``quoteQty``: price times quantity, cut (not rounded) to 8 decimals.

    >>> quote_qty("60000.01", "0.00012345")
    '7.40700123'
    """
    return str((Decimal(price) * Decimal(qty)).quantize(Decimal("0.00000001"), rounding=ROUND_DOWN))
