"""``k2 export catalog-properties``: how pyiceberg, Daft, Ray Data, Spark and Trino open K2's catalog.

Formats: ``properties`` (``key=value`` lines: a Trino ``etc/catalog/k2.properties`` file, Spark's
``spark-defaults.conf`` after replacing ``=`` with a space, or ``--conf key=value`` arguments) and
``json`` (a JSON object: ``pyiceberg.catalog.load_catalog("k2", **props)``). Secrets are redacted unless
``--show-secrets`` is given (terminal scrollback and CI logs keep what is printed).

Example::

    k2 export catalog-properties --engine spark
    k2 export catalog-properties --engine pyiceberg --format json --show-secrets > k2-catalog.json
"""

from __future__ import annotations

import json

import typer

from k2.config import load_settings

ENGINES = ("pyiceberg", "spark", "trino")


def catalog_properties_command(
    engine: str = typer.Option("pyiceberg", help="pyiceberg (also Daft and Ray Data), spark or trino."),
    output_format: str = typer.Option("properties", "--format", help="properties (key=value lines) or json."),
    show_secrets: bool = typer.Option(
        False, "--show-secrets", help="Print secret keys, credentials and tokens."
    ),
) -> None:
    """Print the catalog properties another engine needs to read K2's tables (the configured catalog and S3)."""
    from k2.lake.engines import engine_properties

    if engine not in ENGINES:
        raise typer.BadParameter(
            f"expected one of {', '.join(ENGINES)}, found {engine!r}", param_hint="--engine"
        )
    if output_format not in ("properties", "json"):
        raise typer.BadParameter(
            f"expected properties or json, found {output_format!r}", param_hint="--format"
        )
    props = engine_properties(load_settings(), engine, show_secrets=show_secrets)  # type: ignore[arg-type]
    if output_format == "json":
        typer.echo(json.dumps(props, indent=2))
    else:
        typer.echo("\n".join(f"{key}={value}" for key, value in props.items()))


def register(app: typer.Typer) -> None:
    export_app = typer.Typer(help="Export K2's configuration for other tools.", no_args_is_help=True)
    export_app.command("catalog-properties")(catalog_properties_command)
    app.add_typer(export_app, name="export")
