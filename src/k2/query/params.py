"""Parsing and checking of query arguments: times, ranges, bar intervals, tolerances.

Every error says what was expected and what was found.

Example:
    >>> parse_time("2021-01-03T00:00:00Z").isoformat()
    '2021-01-03T00:00:00+00:00'
    >>> parse_interval("5m")
    datetime.timedelta(seconds=300)
    >>> parse_duration("500ms")
    datetime.timedelta(microseconds=500000)
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from k2.query.errors import InvalidRangeError, LimitExceededError

_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
}
_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
DAY = timedelta(days=1)


def parse_time(value: datetime | str | None, name: str = "time") -> datetime | None:
    """A timezone-aware UTC datetime from a datetime or an ISO-8601 string with an offset or ``Z``.

    >>> parse_time("2024-08-08T23:54:00+02:00").isoformat()
    '2024-08-08T21:54:00+00:00'
    >>> parse_time("2024-08-08T23:54:00")
    Traceback (most recent call last):
    ...
    k2.query.errors.InvalidRangeError: time: expected a timezone-aware time (offset or Z), found naive '2024-08-08T23:54:00'
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise InvalidRangeError(
                f"{name}: expected an ISO-8601 time such as 2024-08-08T23:54:00Z, found {value!r}"
            ) from None
        if parsed.tzinfo is None:
            raise InvalidRangeError(
                f"{name}: expected a timezone-aware time (offset or Z), found naive {value!r}"
            )
        return _to_utc(parsed, name)
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidRangeError(
                f"{name}: expected a timezone-aware datetime, found naive {value.isoformat()!r}"
            )
        return _to_utc(value, name)
    raise InvalidRangeError(
        f"{name}: expected a datetime or an ISO-8601 string, found {type(value).__name__} {value!r}"
    )


def _to_utc(value: datetime, name: str) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-05:00 is after datetime.max in UTC
        raise InvalidRangeError(
            f"{name}: expected a time between 0001-01-01 and 9999-12-31 in UTC, found {value.isoformat()!r}"
        ) from None


def check_range(start: datetime | None, end: datetime | None, max_days: float) -> None:
    """Raise when ``start`` is not before ``end`` or the range is longer than ``max_days``.

    >>> from datetime import UTC, datetime
    >>> check_range(datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC), 31)
    Traceback (most recent call last):
    ...
    k2.query.errors.InvalidRangeError: expected start before end, found start=2024-01-02T00:00:00+00:00 end=2024-01-01T00:00:00+00:00
    """
    if start is not None and end is not None:
        if start >= end:
            raise InvalidRangeError(
                f"expected start before end, found start={start.isoformat()} end={end.isoformat()}"
            )
        days = (end - start) / DAY
        if days > max_days:
            raise LimitExceededError(
                f"expected a range of at most {max_days:g} days (K2_QUERY_MAX_RANGE_DAYS), found {days:.4g} days "
                f"({start.isoformat()} to {end.isoformat()})"
            )


def parse_duration(
    value: str | timedelta | float | int,
    name: str = "tolerance",
    maximum: timedelta | None = None,
    maximum_hint: str = "",
) -> timedelta:
    """A positive duration from ``"500ms"``, ``"1s"``, ``"2m"``, ``"1h"``, ``"1d"``, a timedelta or seconds.

    With ``maximum``, longer durations are refused (``maximum_hint`` names the setting behind it). Values
    too large for a ``timedelta`` are refused the same way, never with ``OverflowError``.

    >>> parse_duration(timedelta(seconds=2))
    datetime.timedelta(seconds=2)
    >>> parse_duration("100000d", maximum=timedelta(days=366))
    Traceback (most recent call last):
    ...
    k2.query.errors.InvalidRangeError: tolerance: expected a duration from 1us to 366 days, found '100000d'
    """
    limit = (
        f"from 1us to {maximum / DAY:g} days{maximum_hint}"
        if maximum is not None
        else "of at most 999999999 days"
    )
    try:
        if isinstance(value, timedelta):
            duration = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            duration = timedelta(seconds=float(value))
        elif isinstance(value, str):
            match = _DURATION.match(value)
            if match is None:
                raise InvalidRangeError(
                    f"{name}: expected a duration like 500ms, 1s, 5m, 1h or 1d, found {value!r}"
                )
            duration = int(match.group(1)) * _UNITS[match.group(2)]
        else:
            raise InvalidRangeError(
                f"{name}: expected a duration string or timedelta, found {type(value).__name__}"
            )
    except (OverflowError, ValueError) as exc:  # beyond timedelta's range, or NaN
        if isinstance(exc, InvalidRangeError):
            raise
        raise InvalidRangeError(f"{name}: expected a duration {limit}, found {value!r}") from None
    if duration <= timedelta(0):
        raise InvalidRangeError(f"{name}: expected a positive duration, found {value!r}")
    if maximum is not None and duration > maximum:
        raise InvalidRangeError(f"{name}: expected a duration {limit}, found {value!r}")
    return duration


def parse_interval(value: str | timedelta) -> timedelta:
    """A time-bar interval between 1 s and 1 d that divides a day evenly (like Binance kline intervals).

    >>> parse_interval("1h")
    datetime.timedelta(seconds=3600)
    >>> parse_interval("7m")
    Traceback (most recent call last):
    ...
    k2.query.errors.InvalidRangeError: interval: expected a whole number of seconds from 1s to 1d that divides a day evenly (1s, 5s, 1m, 3m, 5m, 15m, 30m, 1h, 4h, 1d ...), found '7m'
    """
    if isinstance(value, str) and not _DURATION.match(value):
        raise InvalidRangeError(f"interval: expected an interval like 1s, 1m, 5m, 1h or 1d, found {value!r}")
    duration = parse_duration(value, "interval")
    micros = duration // timedelta(microseconds=1)
    if micros % 1_000_000 or not 1 <= micros // 1_000_000 <= 86_400 or 86_400 % (micros // 1_000_000):
        raise InvalidRangeError(
            "interval: expected a whole number of seconds from 1s to 1d that divides a day evenly "
            f"(1s, 5s, 1m, 3m, 5m, 15m, 30m, 1h, 4h, 1d ...), found {value!r}"
        )
    return duration
