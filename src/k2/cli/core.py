"""Core commands: configuration."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from k2.config import load_settings, settings_reference_markdown

console = Console()


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(help="Show and document configuration.", no_args_is_help=True)

    @config_app.command("show")
    def config_show() -> None:
        """Print the effective settings (secrets masked)."""
        settings = load_settings()
        for name, value in settings.model_dump().items():
            if value is not None and any(s in name for s in ("password", "secret", "token", "credential")):
                value = "***"
            console.print(f"K2_{name.upper()} = {value}")

    @config_app.command("docs")
    def config_docs(
        output: Path = typer.Option(Path("docs/configuration.md"), help="Where to write."),
    ) -> None:
        """Write the configuration reference generated from the settings model."""
        output.write_text(settings_reference_markdown())
        console.print(f"wrote {output}")

    app.add_typer(config_app, name="config")
