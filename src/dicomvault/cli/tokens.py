"""``dicomvault token``: create, list and revoke API tokens for the DICOMweb front end.

The secret is printed once by ``create`` (to stdout, alone on its line, so scripts can capture it) and cannot be
shown again: only its SHA-256 is stored. ``--expires-in 90d`` / ``--expires-at 2027-06-30`` give a token an
expiry time, after which it is refused (401) and listed as ``expired``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from dicomvault.cli.common import load_settings, open_archive
from dicomvault.domain.errors import DicomVaultError
from dicomvault.services.tokens import SCOPES, TokenService, parse_expiry

app = typer.Typer(help="Manage API tokens (bearer tokens for DICOMweb).", no_args_is_help=True)
err = Console(stderr=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Folder of the embedded index and blob store.")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="TOML configuration file.")]
IndexUrl = Annotated[str | None, typer.Option("--index-url", help="Index database URL.")]


@contextmanager
def _tokens(data_dir: Path | None, config: Path | None, index_url: str | None, *,
            create: bool = False) -> Iterator[TokenService]:
    """The token service of the archive; ``create``: the archive may be created (``token create`` only)."""
    settings = load_settings(config, data_dir=data_dir, index_url=index_url)
    archive = open_archive(settings, create=create)
    try:
        if archive.tokens is None:
            err.print("[red]this archive has no token store[/red]")
            raise typer.Exit(2)
        yield archive.tokens
    except DicomVaultError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None
    finally:
        archive.close()


@app.command()
def create(
    name: Annotated[str, typer.Argument(help="A name for the token (who or what uses it).")],
    scope: Annotated[list[str], typer.Option("--scope", "-s", help=f"Scope, repeatable: {', '.join(SCOPES)}.")],
    expires_in: Annotated[str | None, typer.Option(
        "--expires-in", help="Valid for this long: 12h, 90d, 4w, 1y (default: no expiry).")] = None,
    expires_at: Annotated[str | None, typer.Option(
        "--expires-at", help="Valid until this date (00:00 UTC) or ISO date-time, e.g. 2027-06-30.")] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    index_url: IndexUrl = None,
) -> None:
    """Create a token and print its secret once."""
    with _tokens(data_dir, config, index_url, create=True) as tokens:
        expiry = parse_expiry(expires_in, expires_at, datetime.now(UTC))
        record, secret = tokens.create(name, scope, expires_at=expiry)
    until = f", expires {_when(record.expires_at)}" if record.expires_at else ", no expiry"
    err.print(f"created token [bold]{record.name}[/bold] (id {record.id}, scopes {' '.join(record.scopes)}{until}); "
              "store the secret now, it cannot be shown again:")
    typer.echo(secret)


@app.command("list")
def list_tokens(data_dir: DataDir = None, config: ConfigFile = None, index_url: IndexUrl = None) -> None:
    """List tokens (never their secrets)."""
    with _tokens(data_dir, config, index_url) as tokens:
        records = tokens.all()
    now = datetime.now(UTC)
    table = Table("id", "name", "scopes", "state", "created", "expires", "revoked")
    for t in records:
        table.add_row(str(t.id), t.name, " ".join(t.scopes), t.state(now), _when(t.created_at),
                      _when(t.expires_at) if t.expires_at else "never", _when(t.revoked_at) if t.revoked_at else "")
    Console(width=200).print(table)


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment else ""


@app.command()
def revoke(
    name_or_id: Annotated[str, typer.Argument(help="Token name (its active tokens) or numeric id.")],
    data_dir: DataDir = None,
    config: ConfigFile = None,
    index_url: IndexUrl = None,
) -> None:
    """Revoke a token: requests using it get 401 from now on."""
    with _tokens(data_dir, config, index_url) as tokens:
        revoked = tokens.revoke(name_or_id)
    for t in revoked:
        typer.echo(f"revoked token {t.name} (id {t.id})")
