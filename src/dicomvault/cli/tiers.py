"""``dicomvault lifecycle`` (plan, run) and ``dicomvault tier status``: storage tiers from the command line.

    dicomvault lifecycle plan            # dry run: per rule, how many studies, instances and bytes would change
    dicomvault lifecycle run             # queue the work and do it now, in this process (progress shown)
    dicomvault lifecycle run --queue     # only queue it: the running servers' tier workers do it
    dicomvault tier status               # per store: studies, copies, bytes (and per modality); pending work;
                                         # space saved by compression at rest per modality

Safe while ``serve`` runs: the work goes through the durable job queue, one job per study across every process,
so this command and the servers never work on the same study at once.
"""

from __future__ import annotations

import json
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
)
from dicomvault.domain.errors import DicomVaultError
from dicomvault.jobs.handlers import TIER_KINDS, default_handlers
from dicomvault.jobs.worker import Worker
from dicomvault.ports.jobs import JobState
from dicomvault.services.archive import Archive
from dicomvault.services.tiering import TierService

lifecycle_app = typer.Typer(help="Lifecycle rules: what would move (plan) and doing it (run).",
                            no_args_is_help=True)
tier_app = typer.Typer(help="Storage tiers: what each store holds.", no_args_is_help=True)

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _open(config: Path | None, data_dir: Path | None, index_url: str | None,
          storage_url: str | None) -> tuple[Archive, TierService]:
    settings = load_settings(config, data_dir=data_dir, index_url=index_url, storage_url=storage_url)
    archive = open_archive(settings, create=False)
    if archive.tiering is None:
        archive.close()
        fail("this archive has no tier service")
    return archive, archive.tiering


@lifecycle_app.command("plan")
def plan_command(
    as_json: AsJson = False, config: ConfigFile = None, data_dir: DataDir = None, index_url: IndexUrl = None,
    storage_url: StorageUrl = None,
) -> None:
    """Show what the lifecycle rules would do now (nothing is changed)."""
    archive, tiering = _open(config, data_dir, index_url, storage_url)
    try:
        if not tiering.rules:
            console.print("no lifecycle rules are configured ([[lifecycle]] in the configuration file)")
            return
        plans = tiering.plan()
    except DicomVaultError as exc:
        fail(f"error: {exc.message}", 1)
    finally:
        archive.close()
    if as_json:
        typer.echo(json.dumps([vars(p) for p in plans], indent=2))
        return
    table = Table(title="Lifecycle plan (dry run)")
    for column in ("rule", "action", "studies", "instances", "bytes"):
        table.add_column(column, justify="right" if column in ("studies", "instances", "bytes") else "left")
    for p in plans:
        table.add_row(p.rule, p.action, str(p.studies), str(p.instances), human_bytes(p.bytes))
    console.print(table)
    console.print("Several rules may select one study; its placement is resolved from all of them when it runs.")


@lifecycle_app.command("run")
def run_command(
    queue_only: Annotated[bool, typer.Option("--queue", help="Only queue the work for the servers' workers.")] = False,
    config: ConfigFile = None, data_dir: DataDir = None, index_url: IndexUrl = None, storage_url: StorageUrl = None,
) -> None:
    """Queue a job for every study the rules select, then (unless --queue) do the tier work in this process."""
    archive, tiering = _open(config, data_dir, index_url, storage_url)
    try:
        scheduled = tiering.schedule()
        console.print(f"{scheduled} studies selected by the lifecycle rules")
        if queue_only or not scheduled or archive.jobs is None:
            return
        handlers = default_handlers(archive)
        worker = Worker(archive.jobs, handlers, kinds=[k for k in TIER_KINDS if k in handlers], poll_interval=0)
        done = 0
        with console.status("working…") as status:
            while worker.run_once():
                done += 1
                status.update(f"{done} studies done")
        failed = [j for j in archive.jobs.list(JobState.FAILED, limit=1000) if j.kind in TIER_KINDS]
        console.print(f"{done} tier jobs run in this process"
                      + (f"; {len(failed)} failed (dicomvault jobs list --state failed)" if failed else ""))
    except DicomVaultError as exc:
        fail(f"error: {exc.message}", 1)
    finally:
        archive.close()


@tier_app.command("status")
def status_command(
    as_json: AsJson = False, config: ConfigFile = None, data_dir: DataDir = None, index_url: IndexUrl = None,
    storage_url: StorageUrl = None,
) -> None:
    """Per store: studies, copies and bytes the index records (and per modality); tier jobs pending."""
    archive, _ = _open(config, data_dir, index_url, storage_url)
    try:
        usage = archive.index.store_usage()
        counts = {state: 0 for state in (JobState.QUEUED, JobState.RUNNING, JobState.FAILED)}
        if archive.jobs is not None:
            for state in counts:
                counts[state] = sum(1 for j in archive.jobs.list(state, limit=10_000) if j.kind in TIER_KINDS)
        pending, running, failed = counts[JobState.QUEUED], counts[JobState.RUNNING], counts[JobState.FAILED]
        stores = archive.tiers.names if archive.tiers is not None else []
        described = {name: archive.tiers.store(name).describe() for name in stores} if archive.tiers else {}
        savings = archive.index.compression_savings()
        skipped = archive.index.compression_skip_reasons()
    except DicomVaultError as exc:
        fail(f"error: {exc.message}", 1)
    finally:
        archive.close()
    by_store = {u.store: u for u in usage}
    if as_json:
        typer.echo(json.dumps({
            "stores": [{"store": name, "url": described.get(name, ""),
                        "studies": by_store[name].studies if name in by_store else 0,
                        "copies": by_store[name].copies if name in by_store else 0,
                        "bytes": by_store[name].bytes if name in by_store else 0,
                        "by_modality": {m: {"copies": c, "bytes": b}
                                        for m, (c, b) in (by_store[name].by_modality if name in by_store
                                                          else {}).items()}}
                       for name in [*stores, *(s for s in by_store if s not in stores)]],
            "jobs": {"queued": pending, "running": running, "failed": failed},
            "compression": {
                "by_modality": [{"modality": c.modality, "instances": c.instances,
                                 "original_bytes": c.original_bytes, "stored_bytes": c.stored_bytes,
                                 "saved_bytes": c.original_bytes - c.stored_bytes, "ratio": round(c.ratio, 3)}
                                for c in savings],
                "left_uncompressed": [{"reason": r, "objects": n} for r, n in skipped],
            },
        }, indent=2))
        return
    table = Table(title="Stores (read in this order)")
    for column in ("store", "url", "studies", "copies", "bytes"):
        table.add_column(column, justify="right" if column in ("studies", "copies", "bytes") else "left")
    for name in [*stores, *(s for s in by_store if s not in stores)]:
        u = by_store.get(name)
        table.add_row(name + ("" if name in stores else " (not configured!)"), described.get(name, ""),
                      str(u.studies if u else 0), str(u.copies if u else 0), human_bytes(u.bytes if u else 0))
    console.print(table)
    modality = Table(title="Copies per store and modality")
    for column in ("store", "modality", "copies", "bytes"):
        modality.add_column(column)
    for u in usage:
        for m, (copies, size) in sorted(u.by_modality.items()):
            modality.add_row(u.store, m or "(none)", str(copies), human_bytes(size))
    console.print(modality)
    if savings:
        saved = Table(title="Compressed at rest (lossless; originals given back bit for bit)")
        for column in ("modality", "instances", "received", "stored", "saved", "ratio"):
            saved.add_column(column, justify="left" if column == "modality" else "right")
        for c in savings:
            saved.add_row(c.modality or "(none)", str(c.instances), human_bytes(c.original_bytes),
                          human_bytes(c.stored_bytes), human_bytes(c.original_bytes - c.stored_bytes),
                          f"{c.ratio:.2f}x")
        console.print(saved)
    if skipped:
        left = Table(title="Left uncompressed (most frequent reasons)")
        left.add_column("reason")
        left.add_column("objects", justify="right")
        for reason, n in skipped:
            left.add_row(reason, str(n))
        console.print(left)
    console.print(f"tier jobs: {pending} queued, {running} running, {failed} failed")
