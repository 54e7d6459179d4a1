"""Commands of the landing stage and the local stack: init, land, up, down, status, dlq, gaps."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.table import Table as RichTable

from k2.cli.safe import cell, markup, plain
from k2.config import Settings, load_settings

console = Console()
err_console = Console(stderr=True)


def _say_partial(letters: object) -> None:
    """On stderr, when a dead-letter read stopped before a partition's broker-reported end."""
    message = getattr(letters, "partial_message", lambda: None)()
    if message:
        err_console.print(f"warning: {markup(message)}", soft_wrap=True)


def _ts(micros: int | None) -> str:
    if micros is None or micros < 0:
        return "-"
    return datetime.fromtimestamp(micros / 1e6, tz=UTC).isoformat(timespec="milliseconds")


def _drain_before_down(settings: Settings) -> None:
    """Wait for the landing to land every message (bounded); print what is left behind."""
    from k2.ops import stack
    from k2.ops.drain import drain

    if not stack.is_ours(settings, "landing") or not stack.is_ours(settings, "broker"):
        return  # nothing local to drain: no landing service or no local broker running
    console.print(
        f"draining: waiting up to {settings.down_drain_seconds:g}s for the landing to catch up (--force skips)"
    )
    try:
        left = drain(settings, settings.down_drain_seconds)
    except Exception as exc:  # a broken broker or catalog must not stop `k2 down` itself
        console.print(
            f"[yellow]drain check failed, stopping anyway: {type(exc).__name__}: {exc}[/yellow]",
            highlight=False,
        )
        return
    if not left:
        console.print("drained: lag 0 on every partition")
        return
    console.print(
        f"[yellow]not drained after {settings.down_drain_seconds:g}s; left on the broker for the next `k2 up` "
        "(at least this many messages per partition):[/yellow]"
    )
    for (topic, partition), count in sorted(left.items()):
        console.print(f"  {topic}[{partition}]  {count:,}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add the landing and local-stack commands to ``app`` (long: one short nested function per command)."""

    @app.command("init")
    def init() -> None:
        """Create K2's namespaces and Iceberg tables (idempotent)."""
        from k2.lake.catalog import TABLES, ensure_tables, load_catalog

        settings = load_settings()
        tables = ensure_tables(load_catalog(settings), settings)
        for short, table in tables.items():
            console.print(f"[green]ok[/green] {TABLES[short].full_name}  ({table.location()})")

    @app.command("land")
    def land(
        idle_exit: float = typer.Option(None, help="Exit after this many seconds without messages."),
        topic: list[str] = typer.Option(
            None, help="Topics to land (default: every market.*.trades|quotes.* topic)."
        ),
    ) -> None:
        """Run the landing consumer (Kafka -> Iceberg, exactly once) until SIGTERM."""
        from k2.landing import run_landing
        from k2.telemetry.metrics import declare_all

        declare_all()
        stats = run_landing(load_settings(), idle_exit_seconds=idle_exit, topics=topic or None)
        console.print(
            f"landed {stats.landed} rows in {stats.commits} commits; duplicates {stats.duplicates}, "
            f"dead-lettered {stats.dead_lettered}, gaps {stats.gaps}"
        )

    @app.command("up")
    def up(
        part: list[str] = typer.Option(
            None, help="Only these parts (storage, broker, registry, landing, api)."
        ),
    ) -> None:
        """Start the local stack (idempotent): storage, broker, schema registry, landing service, REST API."""
        from k2.ops import stack

        settings = load_settings()
        if settings.embedded_broker and settings.broker_storage.startswith("memory://"):
            console.print(
                f"[yellow]warning: K2_BROKER_STORAGE={settings.broker_storage}: the local broker keeps its log in "
                "memory; every message not yet landed, and the dead-letter topics, are lost on `k2 down`, a broker "
                "restart or crash. Unset it for durable s3:// storage.[/yellow]"
            )
        for name, state in stack.up(settings, part or None):
            console.print(f"{name:10} {state}")
        from k2.lake.catalog import ensure_tables, load_catalog

        ensure_tables(load_catalog(settings), settings)
        if not part or "api" in part:
            from k2.console import console_url

            console.print(
                f"console    {console_url(settings.api_host, settings.api_port)} (key: k2 keys create --name me --scope read)"
            )

    @app.command("down")
    def down(
        force: bool = typer.Option(
            False, "--force", help="Stop at once: do not wait for the landing to catch up."
        ),
    ) -> None:
        """Stop every part of the local stack started by `k2 up`, after the landing has landed everything.

        Waits up to K2_DOWN_DRAIN_SECONDS for lag 0 on every topic partition (the DLQ flushed with it) and
        prints what it leaves behind when the bound is hit.
        """
        from k2.ops import stack

        settings = load_settings()
        if not force:
            _drain_before_down(settings)
        refused = False
        for name, state in stack.down(settings):
            refused = refused or state.startswith("refused")
            console.print(f"{name:10} {state}", markup=False, highlight=False)
        if refused:
            raise typer.Exit(1)

    @app.command("status")
    def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
        """One-screen operator view: parts, topics, tables, freshness, gaps, DLQ."""
        from k2.console import console_url
        from k2.ops.status import collect_status, render_status

        settings = load_settings()
        report = collect_status(settings)
        report["console_url"] = console_url(settings.api_host, settings.api_port)
        if as_json:
            console.print_json(json.dumps(report, default=str))
        else:
            render_status(report, console)
            console.print(f"console: {report['console_url']}")

    dlq_app = typer.Typer(help="Inspect and replay the dead-letter queue.", no_args_is_help=True)

    @dlq_app.command("list")
    def dlq_list(
        topic: str = typer.Option(None, help="One DLQ topic."), limit: int = typer.Option(100)
    ) -> None:
        """List dead letters: source position, reason, detail, and when a letter was replayed."""
        from k2.landing.dlq import read_dead_letters, replayed_letters

        settings = load_settings()
        letters = read_dead_letters(settings, topic, limit=limit)
        replayed = replayed_letters(settings, sorted({d.dlq_topic for d in letters})) if letters else {}
        table = RichTable("dlq", "offset", "source", "reason", "detail", "size", "replayed")
        for d in letters:
            marker = replayed.get((d.dlq_topic, d.dlq_partition, d.dlq_offset))
            when = _ts(int(str(marker.get("replayed_ts", -1)))) if marker else "-"
            table.add_row(
                cell(d.dlq_topic),
                f"{d.dlq_partition}:{d.dlq_offset}",
                cell(f"{d.source_topic}[{d.source_partition}]@{d.source_offset}"),
                cell(d.reason),
                cell(d.detail[:80]),
                str(len(d.value or b"")),
                when,
            )
        console.print(table)
        console.print(
            f"{len(letters)} dead letters, {sum(1 for d in letters if (d.dlq_topic, d.dlq_partition, d.dlq_offset) in replayed)} replayed"
        )
        _say_partial(letters)

    @dlq_app.command("show")
    def dlq_show(topic: str, partition: int, offset: int) -> None:
        """Show one dead letter with its original bytes (hex) and headers."""
        from k2.landing.dlq import read_dead_letters

        letters = read_dead_letters(load_settings(), topic)
        for d in letters:
            if d.dlq_partition == partition and d.dlq_offset == offset:
                at = _ts(d.source_timestamp * 1000 if d.source_timestamp > 0 else None)
                # Reason, detail, key and headers come from the feed or producer: shown literally.
                for label, text in (
                    ("source", f"{d.source_topic}[{d.source_partition}]@{d.source_offset} at {at}"),
                    ("reason", d.reason),
                    ("detail", d.detail),
                    ("key", repr(d.key)),
                    ("headers", d.original_headers),
                    ("value", (d.value or b"").hex()),
                ):
                    console.print(f"{label:8} {plain(text)}", markup=False, highlight=False)
                return
        console.print(f"[red]no dead letter at {markup(topic)}\\[{partition}]@{offset}[/red]")
        _say_partial(letters)  # the letter may lie beyond where the read stopped
        raise typer.Exit(1)

    @dlq_app.command("replay")
    def dlq_replay(
        topic: str = typer.Option(None, help="One DLQ topic (default: all)."),
        reason: str = typer.Option(None, help="Only dead letters with this reason."),
        limit: int = typer.Option(100_000),
    ) -> None:
        """Move the dead letters that now pass the landing's checks back to their source topics (each once)."""
        from k2.landing.dlq import read_dead_letters, replay_dead_letters

        settings = load_settings()
        read = read_dead_letters(settings, topic, limit=limit)
        _say_partial(read)  # only the letters read are replayed
        letters = [d for d in read if reason is None or d.reason == reason]
        report = replay_dead_letters(settings, letters)
        console.print(f"replayed {len(report.replayed)} dead letters")
        if report.still_invalid:
            why = ", ".join(f"{r}: {n}" for r, n in sorted(report.reasons().items()))
            console.print(
                f"{len(report.still_invalid)} still invalid, left in the DLQ ({plain(why)})",
                markup=False,
                highlight=False,
            )
        if report.already_replayed:
            console.print(f"{report.already_replayed} already replayed, skipped")

    app.add_typer(dlq_app, name="dlq")

    @app.command("gaps")
    def gaps(
        status: str = typer.Option(None, help="open, backfilled or lost."),
        symbol: str = typer.Option(None),
        exchange: str = typer.Option(None),
    ) -> None:
        """List gaps in exchange id sequences (the gap ledger, quality.gaps)."""
        from k2.lake.catalog import ensure_tables, load_catalog
        from k2.landing.ledger import current_gaps

        settings = load_settings()
        tables = ensure_tables(load_catalog(settings), settings)
        data = current_gaps(tables["gaps"], status=status, exchange=exchange, symbol=symbol)
        table = RichTable(
            "exchange", "symbol", "type", "first", "last", "count", "status", "source", "detected"
        )
        for row in data.to_pylist():
            table.add_row(
                cell(row["exchange"]),
                cell(row["symbol"]),
                cell(row["data_type"]),
                str(row["first_missing_id"]),
                str(row["last_missing_id"]),
                str(row["missing_count"]),
                cell(row["status"]),
                cell(row["source"]),
                str(row["detected_ts"]),
            )
        console.print(table)
        console.print(f"{data.num_rows} gaps")
