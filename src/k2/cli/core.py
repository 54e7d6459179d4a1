"""Core commands: configuration."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from pydantic import SecretStr
from rich.console import Console

from k2.cli.safe import markup
from k2.config import load_settings, settings_reference_markdown

console = Console()


def _mask_url_password(value: object) -> str:
    """``scheme://user:***@host/...`` for a URL with a password; anything else as ``str``.

    >>> _mask_url_password("postgresql://k2:hunter2@db:5432/k2"), _mask_url_password(3)
    ('postgresql://k2:***@db:5432/k2', '3')
    """
    text = str(value)
    return re.sub(r"^([a-z][a-z0-9+.-]*://[^:/@]*):[^@/]*@", r"\1:***@", text, flags=re.IGNORECASE)


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(help="Show and document configuration.", no_args_is_help=True)

    @config_app.command("show")
    def config_show() -> None:
        """Print the effective settings (secrets masked)."""
        settings = load_settings()
        for name, value in settings.model_dump().items():
            # SecretStr fields print masked; a password inside a URL (catalog_uri...) is masked too.
            shown = "***" if isinstance(value, SecretStr) else _mask_url_password(value)
            console.print(f"K2_{name.upper()} = {markup(shown)}", highlight=False)

    @config_app.command("docs")
    def config_docs(
        output: Path = typer.Option(Path("docs/configuration.md"), help="Where to write."),
    ) -> None:
        """Write the configuration reference generated from the settings model."""
        output.write_text(settings_reference_markdown())
        console.print(f"wrote {output}")

    app.add_typer(config_app, name="config")
