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
    from k2.api.remote import RemoteClient
    from k2.query.client import Client


def connect(url: str | None = None, api_key: str | None = None, **settings: Any) -> Client | RemoteClient:
    """Open a query client over K2's tables (settings as keyword overrides of ``K2_*`` variables).

    With ``url=`` (and ``api_key=``) the client is remote: the same read methods and the same
    ``QueryResult`` over the REST API (Arrow IPC on the wire; see :mod:`k2.api.remote`).

    Example:
        >>> import k2
        >>> client = k2.connect(data_dir="/tmp/k2-doc")  # doctest: +SKIP
        >>> client.trades("BTCUSDT").num_rows  # doctest: +SKIP
        19904
        >>> remote = k2.connect(url="http://127.0.0.1:8000", api_key="k2_...")  # doctest: +SKIP
    """
    if url is not None:
        if not api_key or settings:
            raise ValueError(
                f"k2.connect(url=...): expected api_key= and no local settings, found api_key={'set' if api_key else 'missing'}, "
                f"settings={sorted(settings)}"
            )
        from k2.api.remote import RemoteClient

        return RemoteClient(url, api_key)
    from k2.query.client import connect as _connect

    return _connect(**settings)


__all__ = ["__version__", "connect"]
