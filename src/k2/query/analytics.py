"""Analytics: bars (time, volume, tick), VWAP, TWAP, spread statistics and the trade/quote as-of join.

The third room of the query client; each method composes :class:`k2.query.sqlbuild.SqlBuilder` sources into
one DuckDB statement (constant fragments, bound values). See :mod:`k2.query` for columns and types.

Example::

    client.bars("BTCUSDT", "1m", "2024-08-08T23:54:00Z", "2024-08-09T00:06:00Z")
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from k2.model import to_unscaled
from k2.query.errors import (
    InvalidRangeError,
    LimitExceededError,
)
from k2.query.params import parse_duration, parse_interval
from k2.query.resolve import AsOf
from k2.query.result import QueryResult
from k2.query.sqlbuild import _VWAP_EXACT, SqlBuilder, Symbols, _micros, _to_decimal, units


class Analytics(SqlBuilder):
    """Bars and the aggregate analytics over trades and quotes."""

    # -- bars ------------------------------------------------------------------------------------------
    _BAR_AGGREGATES = (
        "arg_min(price, (exchange_ts, trade_id)) AS open, max(price) AS high, min(price) AS low, "
        "arg_max(price, (exchange_ts, trade_id)) AS close, CAST(sum(quantity) AS DECIMAL(38,8)) AS volume, "
        "CAST(sum(coalesce(quote_quantity, CAST(price AS DECIMAL(38,8)) * quantity)) AS DECIMAL(38,8)) AS quote_volume, "
        # aggTrades rows (exchange <venue>-agg) stand for last - first + 1 trades (ids kept in vendor), as klines count.
        "CAST(sum(coalesce(TRY_CAST(map_extract(vendor, 'last_trade_id')[1] AS BIGINT) - TRY_CAST(map_extract(vendor, 'first_trade_id')[1] AS BIGINT) + 1, 1)) AS BIGINT) AS trade_count, "
        "CAST(coalesce(sum(quantity) FILTER (WHERE side = 'BUY'), 0) AS DECIMAL(38,8)) AS taker_buy_base_volume, "
        "CAST(coalesce(sum(coalesce(quote_quantity, CAST(price AS DECIMAL(38,8)) * quantity)) FILTER (WHERE side = 'BUY'), 0) AS DECIMAL(38,8)) AS taker_buy_quote_volume, "
        f"{_VWAP_EXACT} AS vwap, "
        "min(coalesce(TRY_CAST(map_extract(vendor, 'first_trade_id')[1] AS BIGINT), trade_id)) AS first_trade_id, "
        "max(coalesce(TRY_CAST(map_extract(vendor, 'last_trade_id')[1] AS BIGINT), trade_id)) AS last_trade_id"
    )
    _BAR_COLUMNS = (
        "exchange, symbol, open_time, open, high, low, close, volume, close_time, quote_volume, trade_count, "
        "taker_buy_base_volume, taker_buy_quote_volume, vwap, first_trade_id, last_trade_id"
    )

    # long: one SQL statement assembled from its options (interval, VWAP, as_of, hybrid); split next.
    def bars(
        self,
        symbol: Symbols,
        interval: str | timedelta = "1m",
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        *,
        exchange: str | None = None,
        kind: str = "time",
        size: Any = None,
        fill_empty: bool = False,
        as_of: AsOf | None = None,
        include_recent: bool | None = None,
    ) -> QueryResult:
        """OHLCV bars with Binance kline fields and rules (time bars), or volume / tick bars.

        Time bars: bucket ``[t, t+interval)`` on trade time, ``t`` a multiple of the interval since the
        epoch (UTC); open/close are the first/last trade by (time, trade id); ``close_time`` is
        ``open_time + interval - 1 ms`` as in Binance klines; taker-buy volumes sum trades whose buyer was
        not the maker (side BUY); ``quote_volume`` sums each trade's quote quantity (price x quantity when
        absent). ``fill_empty`` adds bars for intervals without trades (between ``start`` and ``end``, or
        the first and last bar) with open=high=low=close = the previous close and zero volumes.

        Volume bars (``kind="volume"``, ``size`` = base volume): boundaries at multiples of ``size`` of
        the cumulative volume since the range start; a trade belongs to the bar in which its cumulative
        volume starts (trades are never split). Tick bars (``kind="tick"``, ``size`` = trades per bar).
        For both, ``open_time``/``close_time`` are the first/last trade times; the last bar may be partial.

        Example::

            client.bars("BTCUSDT", "1m", "2021-01-03T00:00:00Z", "2021-01-03T00:01:00Z").to_pylist()[0]["trade_count"]
        """
        if kind not in ("time", "volume", "tick"):
            raise InvalidRangeError(f"kind: expected 'time', 'volume' or 'tick', found {kind!r}")
        s, e = self._range(start, end)
        params: list[Any]
        if kind == "time":
            if size is not None:
                raise InvalidRangeError(f"size: expected None for time bars (use interval), found {size!r}")
            step = parse_interval(interval)
            step_us = step // timedelta(microseconds=1)
            if (
                fill_empty
                and s is not None
                and e is not None
                and (e - s) / step > self.settings.query_max_rows
            ):
                raise LimitExceededError(
                    f"expected at most {self.settings.query_max_rows:,} bars (K2_QUERY_MAX_ROWS), found {(e - s) / step:,.0f} intervals"
                )
            source = self._source("trades", symbol, exchange, s, e, as_of, include_recent)
            sql = (
                f"WITH src AS ({source.sql}), agg AS (SELECT exchange, symbol, epoch_us(exchange_ts) // ? AS bucket, "  # noqa: S608 - constant fragments
                f"{self._BAR_AGGREGATES} FROM src GROUP BY exchange, symbol, bucket)"
            )
            params = [*source.params, step_us]
            if fill_empty:
                # Buckets whose open time lies in [start, end): floor(start / step) .. ceil(end / step) - 1.
                lo = None if s is None else _micros(s) // step_us
                hi = None if e is None else -(-_micros(e) // step_us)
                sql += (
                    ", span AS (SELECT exchange, symbol, coalesce(?::BIGINT, min(bucket)) AS lo, coalesce(?::BIGINT, max(bucket) + 1) AS hi "
                    "FROM agg GROUP BY exchange, symbol), "
                    "grid AS (SELECT exchange, symbol, unnest(range(lo, hi)) AS bucket FROM span), "
                    "joined AS (SELECT g.exchange, g.symbol, g.bucket, a.* EXCLUDE (exchange, symbol, bucket), "
                    "last_value(a.close IGNORE NULLS) OVER (PARTITION BY g.exchange, g.symbol ORDER BY g.bucket "
                    "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS prev_close "
                    "FROM grid g LEFT JOIN agg a ON a.exchange = g.exchange AND a.symbol = g.symbol AND a.bucket = g.bucket), "
                    "filled AS (SELECT exchange, symbol, bucket, coalesce(open, prev_close) AS open, coalesce(high, prev_close) AS high, "
                    "coalesce(low, prev_close) AS low, coalesce(close, prev_close) AS close, coalesce(volume, 0) AS volume, "
                    "coalesce(quote_volume, 0) AS quote_volume, coalesce(trade_count, 0) AS trade_count, "
                    "coalesce(taker_buy_base_volume, 0) AS taker_buy_base_volume, coalesce(taker_buy_quote_volume, 0) AS taker_buy_quote_volume, "
                    "vwap, first_trade_id, last_trade_id FROM joined) "
                )
                params += [lo, hi]
                body = "filled"
            else:
                body = "agg"
            sql += (
                f" SELECT * EXCLUDE (bucket) FROM (SELECT exchange, symbol, make_timestamp(bucket * ?)::TIMESTAMPTZ AS open_time, "  # noqa: S608 - constant fragments
                f"make_timestamp(bucket * ? + ? - 1000)::TIMESTAMPTZ AS close_time, * EXCLUDE (exchange, symbol) FROM {body}) "
                "ORDER BY exchange, symbol, open_time"
            )
            params += [step_us, step_us, step_us]
        else:
            if fill_empty:
                raise InvalidRangeError(
                    f"fill_empty: expected False for {kind} bars (they have no empty intervals), found True"
                )
            if size is None:
                raise InvalidRangeError(
                    f"size: expected the {'base volume' if kind == 'volume' else 'trade count'} per bar, found None"
                )
            if kind == "tick":
                if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
                    raise InvalidRangeError(
                        f"size: expected a positive whole number of trades per bar, found {size!r}"
                    )
                key, key_params = "(rn - 1) // ?", [size]
            else:
                key, key_params = "(cum - qty_units) // ?", [to_unscaled(str(_to_decimal(size, "size")))]
            source = self._source("trades", symbol, exchange, s, e, as_of, include_recent)
            sql = (
                f"WITH src AS ({source.sql}), seq AS (SELECT *, {units('quantity')} AS qty_units, "  # noqa: S608 - constant fragments
                f"row_number() OVER w AS rn, sum({units('quantity')}) OVER w AS cum FROM src "
                "WINDOW w AS (PARTITION BY exchange, symbol ORDER BY exchange_ts, trade_id ROWS UNBOUNDED PRECEDING)), "
                f"keyed AS (SELECT *, {key} AS bucket FROM seq) "
                f"SELECT exchange, symbol, min(exchange_ts) AS open_time, {self._BAR_AGGREGATES.replace('AS vwap, ', 'AS vwap, max(exchange_ts) AS close_time, ')} "
                "FROM keyed GROUP BY exchange, symbol, bucket ORDER BY exchange, symbol, open_time, first_trade_id"
            )
            params = [*source.params, *key_params]
        table = self._execute(sql, params, source.register, query="bars")
        unknown = self._unknown_symbols(source, symbol, exchange, table)
        if table.num_rows > self.settings.query_max_rows:
            raise LimitExceededError(
                f"expected at most {self.settings.query_max_rows:,} bars (K2_QUERY_MAX_ROWS), found {table.num_rows:,}"
            )
        return self._result(table.select(self._BAR_COLUMNS.split(", ")), [source], unknown)

    # -- analytics --------------------------------------------------------------------------------------
    def vwap(
        self,
        symbol: Symbols,
        start: datetime | str,
        end: datetime | str,
        *,
        exchange: str | None = None,
        as_of: AsOf | None = None,
        include_recent: bool | None = None,
    ) -> QueryResult:
        """Volume-weighted average price over ``[start, end)``: sum(price x qty) / sum(qty), per exchange.

        Columns: exchange, symbol, vwap (exact ``decimal(18,8)``: sum(price x qty) / sum(qty) rounded half up to
        8 decimals in integer arithmetic), volume, notional (exact), trade_count, first_ts, last_ts.
        ``symbol`` may be a list: one row per (exchange, symbol).

        Example::

            client.vwap("BTCUSDT", "2024-08-08T23:54:00Z", "2024-08-09T00:06:00Z")["vwap"][0]
        """
        s, e = self._range(start, end, required=True)
        source = self._source("trades", symbol, exchange, s, e, as_of, include_recent)
        sql = (
            f"WITH src AS ({source.sql}) SELECT exchange, symbol, {_VWAP_EXACT} AS vwap, "  # noqa: S608 - constant fragments
            "CAST(sum(quantity) AS DECIMAL(38,8)) AS volume, sum(CAST(price AS DECIMAL(38,8)) * quantity) AS notional, count(*) AS trade_count, "
            "min(exchange_ts) AS first_ts, max(exchange_ts) AS last_ts FROM src GROUP BY exchange, symbol ORDER BY exchange, symbol"
        )
        table = self._execute(sql, source.params, source.register, query="vwap")
        return self._result(table, [source], self._unknown_symbols(source, symbol, exchange, table))

    def twap(
        self,
        symbol: Symbols,
        start: datetime | str,
        end: datetime | str,
        *,
        exchange: str | None = None,
        as_of: AsOf | None = None,
        include_recent: bool | None = None,
    ) -> QueryResult:
        """Time-weighted average price over ``[start, min(end, now))``: each price weighted by how long it prevailed.

        The price prevailing at ``start`` is the last trade before it (by time, then trade id) within the
        ``query_max_range_days`` before ``start``; it holds from ``start`` until the first trade in the window.
        Each trade's price then holds until the next trade, the last one until the window end. Without an
        earlier trade, the average starts at the first trade in the window. One row per (exchange, symbol)
        with a trade in the window or a prevailing price. Columns: exchange, symbol, twap (double),
        trade_count (trades in the window), first_ts, last_ts (of those trades), seconds (time weighted),
        prevailing_price, prevailing_ts (the trade before ``start``; null when none).

        Example::

            client.twap("BTCUSDT", "2024-08-08T23:54:00Z", "2024-08-09T00:06:00Z")["twap"][0]
        """
        s, e = self._range(start, end, required=True)
        assert s is not None and e is not None
        stop = min(e, datetime.now(UTC))
        try:
            lookback = s - timedelta(days=self.settings.query_max_range_days)
        except OverflowError:
            lookback = datetime.min.replace(tzinfo=UTC)
        # One scan (and one Kafka read when hybrid) covers the lookback and the window; SQL splits them at start.
        source = self._source("trades", symbol, exchange, lookback, e, as_of, include_recent)
        sql = (
            f"WITH src AS ({source.sql}), "  # noqa: S608 - constant fragments
            "prev AS (SELECT exchange, symbol, arg_max(price, (exchange_ts, trade_id)) AS price, max(exchange_ts) AS ts "
            "FROM src WHERE exchange_ts < ?::TIMESTAMPTZ GROUP BY exchange, symbol), "
            "pts AS (SELECT exchange, symbol, price, ?::TIMESTAMPTZ AS exchange_ts, 0 AS is_trade, NULL::BIGINT AS trade_id FROM prev "
            "UNION ALL SELECT exchange, symbol, price, exchange_ts, 1, trade_id FROM src WHERE exchange_ts >= ?::TIMESTAMPTZ), "
            "w AS (SELECT *, greatest(epoch_us(coalesce(lead(exchange_ts) OVER (PARTITION BY exchange, symbol "
            "ORDER BY exchange_ts, is_trade, trade_id), ?::TIMESTAMPTZ)) - epoch_us(exchange_ts), 0) AS dur FROM pts), "
            "agg AS (SELECT exchange, symbol, CASE WHEN sum(dur) > 0 THEN CAST(sum(price * dur) AS DOUBLE) / sum(dur) "
            "ELSE CAST(arg_max(price, (exchange_ts, is_trade, trade_id)) AS DOUBLE) END AS twap, "
            "count(*) FILTER (WHERE is_trade = 1) AS trade_count, min(exchange_ts) FILTER (WHERE is_trade = 1) AS first_ts, "
            "max(exchange_ts) FILTER (WHERE is_trade = 1) AS last_ts, sum(dur) / 1e6 AS seconds FROM w GROUP BY exchange, symbol) "
            "SELECT agg.*, prev.price AS prevailing_price, prev.ts AS prevailing_ts FROM agg "
            "LEFT JOIN prev ON prev.exchange = agg.exchange AND prev.symbol = agg.symbol ORDER BY agg.exchange, agg.symbol"
        )
        table = self._execute(sql, [*source.params, s, s, s, stop], source.register, query="twap")
        return self._result(table, [source], self._unknown_symbols(source, symbol, exchange, table))

    def spread_stats(
        self,
        symbol: str,
        start: datetime | str,
        end: datetime | str,
        *,
        exchange: str | None = None,
        as_of: AsOf | None = None,
    ) -> QueryResult:
        """Bid-ask spread statistics from quotes in ``[start, end)`` (quotes with both sides > 0).

        Columns: exchange, symbol, quote_count, mean_spread, median_spread, min_spread, max_spread,
        time_weighted_spread (each quote weighted by how long it stood, the last until ``end``),
        mean_spread_bps ((ask - bid) / mid x 10,000, averaged), crossed_count (ask < bid), locked_count
        (ask = bid), first_ts, last_ts.

        Example::

            client.spread_stats("BTCUSDT", "2024-08-08T23:54:00Z", "2024-08-09T00:06:00Z")
        """
        s, e = self._range(start, end, required=True)
        source = self._source("quotes", symbol, exchange, s, e, as_of, False)
        sql = (
            f"WITH src AS ({source.sql}), q AS (SELECT exchange, symbol, exchange_ts, ask_price - bid_price AS spread, "  # noqa: S608 - constant fragments
            "(CAST(ask_price AS DECIMAL(38,8)) + bid_price) * 0.5 AS mid, "
            "epoch_us(coalesce(lead(exchange_ts) OVER (PARTITION BY exchange, symbol ORDER BY exchange_ts, update_id), ?::TIMESTAMPTZ)) "
            "- epoch_us(exchange_ts) AS dur FROM src WHERE bid_price > 0 AND ask_price > 0) "
            "SELECT exchange, symbol, count(*) AS quote_count, CAST(avg(spread) AS DOUBLE) AS mean_spread, "
            "CAST(median(spread) AS DOUBLE) AS median_spread, min(spread) AS min_spread, max(spread) AS max_spread, "
            "CASE WHEN sum(dur) > 0 THEN CAST(sum(spread * dur) AS DOUBLE) / sum(dur) END AS time_weighted_spread, "
            "avg(CAST(spread AS DOUBLE) / CAST(mid AS DOUBLE)) * 10000 AS mean_spread_bps, "
            "count(*) FILTER (WHERE spread < 0) AS crossed_count, count(*) FILTER (WHERE spread = 0) AS locked_count, "
            "min(exchange_ts) AS first_ts, max(exchange_ts) AS last_ts FROM q GROUP BY exchange, symbol ORDER BY exchange, symbol"
        )
        table = self._execute(sql, [*source.params, e], source.register, query="spread_stats")
        if table.num_rows == 0:
            self._check_symbol(source, symbol, exchange)
        return self._result(table, [source])

    def asof_join(
        self,
        symbol: str,
        start: datetime | str,
        end: datetime | str,
        *,
        exchange: str | None = None,
        tolerance: str | timedelta = "1s",
        as_of: AsOf | None = None,
        quotes_as_of: AsOf | None = None,
        after: Sequence[Any] | None = None,
        upto: Sequence[Any] | None = None,
    ) -> QueryResult:
        """Each trade in ``[start, end)`` with the quote prevailing at its time (latest quote at or before it,
        at most ``tolerance`` old; otherwise null quote columns): the transaction-cost-analysis join.
        ``tolerance`` is positive and at most ``query_max_range_days`` days (else :class:`InvalidRangeError`).

        Columns: exchange, symbol, trade_id, exchange_ts, price, quantity, side, quote_ts, bid_price,
        bid_size, ask_price, ask_size, mid = (bid + ask) / 2 and spread = ask - bid (exact),
        effective_spread = 2 x |price - mid| (exact), effective_spread_bps (double), quote_age_us.
        Quotes with the same time keep the highest update id.

        Chunks (``k2.api.bigasof``): ``quotes_as_of`` pins the quotes instead of ``as_of`` (see
        :meth:`asof_snapshots`); ``after`` / ``upto`` keep the trades whose key ``[exchange_ts in µs, exchange,
        symbol, trade_id]`` is after / at most theirs. Quotes are read from ``tolerance`` before the chunk's
        first trade (an older one could only give null quote columns): each row equals the whole join's.

        Example::

            client.asof_join("BTCUSDT", "2024-08-08T23:54:00Z", "2024-08-08T23:55:00Z", tolerance="500ms")
        """
        s, e = self._range(start, end, required=True)
        assert s is not None
        # The quotes scanned span (end - start) + tolerance, so the tolerance is bounded like a range.
        tol = parse_duration(
            tolerance,
            "tolerance",
            maximum=timedelta(days=self.settings.query_max_range_days),
            maximum_hint=" (K2_QUERY_MAX_RANGE_DAYS)",
        )
        tol_us = tol // timedelta(microseconds=1)
        if after is not None:  # a chunk: its trades' time range, the key bounds applied below
            s = max(s, _EPOCH + timedelta(microseconds=int(after[0])))
        if upto is not None and e is not None:
            e = min(e, _EPOCH + timedelta(microseconds=int(upto[0]) + 1))
        try:
            quotes_from = s - tol
        except OverflowError:  # a start near year 1: every earlier quote qualifies
            quotes_from = datetime.min.replace(tzinfo=UTC)
        trades = self._source("trades", symbol, exchange, s, e, as_of, False)
        quote_pin = self._asof_quote_pin(as_of) if quotes_as_of is None else quotes_as_of
        quotes = self._source("quotes", symbol, exchange, quotes_from, e, quote_pin, False)
        keys, key_params = _key_filter(after, upto)
        fetch = self.settings.query_max_rows + 1
        sql = (
            f"WITH t AS (SELECT * FROM ({trades.sql}) WHERE {keys}), q AS (SELECT * FROM ({quotes.sql}) "  # noqa: S608 - constant fragments
            "QUALIFY row_number() OVER (PARTITION BY exchange, symbol, exchange_ts ORDER BY update_id DESC) = 1), "
            "j AS (SELECT t.exchange, t.symbol, t.trade_id, t.exchange_ts, t.price, t.quantity, t.side, "
            "q.exchange_ts AS q_ts, q.bid_price AS q_bid, q.bid_size AS q_bid_size, q.ask_price AS q_ask, q.ask_size AS q_ask_size, "
            "q.exchange_ts IS NOT NULL AND epoch_us(t.exchange_ts) - epoch_us(q.exchange_ts) <= ? AS ok "
            "FROM t ASOF LEFT JOIN q ON t.exchange = q.exchange AND t.symbol = q.symbol AND t.exchange_ts >= q.exchange_ts) "
            "SELECT exchange, symbol, trade_id, exchange_ts, price, quantity, side, "
            "CASE WHEN ok THEN q_ts END AS quote_ts, CASE WHEN ok THEN q_bid END AS bid_price, "
            "CASE WHEN ok THEN q_bid_size END AS bid_size, CASE WHEN ok THEN q_ask END AS ask_price, "
            "CASE WHEN ok THEN q_ask_size END AS ask_size, CASE WHEN ok THEN (CAST(q_bid AS DECIMAL(38,8)) + q_ask) * 0.5 END AS mid, "
            "CASE WHEN ok THEN q_ask - q_bid END AS spread, CASE WHEN ok THEN abs(2 * price - q_bid - q_ask) END AS effective_spread, "
            "CASE WHEN ok AND q_bid + q_ask > 0 THEN CAST(abs(2 * price - q_bid - q_ask) AS DOUBLE) / CAST((CAST(q_bid AS DECIMAL(38,8)) + q_ask) * 0.5 AS DOUBLE) * 10000 END "
            "AS effective_spread_bps, CASE WHEN ok THEN epoch_us(exchange_ts) - epoch_us(q_ts) END AS quote_age_us "
            "FROM j ORDER BY exchange_ts, exchange, trade_id LIMIT ?"
        )
        params = [*trades.params, *key_params, *quotes.params, tol_us, fetch]
        table = self._execute(sql, params, query="asof_join")
        if table.num_rows > self.settings.query_max_rows:
            raise LimitExceededError(
                f"expected at most {self.settings.query_max_rows:,} trades (K2_QUERY_MAX_ROWS), found more"
            )
        if table.num_rows == 0:
            self._check_symbol(trades, symbol, exchange)
        return self._result(table, [trades, quotes])

    def _asof_quote_pin(self, as_of: AsOf | None) -> AsOf | None:
        # A snapshot id (of trades, usually) pins the quotes at that snapshot's commit time.
        if as_of is not None and isinstance(self._normalise_as_of(as_of), int):
            return self._snapshot_owner_time(int(self._normalise_as_of(as_of)))  # type: ignore[arg-type]
        return as_of

    def asof_snapshots(self, as_of: AsOf | None = None) -> dict[str, int | None]:
        """The trades and quotes snapshot ids :meth:`asof_join` reads now (or at ``as_of``); None for an
        empty table. ``asof_join(as_of=ids["trades"], quotes_as_of=ids["quotes"])`` reads them again.

        Example::

            ids = client.asof_snapshots()
        """
        trades = self._resolve("trades", as_of).snapshot_id
        return {"trades": trades, "quotes": self._resolve("quotes", self._asof_quote_pin(as_of)).snapshot_id}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _key_filter(after: Sequence[Any] | None, upto: Sequence[Any] | None) -> tuple[str, list[Any]]:
    """Trades after ``after`` and up to ``upto`` (sort keys [µs, exchange, symbol, trade_id]; None: no bound)."""
    clauses, params = ["true"], []
    for key, strict, eq in ((after, ">", ">"), (upto, "<", "<=")):
        if key is None:
            continue
        ts = _EPOCH + timedelta(microseconds=int(key[0]))
        clauses.append(
            f"(exchange_ts {strict} ? OR (exchange_ts = ? AND (exchange {strict} ? OR (exchange = ? AND "
            f"(symbol {strict} ? OR (symbol = ? AND trade_id {eq} ?))))))"
        )
        ex, sym = str(key[1]), str(key[2])
        params += [ts, ts, ex, ex, sym, sym, int(key[3])]
    return " AND ".join(clauses), params
