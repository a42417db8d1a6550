"""The ``dicomvault`` command: one typer app whose subcommands live in their own modules.

``serve`` runs the archive; ``import``, ``find``, ``verify``, ``stats``, ``delete``, ``send`` and the others work
directly on the same index and storage (safe while ``serve`` runs), found as ``cli.discovery`` says.
Sub-apps of other areas (``token``, ``storage``, ``jobs``) are registered
by the composition below, next to the commands of this package.
"""

from __future__ import annotations

import typer

from dicomvault import __version__
from dicomvault.cli.admin import stats_command, verify_command
from dicomvault.cli.coerce import app as coerce_app
from dicomvault.cli.delete import delete_command
from dicomvault.cli.dimse_workers import dimse_worker_command
from dicomvault.cli.find import find_command
from dicomvault.cli.importer import import_command
from dicomvault.cli.index_migrate import app as index_app
from dicomvault.cli.jobs import app as jobs_app
from dicomvault.cli.migrate import migrate_command
from dicomvault.cli.peers import app as peers_app
from dicomvault.cli.recall import recall_command
from dicomvault.cli.routes import app as routes_app
from dicomvault.cli.send import send_command
from dicomvault.cli.serve import serve_command
from dicomvault.cli.shares import app as share_app
from dicomvault.cli.storage import app as storage_app
from dicomvault.cli.tiers import lifecycle_app, tier_app
from dicomvault.cli.tokens import app as token_app
from dicomvault.cli.trash import app as trash_app
from dicomvault.cli.trash import deletions_command

app = typer.Typer(
    name="dicomvault",
    help="DicomVault: an enterprise imaging archive (DIMSE + DICOMweb).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold patient data
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dicomvault {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """DicomVault: an enterprise imaging archive (DIMSE + DICOMweb)."""


app.command("serve")(serve_command)
app.command("import")(import_command)
app.command("find")(find_command)
app.command("verify")(verify_command)
app.command("stats")(stats_command)
app.command("recall")(recall_command)
app.command("delete")(delete_command)
app.command("send")(send_command)
app.command("deletions")(deletions_command)
app.command("migrate")(migrate_command)
app.command("dimse-worker", hidden=True)(dimse_worker_command)
app.add_typer(token_app, name="token")
app.add_typer(share_app, name="share")
app.add_typer(storage_app, name="storage")
app.add_typer(jobs_app, name="jobs")
app.add_typer(index_app, name="index")
app.add_typer(lifecycle_app, name="lifecycle")
app.add_typer(tier_app, name="tier")
app.add_typer(trash_app, name="trash")
app.add_typer(peers_app, name="peers")
app.add_typer(coerce_app, name="coerce")
app.add_typer(routes_app, name="routes")


def main() -> None:
    """Console-script entry point (``dicomvault``)."""
    app()
