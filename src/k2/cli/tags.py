"""``k2 tag create|list|drop``: named snapshots that outlive snapshot expiry (:mod:`k2.lake.tags`).

Example::

    k2 tag create q3-audit --table trades --at 2024-09-30T23:59:59Z
    k2 tag list
    k2 trades BTCUSDT --as-of tag:q3-audit
    k2 tag drop q3-audit --table trades
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table as RichTable

from k2.cli.safe import cell, markup, plain
from k2.config import load_settings

if TYPE_CHECKING:
    from pyiceberg.table import Table

tag_app = typer.Typer(
    help="Iceberg tags: name a snapshot so maintenance never expires it (as_of=tag:NAME).",
    no_args_is_help=True,
)


def _tables(names: list[str] | None) -> dict[str, Table]:
    from pyiceberg.exceptions import NoSuchTableError

    from k2.lake.catalog import TABLES, load_catalog, load_table

    chosen = names or list(TABLES)
    unknown = [n for n in chosen if n not in TABLES]
    if unknown:
        raise typer.BadParameter(
            f"expected a table among {', '.join(TABLES)}, found {', '.join(unknown)}", param_hint="--table"
        )
    catalog = load_catalog(load_settings())
    out: dict[str, Table] = {}
    for name in chosen:
        try:
            out[name] = load_table(catalog, name)
        except NoSuchTableError:  # a table not created yet has no tags
            continue
    return out


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    from k2.query.params import parse_time

    return parse_time(value, "--at")


@tag_app.command("create")
def create_command(
    name: str = typer.Argument(..., help="Tag name: letters, digits, '.', '_' or '-'."),
    table: list[str] = typer.Option(
        None, "--table", "-t", help="Table short name; repeatable. Default: every table."
    ),
    snapshot: int | None = typer.Option(
        None, "--snapshot", help="Snapshot id to tag (default: the current one)."
    ),
    at: str | None = typer.Option(None, "--at", help="Tag the snapshot current at this ISO time instead."),
    retain: float | None = typer.Option(None, "--retain", help="Days to keep the tag (default: forever)."),
) -> None:
    """Tag the current snapshot (or --snapshot / --at) of each table."""
    from k2.lake.tags import create_tag

    moment = _time(at)
    console = Console()
    for short, tbl in _tables(table).items():
        try:
            info = create_tag(tbl, name, snapshot_id=snapshot, at=moment, retain_days=retain)
        except (ValueError, LookupError) as exc:
            typer.echo(f"error: {short}: {plain(exc)}", err=True)
            raise typer.Exit(2) from None
        console.print(
            f"tagged {markup(info.table)} snapshot {info.snapshot_id} as {markup(info.name)}", highlight=False
        )


@tag_app.command("list")
def list_command(
    table: list[str] = typer.Option(
        None, "--table", "-t", help="Table short name; repeatable. Default: every table."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
) -> None:
    """List the tags of each table: name, snapshot, commit time, expiry."""
    from k2.lake.tags import list_tags

    rows = [(short, t) for short, tbl in _tables(table).items() for t in list_tags(tbl)]
    if as_json:
        for short, t in rows:
            expires = t.expires_at.isoformat() if t.expires_at else None
            typer.echo(
                json.dumps(
                    {
                        "table": short,
                        "name": t.name,
                        "snapshot_id": t.snapshot_id,
                        "committed_at": t.committed_at.isoformat(),
                        "expires_at": expires,
                    }
                )
            )
        return
    out = RichTable(title="tags")
    for column in ("table", "tag", "snapshot", "committed at", "expires"):
        out.add_column(column)
    for short, t in rows:
        out.add_row(
            short,
            cell(t.name),
            str(t.snapshot_id),
            t.committed_at.isoformat(),
            t.expires_at.isoformat() if t.expires_at else "never",
        )
    Console().print(out)


@tag_app.command("drop")
def drop_command(
    name: str = typer.Argument(..., help="Tag name."),
    table: list[str] = typer.Option(
        None, "--table", "-t", help="Table short name; repeatable. Default: every table holding it."
    ),
) -> None:
    """Drop a tag (its snapshot then expires like any other)."""
    from k2.lake.tags import drop_tag, list_tags

    dropped = 0
    for short, tbl in _tables(table).items():
        if table or any(t.name == name for t in list_tags(tbl)):
            try:
                drop_tag(tbl, name)
            except LookupError as exc:
                typer.echo(f"error: {short}: {exc}", err=True)
                raise typer.Exit(2) from None
            dropped += 1
    if not dropped:
        typer.echo(f"error: expected a tag {name!r} on some table, found none", err=True)
        raise typer.Exit(2)
    typer.echo(f"dropped {name} from {dropped} table(s)")


def register(app: typer.Typer) -> None:
    app.add_typer(tag_app, name="tag")
