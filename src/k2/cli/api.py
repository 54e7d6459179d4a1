"""REST API commands: ``k2 api serve`` and ``k2 keys create|list|revoke``.

Example::

    k2 keys create --name research --scope read     # prints the key once
    k2 api serve                                    # on api_host:api_port
    curl -H "X-API-Key: k2_..." "http://127.0.0.1:8000/v1/bars?symbol=BTCUSDT&interval=1m"
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from k2.config import ENV_PREFIX, HTTP_KEEP_ALIVE_SECONDS, Settings, load_settings

console = Console()


@contextmanager
def _shared_cache_dir(settings: Settings) -> Iterator[None]:
    """With several workers and ``api_cache_dir`` unset (empty: never shared): a fresh directory under ``data_dir`` for this
    run's shared result cache, named to the workers through ``K2_API_CACHE_DIR``, removed at exit (a
    later release never reads this one's rows)."""
    if settings.api_workers == 1 or settings.api_cache_dir is not None or settings.api_cache_max_bytes <= 0:
        yield
        return
    root = Path(settings.data_dir) / "api-cache"
    root.mkdir(parents=True, exist_ok=True)
    directory = tempfile.mkdtemp(prefix="run-", dir=root)
    os.environ[f"{ENV_PREFIX}API_CACHE_DIR"] = directory
    try:
        yield
    finally:
        os.environ.pop(f"{ENV_PREFIX}API_CACHE_DIR", None)
        shutil.rmtree(directory, ignore_errors=True)


def register(app: typer.Typer) -> None:
    """Add ``k2 api`` and ``k2 keys`` to ``app``."""
    api_app = typer.Typer(help="The REST API.", no_args_is_help=True)
    keys_app = typer.Typer(help="API keys (stored hashed; shown once at creation).", no_args_is_help=True)

    @api_app.command("serve")
    def serve(
        host: str = typer.Option(None, help="Bind address (default: api_host)."),
        port: int = typer.Option(None, help="Port (default: api_port)."),
    ) -> None:
        """Serve the REST API (uvicorn) until interrupted."""
        import uvicorn

        from k2.api.app import create_app

        settings = load_settings()
        # One process: the app built here. Several (K2_API_WORKERS): each worker builds its own from the
        # settings (the environment), sharing one result cache directory made for this run.
        target: Any = create_app(settings) if settings.api_workers == 1 else "k2.api.app:app_from_settings"
        with _shared_cache_dir(settings):
            uvicorn.run(
                target,
                factory=settings.api_workers > 1,
                workers=settings.api_workers,
                host=host or settings.api_host,
                port=port or settings.api_port,
                log_level=settings.log_level.lower(),
                access_log=settings.log_level == "DEBUG",
                timeout_graceful_shutdown=5,
                timeout_keep_alive=HTTP_KEEP_ALIVE_SECONDS,
            )

    @keys_app.command("create")
    def keys_create(
        name: str = typer.Option(..., help="Who or what uses the key."),
        scope: str = typer.Option("read", help="read (data endpoints) or admin (also /v1/dlq, /v1/keys)."),
    ) -> None:
        """Create an API key and print it (once: only its hash is stored)."""
        from k2.api.keys import KeyStore, KeyStoreError

        try:
            key, info = KeyStore.from_settings(load_settings()).create(name, scope)
        except KeyStoreError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        console.print(
            f"created key {info.key_id} ({info.name}, scope {info.scope}); store it now, it is not shown again:",
            highlight=False,
        )
        typer.echo(key)

    @keys_app.command("list")
    def keys_list() -> None:
        """List keys (id, name, scope, created, revoked); secrets are never shown."""
        from k2.api.keys import KeyStore

        infos = KeyStore.from_settings(load_settings()).list_keys()
        table = Table("key id", "name", "scope", "created", "revoked")
        for info in infos:
            table.add_row(
                info.key_id,
                info.name,
                info.scope,
                info.created_at.isoformat(timespec="seconds"),
                info.revoked_at.isoformat(timespec="seconds") if info.revoked_at else "",
            )
        console.print(table)

    @keys_app.command("revoke")
    def keys_revoke(
        key: str = typer.Argument(
            ..., help="Key id (from `k2 keys list`) or name (revokes all keys of that name)."
        ),
    ) -> None:
        """Revoke a key: requests with it get 401 from then on."""
        from k2.api.keys import KeyStore, KeyStoreError

        try:
            revoked = KeyStore.from_settings(load_settings()).revoke(key)
        except KeyStoreError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        for info in revoked:
            console.print(f"revoked {info.key_id} ({info.name}, scope {info.scope})", highlight=False)

    app.add_typer(api_app, name="api")
    app.add_typer(keys_app, name="keys")
