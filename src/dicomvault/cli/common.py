"""Options and helpers shared by the ``dicomvault`` subcommands (settings loading, error exits, formatting)."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import typer
from rich.console import Console
from rich.markup import escape

from dicomvault import config_errors
from dicomvault.bootstrap import Archive, ArchiveNotFound, build_archive
from dicomvault.cli import discovery
from dicomvault.domain.errors import DicomVaultError
from dicomvault.domain.trash import Deletion
from dicomvault.settings import Settings

console = Console()
err = Console(stderr=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Folder of the embedded index and blob store.")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="TOML configuration file.")]
IndexUrl = Annotated[
    str | None, typer.Option("--index-url", help="Index database URL (sqlite:///… or postgresql://…).")
]
StorageUrl = Annotated[str | None, typer.Option("--storage-url", help="Blob store URL (file:///… or s3://…).")]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``message`` in red on stderr (as it is: brackets are no markup, long lines are not wrapped) and exit
    with ``code`` (2: configuration/usage problems)."""
    err.print(f"[red]{escape(message)}[/red]", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def load_settings(config: Path | None, *, use_record: bool = True, quiet: bool = False,
                  **overrides: Any) -> Settings:
    """The settings of the archive the command means (``discovery``: options, environment, ``./dicomvault.toml``,
    then, with ``use_record``, the last server's record), with readable errors: a missing file, bad TOML or a
    refused value exits 2 with one line per fault, naming the file and line where it lies (``config_errors``),
    instead of a traceback. When the server record chose the archive, one dim line on stderr says so (unless
    ``quiet``: ``--json`` output)."""
    found = discovery.resolve(config, overrides, use_record=use_record)
    record = found.record
    try:
        settings = config_errors.load_settings(found.config, **found.overrides)
    except config_errors.ConfigurationError as exc:
        origin = f" (from the record of the last `dicomvault serve`, {discovery.record_path()})" if record else ""
        fail("\n".join(f"configuration error{origin}: {problem}" for problem in exc.problems))
    if record is not None:
        if redact_url(settings.resolved_index_url) != record.index_url:
            fail(f"the last `dicomvault serve` ({discovery.record_path()}) used the index {record.index_url}, whose "
                 "password is in neither its configuration file nor the environment: pass --index-url or --config")
        if not quiet:
            err.print(f"[dim]{escape(record.describe())}[/dim]", highlight=False, soft_wrap=True)
    return settings


#: How to start an archive, for the messages of commands that found none.
NO_ARCHIVE_HINT = "start one with `dicomvault serve`, or pass --data-dir/--config"


def open_archive(settings: Settings, *, run_migrations: bool = True, create: bool = True) -> Archive:
    """Build the archive (runs migrations unless told not to); an unreachable backend exits 2 with the reason.
    ``create=False`` (read-only commands, and those that act on what is stored): no archive where the settings
    point exits 2 — "no archive at …" — instead of creating an empty one."""
    try:
        return build_archive(settings, run_migrations=run_migrations, create=create)
    except ArchiveNotFound as exc:
        fail(f"{exc.message} ({NO_ARCHIVE_HINT})")
    except DicomVaultError as exc:
        fail(f"cannot open the archive: {exc.message}")
    except Exception as exc:  # database driver / object store errors at start-up
        fail(f"cannot open the archive: {type(exc).__name__}: {exc}")


def operator(reason: str = "command line") -> Deletion:
    """Who acts, for the deletion log: ``cli:<user name>`` (``unknown`` where the system has no name for it)."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no user name to be had (a container without passwd entry)
        user = "unknown"
    return Deletion(f"cli:{user}", reason)


def redact_url(url: str) -> str:
    """The URL without its password (banner, logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else "***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
