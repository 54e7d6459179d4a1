"""Operations commands: ``k2 prometheus config|serve``, ``k2 metrics`` (the declared metric registry).

(``k2 status``, ``k2 up`` and ``k2 down`` live with the local stack in :mod:`k2.cli.landing`.)

Example::

    k2 prometheus config --output /etc/prometheus/k2   # prometheus.yml + alerts.yml
    k2 metrics                                          # every metric K2 declares
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table as RichTable

from k2.config import load_settings

console = Console()


def register(app: typer.Typer) -> None:
    """Add the operations commands to ``app``."""
    prom_app = typer.Typer(help="Prometheus configuration for K2's processes.", no_args_is_help=True)

    @prom_app.command("config")
    def prometheus_config(
        output: Path = typer.Option(
            None, help="Directory to write prometheus.yml and alerts.yml (default: <data_dir>/prometheus)."
        ),
    ) -> None:
        """Write a Prometheus configuration scraping every K2 process `k2 up` starts, with K2's alert rules."""
        from k2.ops.prometheus import asset_path, scrape_targets, write_config
        from k2.telemetry.logging import get_logger

        settings = load_settings()
        path = write_config(settings, output)
        get_logger("k2.ops").info(
            "prometheus config written", path=str(path), targets=len(scrape_targets(settings))
        )
        console.print(f"wrote {path} and {path.parent / 'alerts.yml'}")
        for target in scrape_targets(settings):
            console.print(f"  {target.job:12} http://{target.address}{target.path}")
        console.print(f"Grafana dashboard: {asset_path('grafana-dashboard.json')}")

    @prom_app.command("serve")
    def prometheus_serve() -> None:
        """Write the configuration and run Prometheus on 127.0.0.1:K2_PROMETHEUS_PORT (what `k2 up` starts)."""
        from k2.ops.prometheus import serve

        try:
            serve(load_settings())
        except FileNotFoundError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None

    app.add_typer(prom_app, name="prometheus")

    @app.command("metrics")
    def metrics() -> None:
        """List every metric K2 declares: name, type, labels, help."""
        from k2.telemetry.metrics import DECLARATIONS

        table = RichTable(
            "metric", "type", "labels", "help", title="K2 metrics (k2.telemetry.metrics.DECLARATIONS)"
        )
        for decl in DECLARATIONS:
            table.add_row(decl.name, decl.type, ", ".join(decl.labels), decl.help)
        console.print(table)
