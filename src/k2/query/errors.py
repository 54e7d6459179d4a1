"""Errors of the query layer; every one is a ``ValueError`` the REST API maps to a 4xx response.

Example:
    >>> try:
    ...     raise UnknownSymbolError("expected a stored symbol, found 'NOPE'")
    ... except K2QueryError as exc:
    ...     print(exc)
    expected a stored symbol, found 'NOPE'
"""

from __future__ import annotations


class K2QueryError(ValueError):
    """Base class of the query layer's user-facing errors (bad request, not a server fault)."""


class UnknownSymbolError(K2QueryError):
    """The symbol (on the exchange, if given) is not in the table."""


class InvalidRangeError(K2QueryError):
    """A time argument is naive, unparsable or inverted, or an interval/bar parameter is invalid."""


class LimitExceededError(K2QueryError):
    """The query would return more than ``query_max_rows`` rows or spans more than ``query_max_range_days``."""


class QueryError(K2QueryError):
    """Any other invalid query: rejected SQL, unknown snapshot, unknown table, bad parameter."""


class QueryCancelledError(RuntimeError):
    """The query was interrupted through its :class:`k2.query.cancel.CancelScope` (timeout or caller).

    Not a user error: the REST API answers 504 for the request whose time ran out.
    """
