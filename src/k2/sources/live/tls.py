"""The one TLS rule of the live feeds, WebSocket and REST alike: verify the server, always.

Hazard: a test that needs a self-signed server passes its own context (or ``cafile``); nothing here
ever turns verification off (no ``CERT_NONE``).
"""

from __future__ import annotations

import ssl

import certifi


def tls_context(cafile: str | None = None) -> ssl.SSLContext:
    """A client TLS context that verifies the server (certifi's CA bundle, or ``cafile``) and its host name.

    >>> tls_context().verify_mode == ssl.CERT_REQUIRED
    True
    """
    context = ssl.create_default_context(cafile=cafile or certifi.where())
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context
