"""K2: a market data lakehouse (L3 cold path): exchange feeds -> Kafka -> Iceberg -> DuckDB.

Example:
    >>> import k2
    >>> k2.__version__
    '0.1.0'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from k2.query.client import Client


def connect(**settings: Any) -> Client:
    """Open a query client over K2's tables (settings as keyword overrides of ``K2_*`` variables).

    Example:
        >>> import k2
        >>> client = k2.connect(data_dir="/tmp/k2-doc")  # doctest: +SKIP
        >>> client.trades("BTCUSDT").num_rows  # doctest: +SKIP
        19904
    """
    from k2.query.client import connect as _connect

    return _connect(**settings)


__all__ = ["__version__", "connect"]
