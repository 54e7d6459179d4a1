"""Which Binance market, data kind and symbol a file holds: from its content **and** its path.

Every clue is evidence; they must agree, or the import is refused with what each clue said and which
flag decides. A row is never stored under the wrong exchange or asset class (a USD-M futures file with
its header stripped used to land as spot and merge with the spot trades).

Content (per kind):

* trades: 7 columns (``is_best_match`` present) -> spot; 6 -> futures. aggTrades: 8 -> spot; 7 -> futures.
* boolean style: ``True``/``False`` -> spot; ``true``/``false`` -> futures (as Binance writes them).
* klines: a header row -> futures (spot klines have none); no header says nothing (a futures file with
  its header stripped looks the same), so a headerless klines file needs the path or ``--market``.

Path (``data.binance.vision`` layout and names):

* ``.../spot/daily|monthly/<kind>/<SYMBOL>/...`` -> spot; ``.../futures/um/...`` -> USD-M;
  ``.../futures/cm/...`` -> COIN-M (refused: its quantities are contracts, not coins).
* file names ``BTCUSDT-trades-2021-01-03``, ``futures-um-BTCUSDT-trades-...``, ``spot-BTCUSDT-...``,
  ``BTCUSDT-aggTrades-...``, ``BTCUSDT-1m-2024-09-21``: symbol, kind, interval (and market from the prefix).

``--market spot|usdm`` is evidence too: it decides only where content and path are silent, and a flag that
contradicts them is refused (``--market usdm`` on a 7-column spot file is a mistake, not an override).

Example:
    >>> p = binance_path("/d/data/futures/um/daily/trades/BTCUSDT/BTCUSDT-trades-2024-01-01.zip!BTCUSDT-trades-2024-01-01.csv")
    >>> (p.market, p.kind, p.symbol)
    ('usdm', 'trades', 'BTCUSDT')
    >>> binance_path("futures-um-ETHUSDT-trades-2024-01-01.csv").symbol
    'ETHUSDT'
    >>> decide_market([("7 columns", "spot"), ("booleans True/False", "spot")], "auto", "x.csv")
    'spot'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from k2.sources.files.source import FileImportError

_NAME = re.compile(
    r"^(?:(?P<prefix>spot|futures-um|futures-cm|um|cm)-)?(?P<symbol>[A-Z0-9]{2,30})-"
    r"(?P<kind>trades|aggTrades|(?P<interval>\d+[smhdw]|1mo|1M))-\d{4}-\d{2}(-\d{2})?(\.|$)"
)
_PREFIX_MARKET = {"spot": "spot", "futures-um": "usdm", "um": "usdm", "futures-cm": "coinm", "cm": "coinm"}
_KIND_DIRS = {"trades": "trades", "aggTrades": "aggTrades", "klines": "klines"}
_MARKET_NAMES = {"spot": "spot (binance, crypto)", "usdm": "USD-M futures (binance-futures, futures)"}


@dataclass(frozen=True)
class BinancePath:
    """What a path says: market (spot/usdm/coinm), kind (trades/aggTrades/klines), symbol, interval."""

    market: str | None = None
    kind: str | None = None
    symbol: str | None = None
    interval: str | None = None
    market_clue: str = ""  # the part of the path that named the market


def binance_path(path: str) -> BinancePath:
    """Read the Binance directory layout and file name (a ZIP member after ``!`` is read too)."""
    outer, _, member = path.partition("!")
    parts = [p for p in outer.replace("\\", "/").split("/") if p]
    market = kind = symbol = interval = None
    clue = ""
    for i, part in enumerate(parts[:-1]):
        after = parts[i + 1 : i + 3]
        if part == "spot" and after[:1] and after[0] in ("daily", "monthly"):
            market, clue = "spot", "/".join(parts[i : i + 2])
        elif (
            part == "futures"
            and after[:1]
            and after[0] in ("um", "cm")
            and after[1:2]
            and after[1] in ("daily", "monthly")
        ):
            market, clue = ("usdm" if after[0] == "um" else "coinm"), "/".join(parts[i : i + 3])
        if part in _KIND_DIRS and market is not None and i + 1 < len(parts) - 1:
            kind, symbol = _KIND_DIRS[part], parts[i + 1]
    for name in (member, parts[-1] if parts else ""):
        match = _NAME.match(name) if name else None
        if match is None:
            continue
        symbol = match.group("symbol")
        kind = "klines" if match.group("interval") else match.group("kind")
        interval = match.group("interval")
        prefix = match.group("prefix")
        if prefix:
            named = _PREFIX_MARKET[prefix]
            if market is not None and market != named:
                raise FileImportError(
                    f"{path}: expected the directory ({clue}) and the file name ({prefix}-) to name one market, found both"
                )
            market, clue = named, f"{prefix}-"
        break
    return BinancePath(market, kind, symbol, interval, clue)


def boolean_style(lines: list[bytes], column: int) -> str | None:
    """``spot`` for ``True``/``False``, ``usdm`` for ``true``/``false`` in ``column`` of ``lines`` (None: unknown/mixed)."""
    seen = set()
    for line in lines:
        fields = line.split(b",")
        if len(fields) > column:
            seen.add(fields[column].strip())
    if seen and seen <= {b"True", b"False"}:
        return "spot"
    if seen and seen <= {b"true", b"false"}:
        return "usdm"
    return None


def decide_market(evidence: list[tuple[str, str | None]], flag: str, source_file: str) -> str:
    """The one market all clues name; refuse when they disagree or when none decides.

    ``evidence`` is (what was found, market or None); ``flag`` is ``--market`` (auto, spot or usdm).
    """
    if flag not in ("auto", "spot", "usdm"):
        raise FileImportError(f"expected --market auto, spot or usdm, found {flag!r}")
    clues = [(what, market) for what, market in evidence if market is not None]
    if flag != "auto":
        clues.append((f"--market {flag}", flag))
    if any(market == "coinm" for _, market in clues):
        found = "; ".join(what for what, market in clues if market == "coinm")
        raise FileImportError(
            f"{source_file}: expected spot or USD-M futures data, found COIN-M futures ({found}); K2 does not import "
            "COIN-M files (their quantities are contracts, not coins)"
        )
    markets = {market for _, market in clues}
    if len(markets) == 1:
        return markets.pop()
    said = "; ".join(f"{what} -> {_MARKET_NAMES.get(str(m), m)}" for what, m in clues)
    if not markets:
        silent = "; ".join(what for what, _ in evidence) or "no clue"
        raise FileImportError(
            f"{source_file}: expected the market from the content or the path, found neither decides ({silent}); "
            "pass --market spot or --market usdm"
        )
    raise FileImportError(
        f"{source_file}: expected the content, the path and --market to name one market, found {said}; "
        "fix the file or its path (--market decides only when content and path are silent)"
    )
