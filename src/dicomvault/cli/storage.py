"""``dicomvault storage``: inspect the blob store and migrate it to another one (e.g. filesystem → S3).

The migration workflow (see ``services.storage_migration`` for why reads never break)::

    dicomvault storage migrate --to 's3://bucket/vault?region=eu-west-1' --dry-run   # what would be copied
    dicomvault storage migrate --to 's3://bucket/vault?region=eu-west-1'            # copy + verify (resumable)
    # stop the archive, run the same command once more (copies what arrived meanwhile), then restart with
    # storage_url = "s3://bucket/vault?region=eu-west-1"
    dicomvault storage migrate --from file:///old/blobs --to 's3://…' --delete-source   # optional clean-up
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from dicomvault.bootstrap import Archive, ArchiveNotFound, build_archive, build_blob_store, build_storage_migration
from dicomvault.cli.common import NO_ARCHIVE_HINT, fail, load_settings
from dicomvault.domain.errors import DicomVaultError
from dicomvault.services.storage_migration import (
    MigrationEvent,
    MigrationReport,
    Outcome,
)
from dicomvault.settings import Settings

app = typer.Typer(help="Inspect the blob store and migrate it to another store.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML configuration file.")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Data folder (index and default blob store).")]
IndexOpt = Annotated[str | None, typer.Option("--index-url", help="Index database URL.")]
StorageOpt = Annotated[str | None, typer.Option("--storage-url", help="The archive's configured blob store URL.")]


def _settings(ctx: typer.Context, config: Path | None, data_dir: Path | None, index_url: str | None,
              storage_url: str | None) -> Settings:
    """Settings from these flags, else the parent command's (``ctx.obj`` when it is a Settings), env, TOML."""
    if isinstance(ctx.obj, Settings) and config is None and data_dir is None and index_url is None \
            and storage_url is None:
        return ctx.obj
    return load_settings(config, data_dir=data_dir, index_url=index_url, storage_url=storage_url)


def _archive(settings: Settings) -> Archive:
    try:
        return build_archive(settings, create=False)  # inspect or move what an existing archive holds
    except ArchiveNotFound as exc:
        fail(f"error: {exc.message} ({NO_ARCHIVE_HINT})")
    except DicomVaultError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{n} B"
        value /= 1024
    return f"{n} B"  # pragma: no cover - loop always returns


@app.command()
def info(
    ctx: typer.Context,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    index_url: IndexOpt = None,
    storage_url: StorageOpt = None,
) -> None:
    """Describe the configured blob store: objects and bytes held, against what the index references."""
    settings = _settings(ctx, config, data_dir, index_url, storage_url)
    archive = _archive(settings)
    try:
        objects, nbytes = archive.status.storage_usage()
        stats = archive.status.stats()
    except DicomVaultError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc
    finally:
        archive.close()
    table = Table(show_header=False, box=None)
    table.add_row("store", archive.status.storage())
    table.add_row("objects", f"{objects}")
    table.add_row("bytes", f"{nbytes} ({_size(nbytes)})")
    table.add_row("indexed instances", f"{stats.instances} ({_size(stats.bytes)})")
    console.print(table)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("•"),
        DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(), console=console, transient=False,
    )


def _run_with_progress(
    title: str, total_bytes: int, count: int,
    run: Callable[[Callable[[MigrationEvent], None]], MigrationReport],
) -> MigrationReport:
    """Drive a migration step with one bar counting objects and bytes."""
    with _progress() as progress:
        task: TaskID = progress.add_task(title, total=total_bytes)
        done = 0

        def on_event(event: MigrationEvent) -> None:
            nonlocal done
            done += 1
            progress.update(task, advance=event.blob.size, description=f"{title} {done}/{count}")
            if event.outcome is Outcome.FAILED:
                progress.console.print(f"[red]failed[/red] {event.blob.key}: {event.detail}")

        return run(on_event)


@app.command()
def migrate(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="Target blob store URL (file:///…, s3://bucket/prefix?…).")],
    source_url: Annotated[str | None, typer.Option(
        "--from", help="Source store URL (default: the configured store).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be copied; change nothing.")] = False,
    delete_source: Annotated[bool, typer.Option(
        "--delete-source",
        help="After verifying every copy, delete the source copies. Only once storage_url points at the target.",
    )] = False,
    deep_verify: Annotated[bool, typer.Option(
        "--deep-verify", help="Re-hash blobs already in the target too (default: size check).")] = False,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Parallel copies.")] = 4,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    index_url: IndexOpt = None,
    storage_url: StorageOpt = None,
) -> None:
    """Copy every blob the index references to another store and verify it; resumable; reads never break."""
    settings = _settings(ctx, config, data_dir, index_url, storage_url)
    archive = _archive(settings)
    try:
        configured = archive.status.storage()
        source = build_blob_store(source_url, settings) if source_url else None
        target = build_blob_store(to, settings)
        if delete_source and (source is None or source.describe() == configured):
            err.print("[red]refusing --delete-source:[/red] the archive is still configured to read from "
                      f"{configured}. Switch storage_url to the target first, then pass --from.")
            raise typer.Exit(2)
        migration = build_storage_migration(archive, target, source, workers=workers, deep_verify=deep_verify)
        source_name = migration.source.describe()
        blobs = migration.referenced_blobs()
        console.print(f"{len(blobs)} referenced blobs, {_size(sum(b.size for b in blobs))}: "
                      f"{source_name} → {target.describe()}")
        if dry_run:
            plan = migration.plan(blobs)
            for blob in plan.missing:
                console.print(f"would copy {blob.key} {blob.size}")
            console.print(f"dry run: {len(plan.missing)} blobs ({plan.missing_bytes} bytes, "
                          f"{_size(plan.missing_bytes)}) to copy; {plan.present} already in the target")
            return
        report = _run_with_progress("copy", sum(b.size for b in blobs), len(blobs),
                                    lambda cb: migration.run(blobs, cb))
        console.print(f"copied {report.copied} ({_size(report.copied_bytes)}), already present {report.present}, "
                      f"failed {len(report.failures)}")
        if not report.complete:
            err.print("[red]not complete:[/red] fix the failures above and run the command again; keep the "
                      "current storage_url.")
            raise typer.Exit(1)
        if delete_source:
            removed = _run_with_progress("delete source", sum(b.size for b in blobs), len(blobs),
                                         lambda cb: migration.delete_source(blobs, cb))
            console.print(f"deleted {removed.deleted} source blobs; kept {len(removed.failures)}")
            raise typer.Exit(0 if not removed.failures else 1)
        if configured != target.describe():
            console.print(
                "[green]All referenced blobs are verified in the target.[/green]\n"
                "To switch: stop the archive, run this command again (it copies only what arrived meanwhile), "
                "then restart with the new setting:\n"
                f"  storage_url = \"{to}\"            # TOML\n"
                f"  DICOMVAULT_STORAGE_URL='{to}'    # environment\n"
                "The source store is left untouched (remove it later with --from … --delete-source)."
            )
    except DicomVaultError as exc:
        err.print(f"[red]error:[/red] {exc.message} (nothing is lost; run the command again to resume)")
        raise typer.Exit(1) from exc
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    finally:
        archive.close()
