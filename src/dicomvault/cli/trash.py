"""``dicomvault trash`` (list, restore, purge) and ``dicomvault deletions``: the trash and the deletion log.

    dicomvault trash list [--json]                       # soft-deleted studies: instances, bytes, purge date
    dicomvault trash restore STUDY_UID [--series S] [--sop X]
    dicomvault trash purge --all-due                     # purge what is past its grace period now
    dicomvault trash purge STUDY_UID [--force]           # one study: what is due, or all of it with --force
    dicomvault deletions [--study UID] [--limit N] [--json]

Safe while ``serve`` runs: a restore is an ingest of the trashed bytes, a purge an ordinary blob removal
(``services.trash`` explains why the two may race). The deletion log names the operator as ``cli:<user>``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dicomvault.cli.common import (
    ConfigFile,
    DataDir,
    IndexUrl,
    StorageUrl,
    console,
    fail,
    human_bytes,
    load_settings,
    open_archive,
    operator,
)
from dicomvault.domain.errors import DicomVaultError
from dicomvault.domain.trash import Deletion
from dicomvault.services.trash import TrashService

app = typer.Typer(help="The trash: soft-deleted studies (list, restore, purge).", no_args_is_help=True)

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _operator() -> Deletion:
    return operator("command line")


@contextmanager
def _trash(config: Path | None, data_dir: Path | None, index_url: str | None,
           storage_url: str | None) -> Iterator[TrashService]:
    settings = load_settings(config, data_dir=data_dir, index_url=index_url, storage_url=storage_url)
    archive = open_archive(settings, create=False)
    try:
        if archive.trash is None:
            fail("this archive has no trash service")
        yield archive.trash
    except DicomVaultError as exc:
        fail(f"error: {exc.message}", code=1)
    finally:
        archive.close()


@app.command("list")
def list_command(
    as_json: AsJson = False, config: ConfigFile = None, data_dir: DataDir = None, index_url: IndexUrl = None,
    storage_url: StorageUrl = None,
) -> None:
    """Soft-deleted studies still in the trash, with when they will be purged."""
    with _trash(config, data_dir, index_url, storage_url) as trash:
        studies = trash.studies()
    if as_json:
        console.print(json.dumps([s.as_dict() for s in studies]), highlight=False, soft_wrap=True)
        return
    if not studies:
        console.print("the trash is empty")
        return
    table = Table("study", "instances", "size", "deleted", "purge after", "by", "reason")
    for s in studies:
        table.add_row(s.study_uid, str(s.instances), human_bytes(s.bytes), s.deleted_at.strftime("%Y-%m-%d %H:%M"),
                      s.purge_after.strftime("%Y-%m-%d %H:%M"), ", ".join(s.deleted_by), ", ".join(s.reasons))
    console.print(table)


@app.command("restore")
def restore_command(
    study_uid: Annotated[str, typer.Argument(help="Study Instance UID to restore.")],
    series: Annotated[str | None, typer.Option("--series", help="Only this series.")] = None,
    sop: Annotated[str | None, typer.Option("--sop", help="Only this instance (SOP Instance UID).")] = None,
    as_json: AsJson = False, config: ConfigFile = None, data_dir: DataDir = None, index_url: IndexUrl = None,
    storage_url: StorageUrl = None,
) -> None:
    """Bring a soft-deleted study (series, instance) back before it is purged."""
    with _trash(config, data_dir, index_url, storage_url) as trash:
        result = trash.restore(study_uid, series, sop, deletion=_operator())
    if as_json:
        console.print(json.dumps(result.as_dict()), highlight=False)
    else:
        extra = [f"{result.purged} already purged"] if result.purged else []
        extra += [f"{result.superseded_left} prior version(s) left in the trash"] if result.superseded_left else []
        extra += [f"{len(result.failed)} refused ({'; '.join(sorted(set(result.failed)))})"] if result.failed else []
        console.print(f"restored {result.restored} object(s)" + (": " + ", ".join(extra) if extra else ""),
                      highlight=False, soft_wrap=True)
    if result.failed or result.purged:
        raise typer.Exit(1)


@app.command("purge")
def purge_command(
    study_uid: Annotated[str | None, typer.Argument(help="Purge this study's trash.")] = None,
    all_due: Annotated[bool, typer.Option("--all-due", help="Purge everything past its grace period.")] = False,
    force: Annotated[bool, typer.Option("--force", help="With STUDY_UID: purge before the grace period ends.")] = False,
    as_json: AsJson = False, config: ConfigFile = None, data_dir: DataDir = None, index_url: IndexUrl = None,
    storage_url: StorageUrl = None,
) -> None:
    """Delete trashed blobs for good: what is due (--all-due), or one study's (--force: before its time)."""
    if (study_uid is None) != all_due:
        fail("give either STUDY_UID or --all-due")
    if force and study_uid is None:
        fail("--force purges one study: give its STUDY_UID")
    with _trash(config, data_dir, index_url, storage_url) as trash:
        if study_uid is not None:
            result = trash.purge(study_uid, force=force, deletion=_operator())
        else:
            result = trash.purge_due(deletion=_operator(), batches=1_000_000)
    if as_json:
        console.print(json.dumps(result.as_dict()), highlight=False)
        return
    line = f"purged {result.purged} blob(s): {result.removed} removed"
    line += f", {result.kept} kept (referenced again)" if result.kept else ""
    line += f", {result.left} left to the removal sweep" if result.left else ""
    line += f"; {result.not_due} not due yet (--force purges them)" if result.not_due else ""
    console.print(line, highlight=False)


def deletions_command(
    study: Annotated[str | None, typer.Option("--study", help="Only this Study Instance UID.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many entries, newest first.")] = 50,
    as_json: AsJson = False, config: ConfigFile = None, data_dir: DataDir = None, index_url: IndexUrl = None,
    storage_url: StorageUrl = None,
) -> None:
    """The deletion log: every delete, soft delete, restore and purge, by whom or by which rule."""
    with _trash(config, data_dir, index_url, storage_url) as trash:
        entries = trash.deletion_log(study, limit=limit)
    if as_json:
        console.print(json.dumps([e.as_dict() for e in entries]), highlight=False, soft_wrap=True)
        return
    if not entries:
        console.print("no deletions recorded")
        return
    table = Table("at", "action", "study", "series", "instance", "instances", "by", "reason")
    for e in entries:
        table.add_row(e.at.strftime("%Y-%m-%d %H:%M:%S"), e.action.value, e.study_uid, e.series_uid or "",
                      e.sop_uid or "", str(e.instances), e.by, e.reason)
    console.print(table)
