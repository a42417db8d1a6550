"""``dicomvault share``: create, list, inspect and revoke share links (one study, read-only, for a limited time).

The command line works on the index directly, as the archive's administrator: links it creates are recorded as
created by ``cli:<login name>``. ``create`` prints the link once (stdout, alone on its line, so scripts can capture
it); only its hash is stored. ``--password`` asks for a password (not echoed, typed twice) which the recipient must
give to open the link. The link is ``<base URL>/share/<secret>``; the base URL is the server's address unless
``--base-url`` gives the public one (a reverse proxy's).
"""

from __future__ import annotations

import getpass
import json
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
from dicomvault.services.auth import Principal
from dicomvault.services.shares import ShareService
from dicomvault.services.tokens import parse_expiry
from dicomvault.settings import Settings

app = typer.Typer(help="Share links: one study, read-only, for a limited time.", no_args_is_help=True)
err = Console(stderr=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Folder of the embedded index and blob store.")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="TOML configuration file.")]
IndexUrl = Annotated[str | None, typer.Option("--index-url", help="Index database URL.")]


@contextmanager
def _shares(data_dir: Path | None, config: Path | None, index_url: str | None) -> Iterator[tuple[ShareService,
                                                                                                  Settings]]:
    settings = load_settings(config, data_dir=data_dir, index_url=index_url)
    archive = open_archive(settings)
    try:
        if archive.shares is None:
            err.print("[red]this archive has no share link store[/red]")
            raise typer.Exit(2)
        yield archive.shares, settings
    except DicomVaultError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None
    finally:
        archive.close()


def operator() -> Principal:
    """Who runs the command: the archive's administrator (the command line reaches the index directly)."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return Principal(f"cli:{name}"[:256], frozenset({"admin"}), "cli")


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment else ""


@app.command()
def create(
    study: Annotated[str, typer.Argument(help="Study Instance UID of the study to share.")],
    expires: Annotated[str | None, typer.Option(
        "--expires", help="Valid for this long: 12h, 7d, 2w (default: share_default_days; at most "
        "share_max_days).")] = None,
    password: Annotated[bool, typer.Option("--password", help="Ask for a password the recipient must give.")] = False,
    deidentify: Annotated[bool, typer.Option(
        "--deidentify", help="De-identify what the link shows (not available yet: refused).")] = False,
    base_url: Annotated[str | None, typer.Option(
        "--base-url", help="Public address of the archive (default http://<host>:<http_port>).")] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    index_url: IndexUrl = None,
) -> None:
    """Create a link to one study and print it once."""
    secret_password = None
    if password:
        secret_password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    with _shares(data_dir, config, index_url) as (shares, settings):
        expiry = parse_expiry(expires, None, datetime.now(UTC)) if expires else None
        created = shares.create(operator(), study, expires_at=expiry, password=secret_password,
                                deidentify=deidentify)
    base = (base_url or f"http://{settings.host}:{settings.http_port}").rstrip("/")
    record = created.record
    err.print(f"created share link [bold]{record.id}[/bold] (expires {_when(record.expires_at)}"
              f"{', password protected' if record.password_hash else ''}); it cannot be shown again:")
    typer.echo(f"{base}/share/{created.secret}")


@app.command("list")
def list_links(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array (for scripts).")] = False,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    index_url: IndexUrl = None,
) -> None:
    """List share links, most recent first (never their secrets)."""
    with _shares(data_dir, config, index_url) as (shares, _):
        links = shares.all()
    now = datetime.now(UTC)
    if as_json:
        typer.echo(json.dumps([{
            "id": s.id, "study": s.study_uid, "created_by": s.created_by, "created_at": _when(s.created_at),
            "expires_at": _when(s.expires_at), "state": s.state(now), "password": s.password_hash is not None,
            "uses": s.uses, "last_used_at": _when(s.last_used_at) or None} for s in links], indent=2))
        return
    table = Table("id", "study", "created by", "expires", "state", "uses", "last used")
    for s in links:
        table.add_row(str(s.id), s.study_uid, s.created_by, _when(s.expires_at),
                      s.state(now) + (" (password)" if s.password_hash else ""), str(s.uses),
                      _when(s.last_used_at) or "never")
    Console().print(table)


@app.command()
def uses(
    share_id: Annotated[int, typer.Argument(help="The link's number (dicomvault share list).")],
    data_dir: DataDir = None,
    config: ConfigFile = None,
    index_url: IndexUrl = None,
) -> None:
    """Show a link's recorded uses, most recent first."""
    with _shares(data_dir, config, index_url) as (shares, _):
        shares.get(share_id)
        recorded = shares.uses(share_id)
    for use in recorded:
        typer.echo(f"{_when(use.at)}  {use.what:<14}  {use.client}")


@app.command()
def revoke(
    share_id: Annotated[int, typer.Argument(help="The link's number (dicomvault share list).")],
    data_dir: DataDir = None,
    config: ConfigFile = None,
    index_url: IndexUrl = None,
) -> None:
    """Revoke a link: it no longer opens, and sessions opened with it end."""
    with _shares(data_dir, config, index_url) as (shares, _):
        link = shares.revoke(operator(), share_id)
    typer.echo(f"revoked share link {link.id}")
