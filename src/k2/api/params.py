"""Request parameters: the shared ``Query`` declarations (symbol, times, as_of, format, cursor...) and the
checks every data endpoint applies (times with offsets, ranges within ``query_max_range_days``, as_of).
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated aliases at definition time.

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import Query, Request

from k2.api.errors import APIError
from k2.api.formats import Format, negotiate
from k2.config import Settings
from k2.lake.tags import TAG_NAME, TAG_PREFIX
from k2.query.client import MAX_SYMBOLS
from k2.query.errors import InvalidRangeError
from k2.query.params import parse_duration

# Times outside this window are refused with 400 (market data K2 stores lies well inside it).
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(2200, 1, 1, tzinfo=UTC)
MAX_SNAPSHOT_ID = 2**63 - 1
SYMBOL_MAX_LENGTH = 64

# Printable text without control characters: what every free-text parameter must look like.
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]+$"
TOPIC_PATTERN = r"^[A-Za-z0-9._-]+$"
CURSOR_PATTERN = r"^[A-Za-z0-9_.-]+$"
SHORT_TOKEN_PATTERN = r"^[A-Za-z0-9.]+$"
TOLERANCE_PATTERN = r"^[0-9]{1,9}(ms|s|m|h|d)$"


# -- parameter checks -------------------------------------------------------------------------------


def check_time(name: str, value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise APIError(
            400,
            "invalid_time",
            f"{name}: expected an ISO-8601 time with an offset or Z, found {value.isoformat()!r} (no offset)",
            {"parameter": name},
        )
    if not MIN_TIME <= value < MAX_TIME:
        raise APIError(
            400,
            "invalid_time",
            f"{name}: expected a time between {MIN_TIME.isoformat()} and {MAX_TIME.isoformat()}, found {value.isoformat()!r}",
            {"parameter": name},
        )
    return value.astimezone(UTC)


def check_range(settings: Settings, start: datetime | None, end: datetime | None) -> None:
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


def check_as_of(value: int | datetime | str | None) -> int | datetime | str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return check_time("as_of", value)
    if isinstance(value, str):
        # A query string is always text: the str branch of the union also receives ids and times.
        text = value.strip()
        if text.isdigit():
            return check_as_of(int(text))
        if not text.startswith(TAG_PREFIX):
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                parsed = None
            if parsed is not None:
                return check_as_of(parsed)
        if not text.startswith(TAG_PREFIX) or not TAG_NAME.fullmatch(text.removeprefix(TAG_PREFIX)):
            raise APIError(
                400,
                "invalid_as_of",
                f"as_of: expected a snapshot id, tag:NAME or an ISO-8601 time with an offset, found {value[:120]!r}",
                {"parameter": "as_of"},
            )
        return value
    if not 0 <= value <= MAX_SNAPSHOT_ID:
        raise APIError(
            400,
            "invalid_as_of",
            f"as_of: expected a snapshot id 0..{MAX_SNAPSHOT_ID} or an ISO-8601 time, found {value}",
            {"parameter": "as_of"},
        )
    return value


def check_window(
    settings: Settings, start: datetime | None, end: datetime | None, as_of: int | datetime | str | None
) -> tuple[datetime | None, datetime | None, int | datetime | str | None]:
    """The checks every data endpoint applies to its time window and ``as_of``, in one place."""
    start, end = check_time("start", start), check_time("end", end)
    check_range(settings, start, end)
    return start, end, check_as_of(as_of)


def check_tolerance(settings: Settings, value: str) -> None:
    # The query client enforces the same bound (InvalidRangeError); checking here answers before any work.
    if (
        re.match(TOLERANCE_PATTERN, value) is None
    ):  # the Query pattern already refused it; kept for direct callers
        raise APIError(
            400,
            "invalid_parameter",
            f"tolerance: expected a duration like 500ms, 1s or 2m, found {value!r}",
            {"parameter": "tolerance"},
        )
    try:
        parse_duration(
            value,
            "tolerance",
            maximum=timedelta(days=settings.query_max_range_days),
            maximum_hint=" (query_max_range_days)",
        )
    except InvalidRangeError as exc:
        raise APIError(
            400,
            "invalid_parameter",
            str(exc),
            {"parameter": "tolerance", "max_seconds": settings.query_max_range_days * 86400},
        ) from None


def symbols_of(symbol: str | None, symbols: str | None) -> list[str]:
    """The symbols a request names: ``symbol=`` (one) or ``symbols=`` (comma-separated), exactly one of them.

    Repeats are dropped (order kept); 400 ``invalid_parameter`` says why a value is refused.

    >>> symbols_of(None, "BTCUSDT, ETHUSDT,BTCUSDT"), symbols_of("BTCUSDT", None)
    (['BTCUSDT', 'ETHUSDT'], ['BTCUSDT'])
    """
    if symbol is not None and symbols is not None:
        raise APIError(
            400,
            "invalid_parameter",
            "symbol, symbols: expected one of symbol=BTCUSDT or symbols=BTCUSDT,ETHUSDT, found both",
            {"parameter": "symbols"},
        )
    if symbols is None:
        if symbol is None:
            raise APIError(
                400,
                "invalid_parameter",
                "symbol: expected symbol=BTCUSDT or symbols=BTCUSDT,ETHUSDT, found neither",
                {"parameter": "symbol"},
            )
        return [symbol]
    names = [part.strip() for part in symbols.split(",")]
    for position, name in enumerate(names, 1):
        if not name or len(name) > SYMBOL_MAX_LENGTH:
            found = "an empty name" if not name else f"{len(name)} characters"
            raise APIError(
                400,
                "invalid_parameter",
                f"symbols: expected comma-separated symbols of 1..{SYMBOL_MAX_LENGTH} characters such as "
                f"BTCUSDT,ETHUSDT, found {found} at position {position}",
                {"parameter": "symbols", "position": position},
            )
    unique = list(dict.fromkeys(names))
    if len(unique) > MAX_SYMBOLS:
        raise APIError(
            400,
            "invalid_parameter",
            f"symbols: expected at most {MAX_SYMBOLS} symbols per request, found {len(unique)}",
            {"parameter": "symbols", "max_symbols": MAX_SYMBOLS, "found": len(unique)},
        )
    return unique


def one_or_many(names: list[str]) -> str | list[str]:
    """What the query client takes: the symbol itself when there is one, else the list."""
    return names[0] if len(names) == 1 else names


def page_size_of(settings: Settings, limit: int | None) -> int:
    return limit or min(settings.api_page_size, settings.query_max_rows)


# -- shared parameter declarations ---------------------------------------------------------------
Symbol = Annotated[
    str,
    Query(
        min_length=1,
        max_length=64,
        pattern=TEXT_PATTERN,
        description="Exchange-native symbol.",
        examples=["BTCUSDT"],
    ),
]
OptSymbol = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=64,
        pattern=TEXT_PATTERN,
        description="Exchange-native symbol.",
        examples=["BTCUSDT"],
    ),
]
Symbols = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=(SYMBOL_MAX_LENGTH + 1) * MAX_SYMBOLS * 2,
        pattern=TEXT_PATTERN,
        description=f"Several symbols, comma-separated (at most {MAX_SYMBOLS}); instead of `symbol`.",
        examples=["BTCUSDT,ETHUSDT"],
    ),
]
Exchange = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=32,
        pattern=TEXT_PATTERN,
        description="Venue code (all venues when absent).",
        examples=["binance"],
    ),
]
Start = Annotated[
    datetime | None,
    Query(
        description="Inclusive start, ISO-8601 with offset (between 1970 and 2200).",
        examples=["2024-08-08T23:54:00Z"],
    ),
]
End = Annotated[
    datetime | None,
    Query(description="Exclusive end, ISO-8601 with offset.", examples=["2024-08-09T00:06:00Z"]),
]
ReqStart = Annotated[
    datetime, Query(description="Inclusive start, ISO-8601 with offset.", examples=["2024-08-08T23:54:00Z"])
]
ReqEnd = Annotated[
    datetime, Query(description="Exclusive end, ISO-8601 with offset.", examples=["2024-08-09T00:06:00Z"])
]
AsOf = Annotated[
    int | datetime | str | None,
    Query(
        description="Time travel: an Iceberg snapshot id (see /v1/snapshots), tag:NAME (an Iceberg tag, "
        "`k2 tag list`) or an ISO-8601 time (the latest snapshot committed at or before it).",
        examples=["2024-08-09T00:10:00Z"],
    ),
]
IncludeRecent = Annotated[
    bool | None,
    Query(
        description="Add rows still in Kafka (not yet in Iceberg). Default: on when the range ends within "
        "query_recent_window_seconds of now. Not allowed with as_of."
    ),
]
Fmt = Annotated[
    Literal["json", "csv", "parquet", "arrow"] | None,
    Query(alias="format", description="Response format; overrides the Accept header."),
]
Cursor = Annotated[
    str | None,
    Query(
        min_length=1, max_length=4096, pattern=CURSOR_PATTERN, description="next_cursor of the previous page."
    ),
]


def fmt_of(request: Request, format_param: str | None) -> Format:
    return negotiate(format_param, request.headers.get("accept"))


def pinned(client: Any, as_of: int | datetime | str | None) -> Any:
    return client if as_of is None else client.as_of(as_of)
