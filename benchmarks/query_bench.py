"""Query-layer benchmark: K2's client vs the same query run directly in DuckDB ``iceberg_scan``, same table, same run.

Data (generated once under ``benchmarks/data/query-<N>/``, gitignored; ``--rebuild`` regenerates):
``--trades`` trades (default 50M) over ``--symbols`` symbols and ``--days`` days, built from real price paths:
each symbol-day replays the real per-minute BTCUSDT klines of ``/work/shared/data/.../BTCUSDT-1m-2024-09-21.csv``
(returns bootstrapped in blocks of an hour and scaled to the symbol's price level, trade intensity shaped by the
real per-minute trade counts, the taker-buy share drawn from the real taker-buy volume), written with
``k2.lake.writer.append`` one day per commit (sorted by symbol, time). Quotes (``--quote-ratio`` per trade) around
the trade prices with real-shaped spreads feed the as-of join.

Measured (p50/p99 over ``--runs`` random symbol/hour/day picks, identical picks for every side): K2's
client; the same SQL over raw ``iceberg_scan`` (DuckDB plans the snapshot's files every query); the same SQL
over ``read_parquet`` of exactly the files K2's planner keeps for the pick (planned before timing: the
floor of a direct read):

1. one symbol, one hour of trades
2. 1-minute bars, one symbol, one day
3. VWAP, one symbol, one day
4. as-of join, one symbol, one hour of trades to quotes (1 s tolerance)

Run::

    .venv/bin/python benchmarks/query_bench.py --trades 1000000     # small, ~1 min
    .venv/bin/python benchmarks/query_bench.py                      # 50M trades
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from k2.config import Settings  # noqa: E402
from k2.lake.catalog import ensure_tables, load_catalog, metadata_location  # noqa: E402
from k2.lake.writer import append  # noqa: E402
from k2.model import QUOTE, TRADE  # noqa: E402
from k2.model.arrow import decimal_array  # noqa: E402
from k2.query.client import Client  # noqa: E402
from k2.query.engine import new_connection  # noqa: E402
from k2.query.files import FilePlanner, Prune  # noqa: E402

KLINES = (
    Path(os.environ.get("K2_SHARED_DATA", REPO.parent / "shared" / "data"))
    / "binance"
    / "public-data"
    / "BTCUSDT-1m-2024-09-21.csv"
)
DAY0 = datetime(2024, 9, 1, tzinfo=UTC)
SCALE = 100_000_000
SYMBOL_LEVELS = [1.0, 0.04, 0.0025, 0.009, 1.1e-5, 0.00045, 2.5e-6, 0.0018, 0.012, 0.00008]


def real_minutes() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(close prices, trade counts, taker-buy share) of the real 1,440 one-minute BTCUSDT klines."""
    closes, counts, taker = [], [], []
    with KLINES.open() as handle:
        for row in csv.reader(handle):
            closes.append(float(row[4]))
            counts.append(int(row[8]))
            taker.append(float(row[9]) / max(float(row[5]), 1e-12))
    return np.array(closes), np.array(counts, dtype=np.float64), np.clip(np.array(taker), 0.05, 0.95)


def _strings(value: str, n: int) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array([value])).cast(
        pa.string()
    )


def _empty_lists(n: int) -> pa.Array:
    return pa.ListArray.from_arrays(
        pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], type=pa.string())
    ).cast(TRADE.arrow_schema().field("conditions").type)


def _empty_maps(n: int) -> pa.Array:
    return pa.MapArray.from_arrays(
        pa.array(np.zeros(n + 1, dtype=np.int32)),
        pa.array([], type=pa.string()),
        pa.array([], type=pa.string()),
    ).cast(TRADE.arrow_schema().field("vendor").type)


def _table(columns: list[pa.Array], schema: pa.Schema, n: int) -> pa.Table:
    """``columns`` for the schema's first fields; fields added later (nullable, e.g. ``currency``) as nulls."""
    rest = [pa.nulls(n, type=field.type) for field in list(schema)[len(columns) :]]
    return pa.Table.from_arrays([*columns, *rest], schema=schema)


def generate_day(
    day: int,
    symbols: list[str],
    per_symbol: int,
    quote_ratio: float,
    rng: np.random.Generator,
    minutes: tuple[np.ndarray, np.ndarray, np.ndarray],
    levels: dict[str, float],
    next_ids: dict[str, int],
) -> tuple[pa.Table, pa.Table]:
    closes, counts, taker = minutes
    returns = np.diff(np.log(closes))
    day_start_us = int((DAY0 + timedelta(days=day)).timestamp() * 1_000_000)
    trade_parts, quote_parts = [], []
    for symbol in symbols:
        # Real one-minute returns, bootstrapped in hour-long blocks, continue the symbol's path.
        blocks = [returns[s : s + 60] for s in rng.integers(0, len(returns) - 60, size=24)]
        path = levels[symbol] * np.exp(np.cumsum(np.concatenate(blocks)))
        levels[symbol] = float(path[-1])
        weights = counts / counts.sum()
        minute = np.sort(rng.choice(1440, size=per_symbol, p=weights))
        ts = day_start_us + minute * 60_000_000 + rng.integers(0, 60_000_000, size=per_symbol)
        ts.sort()
        minute = (ts - day_start_us) // 60_000_000
        tick = max(levels[symbol] * 1e-6, 1e-8)
        price = path[minute] * (1 + rng.normal(0, 2e-5, size=per_symbol))
        price_units = np.maximum(np.round(price / tick) * tick * SCALE, 1).astype(np.int64)
        qty_units = (
            np.maximum(
                (rng.lognormal(-6, 1.6, size=per_symbol) / max(levels[symbol], 1e-9) * 60_000 * 1e5).astype(
                    np.int64
                ),
                1,
            )
            * 1000
        )
        buy = rng.random(per_symbol) < taker[minute]
        ids = np.arange(next_ids[symbol], next_ids[symbol] + per_symbol, dtype=np.int64)
        next_ids[symbol] += per_symbol
        n = per_symbol
        ts_arr = pa.array(ts, type=pa.int64()).cast(pa.timestamp("us", tz="UTC"))
        trade_parts.append(
            _table(
                [
                    _strings("binance", n),
                    _strings(symbol, n),
                    _strings(symbol[:-4] + "-USDT", n),
                    _strings("crypto", n),
                    pa.array(ids),
                    decimal_array(pa.array(price_units)),
                    decimal_array(pa.array(qty_units)),
                    pa.nulls(n, type=pa.decimal128(18, 8)),
                    pa.DictionaryArray.from_arrays(
                        pa.array(buy.astype(np.int32)), pa.array(["SELL", "BUY"])
                    ).cast(pa.string()),
                    ts_arr,
                    ts_arr,
                    ts_arr,
                    pa.nulls(n, type=pa.int64()),
                    _empty_lists(n),
                    _empty_maps(n),
                ],
                TRADE.arrow_schema(),
                n,
            )
        )
        q = max(1, int(n * quote_ratio))
        q_ts = np.sort(day_start_us + rng.integers(0, 86_400_000_000, size=q))
        q_min = (q_ts - day_start_us) // 60_000_000
        mid = path[q_min]
        half = np.maximum(np.round(mid * rng.uniform(0.5e-5, 3e-5, size=q) / tick), 1) * tick
        bid = np.maximum(np.round((mid - half) / tick) * tick * SCALE, 1).astype(np.int64)
        ask = np.maximum(np.round((mid + half) / tick) * tick * SCALE, 1).astype(np.int64) + 0
        ask = np.maximum(ask, bid + 1)
        sizes = (rng.lognormal(-1, 1.2, size=(2, q)) * 1e5).astype(np.int64) * 1000 + 1000
        q_arr = pa.array(q_ts, type=pa.int64()).cast(pa.timestamp("us", tz="UTC"))
        quote_parts.append(
            _table(
                [
                    _strings("binance", q),
                    _strings(symbol, q),
                    _strings(symbol[:-4] + "-USDT", q),
                    _strings("crypto", q),
                    pa.array(np.arange(q, dtype=np.int64) + day * 10_000_000_000),
                    decimal_array(pa.array(bid)),
                    decimal_array(pa.array(sizes[0])),
                    decimal_array(pa.array(ask)),
                    decimal_array(pa.array(sizes[1])),
                    q_arr,
                    q_arr,
                    q_arr,
                    _empty_maps(q),
                ],
                QUOTE.arrow_schema(),
                q,
            )
        )
    return pa.concat_tables(trade_parts), pa.concat_tables(quote_parts)


def build(
    settings: Settings, trades: int, symbols: list[str], days: int, quote_ratio: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    minutes = real_minutes()
    levels = {
        s: float(minutes[0][0]) * SYMBOL_LEVELS[i % len(SYMBOL_LEVELS)] * (1 + i // len(SYMBOL_LEVELS))
        for i, s in enumerate(symbols)
    }
    next_ids = {s: 1_000_000 for s in symbols}
    tables = ensure_tables(load_catalog(settings), settings)
    per_symbol = max(1, trades // (len(symbols) * days))
    started = time.monotonic()
    for day in range(days):
        t_tab, q_tab = generate_day(day, symbols, per_symbol, quote_ratio, rng, minutes, levels, next_ids)
        append(tables["trades"], t_tab, "trades", {"k2.bench.day": str(day)})
        append(tables["quotes"], q_tab, "quotes", {"k2.bench.day": str(day)})
        print(
            f"  day {day + 1}/{days}: {t_tab.num_rows:,} trades, {q_tab.num_rows:,} quotes committed ({time.monotonic() - started:.0f}s)",
            flush=True,
        )
        del t_tab, q_tab
        gc.collect()


RAW_SQL = {
    "hour": "SELECT * FROM iceberg_scan(?) WHERE symbol = ? AND exchange_ts >= ? AND exchange_ts < ? ORDER BY exchange_ts, exchange, trade_id",
    "bars": (
        "SELECT exchange, symbol, time_bucket(INTERVAL 1 minute, exchange_ts) AS open_time, arg_min(price, (exchange_ts, trade_id)) AS open, "
        "max(price) AS high, min(price) AS low, arg_max(price, (exchange_ts, trade_id)) AS close, sum(quantity) AS volume, "
        "sum(coalesce(quote_quantity, CAST(price AS DECIMAL(38,8)) * quantity)) AS quote_volume, count(*) AS trade_count, "
        "sum(quantity) FILTER (WHERE side = 'BUY') AS taker_buy_base_volume, "
        "sum(coalesce(quote_quantity, CAST(price AS DECIMAL(38,8)) * quantity)) FILTER (WHERE side = 'BUY') AS taker_buy_quote_volume, "
        "CAST(sum(CAST(price AS DECIMAL(38,8)) * quantity) AS DOUBLE) / CAST(sum(quantity) AS DOUBLE) AS vwap "
        "FROM iceberg_scan(?) WHERE symbol = ? AND exchange_ts >= ? AND exchange_ts < ? GROUP BY ALL ORDER BY open_time"
    ),
    "vwap": (
        "SELECT CAST(sum(CAST(price AS DECIMAL(38,8)) * quantity) AS DOUBLE) / CAST(sum(quantity) AS DOUBLE) AS vwap, sum(quantity), count(*) "
        "FROM iceberg_scan(?) WHERE symbol = ? AND exchange_ts >= ? AND exchange_ts < ?"
    ),
    # The same semantics as K2's asof_join: ties on quote time keep the highest update id, 1 s tolerance.
    "asof": (
        "WITH t AS (SELECT * FROM iceberg_scan(?) WHERE symbol = ? AND exchange_ts >= ? AND exchange_ts < ?), "
        "q AS (SELECT * FROM iceberg_scan(?) WHERE symbol = ? AND exchange_ts >= ? AND exchange_ts < ? "
        "QUALIFY row_number() OVER (PARTITION BY exchange, symbol, exchange_ts ORDER BY update_id DESC) = 1) "
        "SELECT t.trade_id, t.exchange_ts, t.price, t.quantity, t.side, "
        "CASE WHEN t.exchange_ts - q.exchange_ts <= INTERVAL 1 second THEN q.bid_price END AS bid_price, "
        "CASE WHEN t.exchange_ts - q.exchange_ts <= INTERVAL 1 second THEN q.ask_price END AS ask_price, "
        "CASE WHEN t.exchange_ts - q.exchange_ts <= INTERVAL 1 second THEN (CAST(q.bid_price AS DECIMAL(38,8)) + q.ask_price) * 0.5 END AS mid, "
        "CASE WHEN t.exchange_ts - q.exchange_ts <= INTERVAL 1 second THEN abs(2 * t.price - q.bid_price - q.ask_price) END AS effective_spread "
        "FROM t ASOF LEFT JOIN q ON t.exchange = q.exchange AND t.symbol = q.symbol AND t.exchange_ts >= q.exchange_ts "
        "ORDER BY t.exchange_ts, t.exchange, t.trade_id"
    ),
}


def timed(fn: Callable[[], Any]) -> tuple[float, int]:
    t0 = time.perf_counter()
    rows = fn()
    return (time.perf_counter() - t0) * 1000, rows


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trades", type=int, default=50_000_000)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--quote-ratio", type=float, default=0.5, help="Quotes generated per trade.")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--data", type=Path, default=None, help="Data directory (default benchmarks/data/query-<trades>)."
    )
    parser.add_argument("--rebuild", action="store_true", help="Regenerate the data even if present.")
    parser.add_argument(
        "--only", default="hour,bars,vwap,asof", help="Comma-separated subset of: hour, bars, vwap, asof."
    )
    args = parser.parse_args()

    root = args.data or REPO / "benchmarks" / "data" / f"query-{args.trades}"
    settings = Settings(data_dir=root, query_pool_size=2, query_max_rows=5_000_000)
    symbols = [f"S{i:02d}USDT" if i else "BTCUSDT" for i in range(args.symbols)]
    marker = root / "built.json"
    spec = {
        "trades": args.trades,
        "symbols": args.symbols,
        "days": args.days,
        "quote_ratio": args.quote_ratio,
        "seed": args.seed,
    }
    if args.rebuild or not marker.exists() or json.loads(marker.read_text()) != spec:
        if root.exists():
            import shutil

            shutil.rmtree(root)
        print(
            f"building {args.trades:,} trades, {args.symbols} symbols, {args.days} days under {root}",
            flush=True,
        )
        t0 = time.monotonic()
        build(settings, args.trades, symbols, args.days, args.quote_ratio, args.seed)
        marker.write_text(json.dumps(spec))
        print(f"built in {time.monotonic() - t0:.0f}s", flush=True)

    client = Client(settings)
    trades_loc = metadata_location(load_catalog(settings).load_table(("market_data", "trades")))
    quotes_loc = metadata_location(load_catalog(settings).load_table(("market_data", "quotes")))
    raw = new_connection(settings)
    files = raw.execute(
        "SELECT count(*) FROM iceberg_metadata(?) WHERE status <> 'DELETED'", [trades_loc]
    ).fetchone()
    total = raw.execute("SELECT count(*) FROM iceberg_scan(?)", [trades_loc]).fetchone()
    print(
        f"table: {total[0] if total else '?':,} trades in {files[0] if files else '?'} data files; {args.runs} runs per query",
        flush=True,
    )

    rnd = random.Random(args.seed)
    picks = []
    for _ in range(args.runs + 3):
        day = DAY0 + timedelta(days=rnd.randrange(args.days))
        hour = day + timedelta(hours=rnd.randrange(24))
        picks.append((rnd.choice(symbols), day, hour))

    def raw_rows(sql: str, params: list[Any]) -> int:
        return int(raw.execute(sql, params).to_arrow_table().num_rows)

    catalog = load_catalog(settings)
    iceberg = {
        loc: catalog.load_table(("market_data", name))
        for loc, name in ((trades_loc, "trades"), (quotes_loc, "quotes"))
    }
    planner = FilePlanner()

    def direct_rows(sql: str, params: list[Any], files: list[list[str]]) -> int:
        # The same SQL over the planned files: every iceberg_scan(?) becomes read_parquet(?).
        direct = sql.replace("iceberg_scan(?)", "read_parquet(?, hive_partitioning = false)")
        it = iter(files)
        bound = [next(it) if p in iceberg else p for p in params]
        return raw_rows(direct, bound)

    def planned(params: list[Any]) -> list[list[str]]:
        """The files K2's planner keeps for each (location, symbol, start, end) group of ``params``."""
        out = []
        for i, p in enumerate(params):
            if p in iceberg:
                t = iceberg[p]
                snap = t.current_snapshot()
                assert snap is not None
                symbol, lo, hi = params[i + 1], params[i + 2], params[i + 3]
                us = (lo.timestamp() * 1_000_000, hi.timestamp() * 1_000_000)
                prune = Prune((symbol,), None, int(us[0]), int(us[1]), "exchange_ts")
                got = planner.files(t, snap.snapshot_id, prune)
                assert got is not None
                out.append(got[0])
        return out

    def sides(key: str, params_of: Callable[[str, datetime, datetime], list[Any]]) -> tuple[Any, Any, Any]:
        sql = RAW_SQL[key]
        cache: dict[tuple[str, datetime, datetime], list[list[str]]] = {}

        def direct(s: str, d: datetime, h: datetime) -> int:
            return direct_rows(sql, params_of(s, d, h), cache[(s, d, h)])

        for s, d, h in picks:
            cache[(s, d, h)] = planned(params_of(s, d, h))
        return (lambda s, d, h: raw_rows(sql, params_of(s, d, h))), direct, cache

    hour_raw, hour_direct, hour_files = sides(
        "hour", lambda s, d, h: [trades_loc, s, h, h + timedelta(hours=1)]
    )
    bars_raw, bars_direct, bars_files = sides(
        "bars", lambda s, d, h: [trades_loc, s, d, d + timedelta(days=1)]
    )
    vwap_raw, vwap_direct, _ = sides("vwap", lambda s, d, h: [trades_loc, s, d, d + timedelta(days=1)])
    asof_raw, asof_direct, _ = sides(
        "asof",
        lambda s, d, h: [
            trades_loc,
            s,
            h,
            h + timedelta(hours=1),
            quotes_loc,
            s,
            h - timedelta(seconds=1),
            h + timedelta(hours=1),
        ],
    )
    files_per = {
        "hour": statistics.median(len(v[0]) for v in hour_files.values()),
        "bars": statistics.median(len(v[0]) for v in bars_files.values()),
    }
    print(f"files read per pick (median): symbol-hour {files_per['hour']}, symbol-day {files_per['bars']}")
    cases: dict[str, tuple[Callable[[str, datetime, datetime], int], ...]] = {
        "hour": (
            lambda s, d, h: client.trades(s, h, h + timedelta(hours=1), include_recent=False).num_rows,
            hour_raw,
            hour_direct,
        ),
        "bars": (
            lambda s, d, h: client.bars(s, "1m", d, d + timedelta(days=1), include_recent=False).num_rows,
            bars_raw,
            bars_direct,
        ),
        "vwap": (
            lambda s, d, h: client.vwap(s, d, d + timedelta(days=1), include_recent=False).num_rows,
            vwap_raw,
            vwap_direct,
        ),
        "asof": (
            lambda s, d, h: client.asof_join(s, h, h + timedelta(hours=1), tolerance="1s").num_rows,
            asof_raw,
            asof_direct,
        ),
    }
    print(
        f"\n{'query':34} {'rows':>8} {'K2 p50':>9} {'K2 p99':>9} {'iceberg_scan p50':>17} {'p99':>9} "
        f"{'read_parquet p50':>17} {'p99':>9} {'raw/K2 p99':>11}"
    )
    results = {}
    titles = {
        "hour": "one symbol, one hour of trades",
        "bars": "1-minute bars, one symbol-day",
        "vwap": "VWAP, one symbol-day",
        "asof": "as-of join, one symbol-hour",
    }
    for key in args.only.split(","):
        name = titles[key]
        fns = cases[key]
        samples: list[list[float]] = [[] for _ in fns]
        rows: list[int] = []
        for i, (s, d, h) in enumerate(picks):
            # Rotate which side runs first so caches favour none.
            for j in range(len(fns)):
                k = (i + j) % len(fns)
                fn = fns[k]
                ms, n = timed(lambda fn=fn, s=s, d=d, h=h: fn(s, d, h))  # type: ignore[misc]
                if i >= 3:  # warm-up
                    samples[k].append(ms)
                    if k == 0:
                        rows.append(n)
        r = {"rows": statistics.median(rows)}
        for side, values in zip(("k2", "raw", "direct"), samples, strict=True):
            r[f"{side}_p50"] = pct(values, 0.5)
            r[f"{side}_p99"] = pct(values, 0.99)
        results[name] = r
        print(
            f"{name:34} {r['rows']:>8,.0f} {r['k2_p50']:>8.1f}ms {r['k2_p99']:>8.1f}ms {r['raw_p50']:>16.1f}ms "
            f"{r['raw_p99']:>8.1f}ms {r['direct_p50']:>16.1f}ms {r['direct_p99']:>8.1f}ms "
            f"{r['raw_p99'] / r['k2_p99']:>10.2f}x",
            flush=True,
        )
    client.close()
    print(json.dumps({"spec": spec, "results": results}))


if __name__ == "__main__":
    main()
