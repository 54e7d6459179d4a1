"""``k2 trace TABLE EXCHANGE:SYMBOL:ID``: where one landed row came from (:mod:`k2.query.trace`).

Prints the row, its source (Kafka topic/partition/offset and the producer's message id, or file:line
for a direct import), the snapshot that committed it (id, time, summary with the Kafka offsets) and the
gap-ledger context around the id. ``--json`` prints the same as one JSON object.

Example::

    k2 trace trades binance:BTCUSDT:3735683259
    k2 trace quotes coinbase:BTC-USD:99123 --json
"""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console

from k2.cli.query import _client
from k2.cli.safe import markup

console = Console(soft_wrap=True)
_SUMMARY_SHOWN = ("k2.writer", "k2.kafka.ranges", "k2.kafka.offsets", "k2.import.file", "k2.rows.landed")


def _print_trace(data: dict[str, Any]) -> None:
    console.print(
        f"[bold]{markup(data['table'])} {markup(data['exchange'])}:{markup(data['symbol'])}:{data['id']}"
    )
    for index, row in enumerate(data["rows"]):
        if len(data["rows"]) > 1:
            console.print(f"[bold]row {index + 1} of {len(data['rows'])}")
        for name, value in row.items():
            console.print(f"  {markup(name)} = {markup(value)}")
    source = data["source"]
    if source["kind"] == "kafka":
        where = f"kafka {source['topic']}[{source['partition']}] @ offset {source['offset']}"
        console.print(f"[bold]source[/bold]  {markup(where)}  message id {markup(source['message_id'])}")
    elif source["kind"] == "file":
        console.print(f"[bold]source[/bold]  file {markup(source['file'])}:{source['line']}")
    else:
        console.print(f"[bold]source[/bold]  unknown: {markup(source['detail'])}")
    snapshot = data["snapshot"]
    if snapshot is None:
        console.print("[bold]snapshot[/bold]  not found (expired, or the table changed)")
    else:
        console.print(
            f"[bold]snapshot[/bold]  {snapshot['snapshot_id']} committed {markup(snapshot.get('committed_at'))} "
            f"({markup(snapshot.get('operation'))}, found by {markup(snapshot.get('found_by'))})"
        )
        for key in _SUMMARY_SHOWN:
            if key in snapshot.get("summary", {}):
                console.print(f"  {markup(key)} = {markup(snapshot['summary'][key])}")
    if not data["gaps"]:
        console.print("[bold]gaps[/bold]  none recorded for this symbol")
    for gap in data["gaps"]:
        console.print(
            f"[bold]gap[/bold]  {gap['position']} the id: ids {gap['first_missing_id']}..{gap['last_missing_id']} "
            f"({gap['missing_count']} missing) {markup(gap['status'])}, detected {markup(gap['detected_ts'])}"
        )


def register(app: typer.Typer) -> None:
    """Add ``k2 trace`` to ``app``."""

    @app.command("trace")
    def trace(
        table: str = typer.Argument(..., help="trades, quotes or book_deltas."),
        ident: str = typer.Argument(
            ..., metavar="ID", help="EXCHANGE:SYMBOL:ID, e.g. binance:BTCUSDT:123456."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
    ) -> None:
        """Where one row came from: its Kafka message or file line, the committing snapshot, adjacent gaps."""
        with _client() as client:
            data = client.trace(table, ident).to_dict()
        if as_json:
            typer.echo(json.dumps(data, indent=2, sort_keys=True))
        else:
            _print_trace(data)
