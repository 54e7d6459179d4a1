"""The query client over the REST API: ``k2.connect(url=..., api_key=...)``.

:class:`RemoteClient` has the local client's read methods (trades, quotes, bars, vwap, twap, spread_stats,
asof_join, klines, symbols, snapshots, gaps, snapshot_id, as_of) and returns the same
:class:`~k2.query.result.QueryResult`: the body travels as an Arrow IPC stream (``format=arrow``, zstd on
the wire), so types are native (``decimal128(18, 8)``, ``timestamp[us, tz=UTC]``) and equal to the local
client's tables; snapshot ids, the hybrid-read fields and ``unknown_symbols`` come from the response headers. Paged endpoints
(trades, quotes) are walked to the end (or ``limit``), every page pinned to the first page's snapshot.

Differences from the local client, by design: ``sql()`` is not offered (the API runs no user SQL); a
remote ``trades``/``quotes`` without ``limit`` returns every row (page by page) where the local client
refuses more than ``query_max_rows``; errors arrive as the same exception classes
(``UnknownSymbolError``, ``InvalidRangeError``, ``LimitExceededError``, ``QueryError``) carrying the API's
message.

Example::

    remote = k2.connect(url="http://127.0.0.1:8000", api_key="k2_...")
    remote.bars("BTCUSDT", "1m", "2024-08-08T23:54:00Z", "2024-08-09T00:06:00Z").to_pandas()
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx
import pyarrow as pa

from k2.query.errors import InvalidRangeError, LimitExceededError, QueryError, UnknownSymbolError
from k2.query.result import QueryResult

_ERRORS: dict[str, type[Exception]] = {
    "unknown_symbol": UnknownSymbolError,
    "invalid_range": InvalidRangeError,
    "range_too_long": InvalidRangeError,
    "invalid_time": InvalidRangeError,
    "limit_exceeded": LimitExceededError,
}
_MAX_PAGE = 10_000


def _symbols(symbol: str | Sequence[str]) -> dict[str, str]:
    """``symbol=`` for one symbol, ``symbols=`` (comma-separated) for several, as the API takes them."""
    if isinstance(symbol, str):
        return {"symbols": symbol} if "," in symbol else {"symbol": symbol}
    names = list(symbol)
    return {"symbol": names[0]} if len(names) == 1 else {"symbols": ",".join(names)}


def _text(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return f"{int(value.total_seconds() * 1000)}ms"
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


class RemoteClient:
    """The query client's read methods over HTTP (see the module docstring)."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 120.0,
        as_of: Any = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._pin = as_of
        headers = {"X-API-Key": api_key, "Accept-Encoding": "zstd, gzip"}
        self._http = http or httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._owns_http = http is None

    # -- plumbing ------------------------------------------------------------------------------------
    def _get(self, path: str, params: dict[str, Any]) -> tuple[pa.Table, httpx.Response]:
        query = {k: _text(v) for k, v in params.items() if v is not None}
        if self._pin is not None and "as_of" not in query and path not in ("/v1/snapshots",):
            query["as_of"] = _text(self._pin)
        response = self._http.get(path, params={**query, "format": "arrow"})
        if response.status_code != 200:
            try:
                error = response.json()["error"]
                code, message = str(error.get("code")), str(error.get("message"))
            except (ValueError, KeyError, TypeError):
                code, message = "http_error", response.text[:500]
            raise _ERRORS.get(code, QueryError)(f"{path}: HTTP {response.status_code} {code}: {message}")
        return pa.ipc.open_stream(response.content).read_all(), response

    @staticmethod
    def _result(table: pa.Table, response: httpx.Response) -> QueryResult:
        headers = response.headers
        stopped = headers.get("x-recent-stopped-at")
        unknown = headers.get("x-unknown-symbols")
        return QueryResult(
            table,
            json.loads(headers.get("x-snapshot-ids", "{}")),
            recent_error=headers.get("x-recent-error"),
            recent_truncated=headers.get("x-recent-truncated") == "true",
            recent_truncated_reason=headers.get("x-recent-truncated-reason"),
            recent_stopped_at=json.loads(stopped) if stopped else None,
            unknown_symbols=tuple(json.loads(unknown)) if unknown else (),
        )

    def _one(self, path: str, **params: Any) -> QueryResult:
        return self._result(*self._get(path, params))

    def _walk(self, path: str, limit: int | None, **params: Any) -> QueryResult:
        tables: list[pa.Table] = []
        first: httpx.Response | None = None
        cursor: str | None = None
        while True:
            remaining = None if limit is None else limit - sum(t.num_rows for t in tables)
            page_limit = None if remaining is None else min(remaining, _MAX_PAGE)
            table, response = self._get(path, {**params, "limit": page_limit, "cursor": cursor})
            first = first or response
            tables.append(table)
            cursor = response.headers.get("x-next-cursor")
            if cursor is None or (limit is not None and sum(t.num_rows for t in tables) >= limit):
                break
        assert first is not None
        return self._result(pa.concat_tables(tables), first)

    # -- the client's methods -------------------------------------------------------------------------
    def trades(self, symbol: str | Sequence[str], start: Any = None, end: Any = None, *, exchange: str | None = None, limit: int | None = None,
               as_of: Any = None, include_recent: bool | None = None) -> QueryResult:  # fmt: skip
        """Trades of ``symbol`` in ``[start, end)`` (every page, or the first ``limit`` rows)."""
        return self._walk(
            "/v1/trades",
            limit,
            **_symbols(symbol),
            start=start,
            end=end,
            exchange=exchange,
            as_of=as_of,
            include_recent=include_recent,
        )

    def quotes(self, symbol: str | Sequence[str], start: Any = None, end: Any = None, *, exchange: str | None = None, limit: int | None = None,
               as_of: Any = None, include_recent: bool | None = None) -> QueryResult:  # fmt: skip
        """Top-of-book quotes of ``symbol`` in ``[start, end)``."""
        return self._walk(
            "/v1/quotes",
            limit,
            **_symbols(symbol),
            start=start,
            end=end,
            exchange=exchange,
            as_of=as_of,
            include_recent=include_recent,
        )

    def bars(self, symbol: str | Sequence[str], interval: str | timedelta = "1m", start: Any = None, end: Any = None, *, exchange: str | None = None,
             kind: str = "time", size: Any = None, fill_empty: bool = False, as_of: Any = None,
             include_recent: bool | None = None) -> QueryResult:  # fmt: skip
        """OHLCV bars (time, volume or tick)."""
        if isinstance(interval, timedelta):
            interval = f"{int(interval.total_seconds())}s"
        return self._one("/v1/bars", **_symbols(symbol), interval=interval, start=start, end=end, exchange=exchange, kind=kind,
                         size=None if size is None else str(size), fill_empty=fill_empty, as_of=as_of, include_recent=include_recent)  # fmt: skip

    def vwap(self, symbol: str | Sequence[str], start: Any, end: Any, *, exchange: str | None = None, as_of: Any = None,
             include_recent: bool | None = None) -> QueryResult:  # fmt: skip
        """Volume-weighted average price per (exchange, symbol) over ``[start, end)``."""
        return self._one(
            "/v1/vwap",
            **_symbols(symbol),
            start=start,
            end=end,
            exchange=exchange,
            as_of=as_of,
            include_recent=include_recent,
        )

    def twap(self, symbol: str | Sequence[str], start: Any, end: Any, *, exchange: str | None = None, as_of: Any = None,
             include_recent: bool | None = None) -> QueryResult:  # fmt: skip
        """Time-weighted average price per (exchange, symbol)."""
        return self._one(
            "/v1/twap",
            **_symbols(symbol),
            start=start,
            end=end,
            exchange=exchange,
            as_of=as_of,
            include_recent=include_recent,
        )

    def spread_stats(
        self, symbol: str, start: Any, end: Any, *, exchange: str | None = None, as_of: Any = None
    ) -> QueryResult:
        """Bid-ask spread statistics from quotes."""
        return self._one("/v1/spread", symbol=symbol, start=start, end=end, exchange=exchange, as_of=as_of)

    def asof_join(self, symbol: str, start: Any, end: Any, *, exchange: str | None = None, tolerance: str | timedelta = "1s",
                  as_of: Any = None) -> QueryResult:  # fmt: skip
        """Each trade with the quote prevailing at its time."""
        return self._one(
            "/v1/asof",
            symbol=symbol,
            start=start,
            end=end,
            exchange=exchange,
            tolerance=tolerance,
            as_of=as_of,
        )

    def klines(self, symbol: str | Sequence[str], interval: str | None = None, start: Any = None, end: Any = None, *,
               exchange: str | None = None, limit: int | None = None, as_of: Any = None) -> QueryResult:  # fmt: skip
        """Venue-published OHLCV bars (``/v1/klines``) with ``open_time`` in ``[start, end)``."""
        return self._one("/v1/klines", **_symbols(symbol), interval=interval, start=start, end=end,
                         exchange=exchange, limit=limit, as_of=as_of)  # fmt: skip

    def symbols(self, exchange: str | None = None) -> QueryResult:
        """Stored symbols with counts and time ranges."""
        return self._one("/v1/symbols", exchange=exchange)

    def snapshots(self, table: str = "trades") -> QueryResult:
        """The table's snapshots, oldest first (up to the pin, when pinned)."""
        return self._one("/v1/snapshots", table=table, as_of=self._pin)

    def gaps(
        self, status: str | None = None, exchange: str | None = None, symbol: str | None = None
    ) -> QueryResult:
        """The gap ledger."""
        return self._one("/v1/gaps", status=status, exchange=exchange, symbol=symbol)

    def snapshot_id(self, table: str = "trades", as_of: Any = None) -> int | None:
        """The snapshot id a query on ``table`` reads now (or at ``as_of``); None when the table is empty."""
        result = self._one("/v1/snapshots", table=table, as_of=as_of if as_of is not None else self._pin)
        ids = result.table["snapshot_id"].to_pylist()
        return int(ids[-1]) if ids else None

    def as_of(self, snapshot_id_or_datetime: Any) -> RemoteClient:
        """A remote client pinned to a snapshot id or a moment (every query sends ``as_of``)."""
        pinned = RemoteClient(self.url, "", as_of=snapshot_id_or_datetime, http=self._http)
        return pinned

    def sql(self, query: str, params: Any = None) -> QueryResult:
        """Not offered over the REST API (it runs no user SQL): use a local client for ``sql``."""
        raise QueryError(
            "sql: expected a local client (k2.connect() without url=), found a remote one: the REST API runs no user SQL"
        )

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> RemoteClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
