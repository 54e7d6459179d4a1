"""``python -m k2.bus.registry --port P --database-url URL [--default-compatibility LEVEL] [--host H]``.

Example::

    python -m k2.bus.registry --port 18081 --database-url sqlite:////tmp/registry.db
"""

from __future__ import annotations

import argparse
import sys

from k2.bus.registry.compat import COMPATIBILITY_LEVELS


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer port 1-65535, found {value!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port 1-65535, found {port}")
    return port


def _level(value: str) -> str:
    if value.upper() not in COMPATIBILITY_LEVELS:
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(COMPATIBILITY_LEVELS)}, found {value!r}"
        )
    return value.upper()


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments (exit 2 on bad ones) and serve until terminated.

    Example::

        main(["--port", "18081", "--database-url", "sqlite:////tmp/registry.db"])
    """
    parser = argparse.ArgumentParser(
        prog="python -m k2.bus.registry", description="K2's Confluent-compatible schema registry"
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, required=True, help="TCP port")
    parser.add_argument(
        "--database-url",
        required=True,
        help="SQLAlchemy URL, e.g. sqlite:////path/registry.db or postgresql://...",
    )
    parser.add_argument(
        "--default-compatibility",
        type=_level,
        default="BACKWARD",
        help="global compatibility level until PUT /config changes it",
    )
    args = parser.parse_args(argv)

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(args.database_url)
    except ArgumentError:
        parser.error(
            f"--database-url: expected a SQLAlchemy URL such as sqlite:////path/registry.db, found {args.database_url!r}"
        )

    from k2.bus.registry.server import serve
    from k2.bus.registry.store import RegistryStore

    try:
        store = RegistryStore(args.database_url, args.default_compatibility)
    except Exception as exc:  # unknown dialect, missing driver, unreachable or unwritable database
        parser.error(
            f"--database-url: cannot open {_redacted(args.database_url)}: {type(exc).__name__}: {exc}"
        )
    serve(args.host, args.port, store)
    return 0


if __name__ == "__main__":
    sys.exit(main())
