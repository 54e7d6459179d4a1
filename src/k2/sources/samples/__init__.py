"""Real exchange captures shipped inside the K2 package (package data), for ``k2 demo`` and the fake exchange.

They are read through :mod:`importlib.resources`, so an installed K2 (a wheel in any virtualenv) finds
them without a git checkout. ``data/samples/binance`` in the repository is a symlink to this folder
(see ``data/samples/README.md`` for where the captures come from).

Hazard: the readers (``gzip.open``, the fake exchange) need real files. A regular install puts
package data on disk; an install that leaves K2 inside a zip (zipimport) is refused with a clear error
rather than extracted to a temporary folder that nobody cleans up.

>>> [p.name for p in binance_captures()]
['spot_btcusdt_20240808.gz', 'spot_btcusdt_20240809.gz']
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

BINANCE_CAPTURE_GLOB = "spot_btcusdt_*.gz"


def samples_dir() -> Path:
    """The folder holding the package's sample data, as a filesystem path."""
    root = files("k2.sources.samples")
    if not isinstance(root, Path):
        raise RuntimeError(
            f"expected K2's sample data as files on disk, found {root!r} (K2 installed as a zip?)"
        )
    return root


def binance_captures() -> list[Path]:
    """The Binance spot captures (19,904 BTCUSDT trades, 2024-08-08 23:54 to 2024-08-09 00:05 UTC), oldest first."""
    paths = sorted((samples_dir() / "binance").glob(BINANCE_CAPTURE_GLOB))
    if not paths:
        raise FileNotFoundError(
            f"expected the Binance captures {BINANCE_CAPTURE_GLOB} in {samples_dir() / 'binance'}, found none"
        )
    return paths


def binance_exchange_info() -> Path:
    """An exchangeInfo document in Binance's documented layout (constructed, not captured; see tests/fixtures/README.md)."""
    return samples_dir() / "binance_exchange_info.json"
