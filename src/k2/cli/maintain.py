"""``k2 maintain`` (table maintenance) and ``k2 cost`` (monthly cost model).

Example::

    k2 maintain --table trades --dry-run
    k2 cost --msgs-per-sec 50000 --retention-days 365 --from-table
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table as RichTable

from k2.cli.safe import markup, plain
from k2.config import load_settings


def _fmt_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def maintain_command(
    table: list[str] = typer.Option(
        None,
        "--table",
        "-t",
        help="Table short name (trades, quotes, instruments, gaps); repeatable. Default: all.",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Plan only: report what would change, change nothing."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON."),
) -> None:
    """Compact small files, rewrite manifests, expire snapshots and remove orphan files; report what changed."""
    from k2.lake.maintenance import maintain

    settings = load_settings()
    try:
        reports = maintain(settings, table or None, dry_run=dry_run)
    except ValueError as exc:
        typer.echo(f"error: {plain(exc)}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in reports], indent=2))
        return
    console = Console()
    out = RichTable(title="k2 maintain" + (" (dry run: nothing changed)" if dry_run else ""))
    for column in (
        "table",
        "data files",
        "bytes",
        "manifests",
        "partitions compacted",
        "files rewritten",
        "snapshots expired",
        "orphans removed",
        "conflicts",
        "seconds",
    ):
        out.add_column(column, justify="left" if column == "table" else "right")
    for r in reports:
        out.add_row(
            r.table,
            f"{r.files_before} -> {r.files_after}",
            f"{_fmt_bytes(r.bytes_before)} -> {_fmt_bytes(r.bytes_after)}",
            f"{r.manifests_before} -> {r.manifests_after}",
            str(r.partitions_compacted),
            f"{r.files_rewritten} -> {r.files_written}",
            f"{r.snapshots_expired} of {r.snapshots_before}",
            f"{r.orphans_removed} ({_fmt_bytes(r.orphan_bytes)})",
            str(r.commit_conflicts),
            f"{r.seconds:.1f}",
        )
    console.print(out)
    for r in reports:
        for note in r.notes + r.partitions_skipped:
            console.print(f"[yellow]{r.table}: {markup(note)}[/yellow]", highlight=False)


def cost_command(
    msgs_per_sec: float = typer.Option(
        ..., "--msgs-per-sec", help="Average messages per second landed (all feeds)."
    ),
    retention_days: float = typer.Option(
        None, "--retention-days", help="Days of Iceberg data retained (default from the price file)."
    ),
    prices: Path = typer.Option(
        None, "--prices", help="TOML price file overriding the shipped k2/ops/assets/prices.toml."
    ),
    from_table: bool = typer.Option(
        False, "--from-table", help="Bytes per message measured from K2's trades table."
    ),
    bytes_per_msg: float = typer.Option(
        None, "--bytes-per-msg", help="Stored Iceberg bytes per message (overrides the default)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the estimate as JSON."),
) -> None:
    """Monthly cloud cost and cost per million messages (broker, object storage, catalog DB, compute)."""
    from k2.ops.cost import CostError, estimate, load_prices, measure_bytes_per_message, render_estimate

    try:
        price_book = load_prices(prices)
        measured = None
        if from_table:
            measured = measure_bytes_per_message(load_settings())
        result = estimate(
            price_book,
            msgs_per_sec=msgs_per_sec,
            retention_days=retention_days,
            bytes_per_message=bytes_per_msg
            if bytes_per_msg is not None
            else (measured.bytes_per_message if measured else None),
            bytes_source=(
                "--bytes-per-msg"
                if bytes_per_msg is not None
                else (measured.describe() if measured else None)
            ),
        )
    except CostError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
        return
    render_estimate(result, Console())


def register(app: typer.Typer) -> None:
    """Add ``maintain`` and ``cost`` to ``app``."""
    app.command("maintain")(maintain_command)
    app.command("cost")(cost_command)
