"""The ``k2`` command line: one typer app assembled from one module per pipeline stage.

Each stage owns a module here exposing ``register(app)``; this file only wires them together.
"""

from __future__ import annotations

import importlib

import typer

from k2.config import SettingsError

app = typer.Typer(
    name="k2", help="K2 market data lakehouse (L3 cold path).", no_args_is_help=True, add_completion=False
)


@app.callback()
def _start() -> None:
    """Every command: load the settings first (a bad value fails here, naming the key) and set up logging."""
    from k2.config import load_settings
    from k2.telemetry.logging import configure_logging

    configure_logging(load_settings())


# One module per stage; each defines register(app: typer.Typer) -> None.
_MODULES = (
    "core",
    "landing",
    "demo",
    "sources_live",
    "sources_files",
    "query",
    "api",
    "ops",
    "maintain",
    "tags",
    "export",
    "trace",
)

_BOOK_MODULES = ("book",)  # k2 book, k2 book-snapshots (issue 14)


def _register_all() -> None:
    for name in (*_MODULES, *_BOOK_MODULES):
        module = importlib.import_module(f"k2.cli.{name}")
        module.register(app)


_register_all()


def main() -> None:
    """Entry point of the ``k2`` console script."""
    try:
        app()
    except SettingsError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise SystemExit(2) from None
    except RuntimeError as exc:
        from k2.bus.producer import DeliveryError  # here, not at the top: confluent-kafka loads only on error

        if not isinstance(exc, DeliveryError):
            raise
        typer.echo(f"delivery error: {exc}", err=True)
        raise SystemExit(1) from None
