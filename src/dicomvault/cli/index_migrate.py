"""``dicomvault index migrate --to postgresql://…``: move the index to another database (SQLite → PostgreSQL).

Stop the archive first (no store may commit while the copy runs; the copy reads one snapshot and anything
stored after it would be missing from the target). Blobs do not move: point every node's ``storage_url`` at the
same blob store, set ``index_url`` to the target, start again. See docs/deployment.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dicomvault.bootstrap import copy_index
from dicomvault.cli.common import load_settings
from dicomvault.domain.errors import DicomVaultError

app = typer.Typer(help="Index database maintenance.", no_args_is_help=True)
err = Console(stderr=True)


@app.callback()
def index() -> None:
    """Index database maintenance (a group, so that ``dicomvault index migrate`` keeps its name)."""


@app.command("migrate")
def migrate_index(
    to: Annotated[str, typer.Option("--to", help="Target database URL (empty), e.g. postgresql://user@host/db.")],
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Folder of the embedded index.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="TOML configuration file.")] = None,
    index_url: Annotated[str | None, typer.Option("--index-url", help="Source index URL (default: settings).")] = None,
) -> None:
    """Copy every row of the current index into the empty database at --to (same ids, one transaction)."""
    settings = load_settings(config, data_dir=data_dir, index_url=index_url)
    if to.strip() == settings.resolved_index_url:
        err.print("[red]--to names the source index itself[/red]")
        raise typer.Exit(2)
    shown: dict[str, int] = {}

    def progress(table: str, rows: int) -> None:
        if rows - shown.get(table, 0) >= 50_000:
            shown[table] = rows
            err.print(f"  {table}: {rows:,} rows …")

    try:
        counts = copy_index(settings, to, progress=progress)
    except DicomVaultError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None
    for table, n in counts.items():
        typer.echo(f"{table}\t{n}")
    err.print("index copied; now set index_url to the target on every node and start the archive")
