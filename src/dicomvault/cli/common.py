"""Options and helpers shared by the ``dicomvault`` subcommands (settings loading, error exits, formatting)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import typer
from rich.console import Console
from rich.markup import escape

from dicomvault import config_errors
from dicomvault.bootstrap import Archive, build_archive
from dicomvault.domain.errors import DicomVaultError
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


def load_settings(config: Path | None, **overrides: Any) -> Settings:
    """``Settings.load`` with readable errors: a missing file, bad TOML or a refused value exits 2 with one line per
    fault, naming the file and line where it lies (``config_errors``), instead of a traceback."""
    try:
        return config_errors.load_settings(config, **overrides)
    except config_errors.ConfigurationError as exc:
        fail("\n".join(f"configuration error: {problem}" for problem in exc.problems))


def open_archive(settings: Settings, *, run_migrations: bool = True) -> Archive:
    """Build the archive (runs migrations unless told not to); an unreachable backend exits 2 with the reason."""
    try:
        return build_archive(settings, run_migrations=run_migrations)
    except DicomVaultError as exc:
        fail(f"cannot open the archive: {exc.message}")
    except Exception as exc:  # database driver / object store errors at start-up
        fail(f"cannot open the archive: {type(exc).__name__}: {exc}")


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
