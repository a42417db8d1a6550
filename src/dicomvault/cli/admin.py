"""``dicomvault verify`` (fixity check and repair) and ``dicomvault stats`` (what the archive holds)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from dicomvault.cli.common import (
    ConfigFile,
    DataDir,
    IndexUrl,
    StorageUrl,
    console,
    err,
    fail,
    human_bytes,
    load_settings,
    open_archive,
)
from dicomvault.domain.errors import DicomVaultError
from dicomvault.logging_setup import configure_logging
from dicomvault.services.blob_copier import Throttle
from dicomvault.services.compression import OriginalsReport
from dicomvault.services.fixity import FixityReport, FixityService, RepairResult
from dicomvault.services.fixity_report import report_document, write_report


def _report_table(report: FixityReport, examples: int) -> Table:
    table = Table(title="Fixity check")
    table.add_column("Check")
    table.add_column("Count", justify="right")
    table.add_column("Examples", overflow="fold")
    table.add_row("copies verified", str(report.checked), human_bytes(report.bytes_read) + " read; " + ", ".join(
        f"{store}: {n}" for store, n in report.checked_by_store.items()))

    def row(title: str, names: list[str], style: str) -> None:
        more = f"\n… and {len(names) - examples} more" if len(names) > examples else ""
        table.add_row(f"[{style}]{title}[/{style}]" if names else title, str(len(names)),
                      "\n".join(names[:examples]) + more)

    row("missing copies", [f"{d.sop_uid} (blob {d.blob.key[:16]}… on {d.store or 'any store'})"
                           for d in report.missing], "red")
    row("corrupt copies", [f"{d.sop_uid} on {d.store}: {d.detail}" for d in report.corrupt], "red")
    row("DATA LOSS (no intact copy left)", [f"{d.sop_uid} (blob {d.blob.key[:16]}…)" for d in report.data_loss],
        "bold red")
    row("untracked copies (verified, not recorded)", [f"{u.key[:16]}… on {u.store}" for u in report.untracked],
        "yellow")
    row("orphan blobs (unreferenced)", report.orphans, "yellow")
    if report.recent_unreferenced:
        table.add_row("recent unreferenced blobs (in progress?)", str(report.recent_unreferenced),
                      "younger than --grace (or of unknown age): not counted")
    if report.temporary is not None:
        row("temporary files (interrupted writes)", report.temporary, "yellow")
    return table


def verify_command(
    repair: Annotated[bool, typer.Option(
        "--repair", help="Write missing or damaged copies again from an intact copy on another store, record "
        "verified untracked copies, delete orphan blobs (stored but never indexed: a crash between the two steps) "
        "and leftover temporary files of interrupted writes. Never removes indexed data.")] = False,
    drop_missing: Annotated[bool, typer.Option(
        "--drop-missing", help="Also remove the index rows of instances whose blob is missing or corrupt, so "
        "queries stop offering objects that cannot be delivered. That data is already lost: restore the blobs "
        "from a backup first if you can. Implies --repair.")] = False,
    grace: Annotated[float, typer.Option(
        "--grace", min=0, help="Unreferenced blobs and temporary files younger than this many seconds may be "
        "writes in progress on a running server: neither reported as problems nor removed. Use 0 when nothing "
        "is being stored (e.g. right after a crash, before restarting).")] = 3600.0,
    examples: Annotated[int, typer.Option("--examples", min=0, help="Examples listed per problem.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final report as JSON (for scripts).")] = False,
    max_rate: Annotated[int, typer.Option(
        "--max-bytes-per-second", min=0, help="Pace the reads (e.g. 33554432 for 32 MiB/s) so that a running "
        "archive keeps its disks for clinical traffic; 0: as fast as the stores allow.")] = 0,
    prove_originals: Annotated[bool, typer.Option(
        "--originals", help="Also rebuild the original of every object compressed at rest and compare its SHA-256 "
        "with the one received (decodes every frame: CPU-bound, about the speed of a retrieval).")] = False,
    report_file: Annotated[Path | None, typer.Option(
        "--report", help="Also write what was checked, found and repaired to this JSON file (and a readable "
        "summary beside it, FILE.txt).")] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    index_url: IndexUrl = None,
    storage_url: StorageUrl = None,
) -> None:
    """Recompute the SHA-256 of every stored object and report missing/corrupt blobs, orphans and leftovers.

    Exit code 0 when the archive is clean (after repair, if asked), 1 when problems remain, 2 on configuration
    errors. Repair may run while `serve` runs (see --grace), also while the same objects are being stored again:
    orphans are deleted through the same claim protocol as DELETE, which an ingest of identical bytes respects.
    """
    settings = load_settings(config, quiet=as_json, data_dir=data_dir, index_url=index_url, storage_url=storage_url)
    configure_logging("WARNING" if settings.log_level.upper() == "INFO" else settings.log_level)
    archive = open_archive(settings, create=False)
    fixity = archive.fixity
    result: RepairResult | None = None
    originals: OriginalsReport | None = None
    started = datetime.now(UTC)
    try:
        report = _check(fixity, grace, max_rate)
        if not as_json:
            console.print(_report_table(report, examples))
        if repair or drop_missing:
            result = RepairResult()
            fixity.repair_copies(report, result)
            result.orphans_removed = fixity.remove_orphans(report)
            result.temporary_removed = fixity.sweep_temporary(grace)
            if drop_missing:
                fixity.drop_damaged(report, result)
            report = _check(fixity, grace, max_rate)
            if not as_json:
                _print_repair(result, drop_missing)
                console.print(_report_table(report, examples))
        if prove_originals and archive.compression is not None:
            originals = archive.compression.prove_all()
    except DicomVaultError as exc:
        fail(f"verify failed: {exc.message}", 1)
    finally:
        archive.close()
    document = report_document(report, result, started=started)
    if originals is not None:
        document["originals"] = originals.as_dict()
        if not as_json:
            _print_originals(originals, examples)
    if report_file is not None:
        write_report(report_file, document)
    proved = originals is None or not originals.failed
    if as_json:
        typer.echo(json.dumps(document, indent=2))
        if not report.clean or not proved:
            raise typer.Exit(1)
        return
    if report.clean and proved:
        console.print("[green]archive is clean[/green]")
        return
    if report.data_loss and not drop_missing:
        err.print("[red]objects without any intact copy remain: restore them from a backup, or drop their index "
                  "rows with --drop-missing[/red]")
    if report.damaged and not repair:
        err.print("[yellow]run with --repair to rewrite damaged copies from intact ones on other stores[/yellow]")
    if not proved:
        err.print("[red]compressed objects whose original cannot be rebuilt remain: see the list above[/red]")
    if (report.orphans or report.temporary or report.untracked) and not repair:
        err.print("[yellow]run with --repair to remove orphans and temporary files and record untracked "
                  "copies[/yellow]")
    raise typer.Exit(1)


def _check(fixity: FixityService, grace: float, max_rate: int = 0) -> FixityReport:
    total = fixity.expected_bytes()
    with Progress(TextColumn("[bold]verifying"), BarColumn(), TextColumn("{task.fields[n]} objects"),
                  DownloadColumn(), TimeRemainingColumn(), console=err) as progress:
        task = progress.add_task("verify", total=max(total, 1), n=0)

        def advance(n: int, nbytes: int) -> None:
            progress.update(task, completed=nbytes, n=n)

        return fixity.check(progress=advance, grace=grace, throttle=Throttle(max_rate))


def _print_repair(result: RepairResult, drop_missing: bool) -> None:
    console.print(f"repair: {result.copies_repaired} damaged copies rewritten, {result.copies_adopted} untracked "
                  f"copies recorded", highlight=False)
    for damage, why in result.not_repaired:
        err.print(f"[red]not repaired: blob {damage.blob.key[:16]}… on {damage.store or 'any store'}: {why}[/red]",
                  highlight=False)
    console.print(f"repair: {result.orphans_removed} orphan blob(s) removed, "
                  f"{result.temporary_removed} temporary file(s) removed", highlight=False)
    if drop_missing:
        console.print(f"repair: {result.rows_dropped} index row(s) of lost objects dropped", highlight=False)
        for damage, why in result.not_dropped:
            err.print(f"[yellow]not dropped: {damage.sop_uid}: {why}[/yellow]", highlight=False)


def stats_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    index_url: IndexUrl = None,
    storage_url: StorageUrl = None,
) -> None:
    """Counts of patients, studies, series and instances, stored bytes, and a breakdown by modality."""
    settings = load_settings(config, quiet=as_json, data_dir=data_dir, index_url=index_url, storage_url=storage_url)
    archive = open_archive(settings, create=False)
    try:
        stats = archive.status.stats()
        storage = archive.status.storage()
    except DicomVaultError as exc:
        fail(f"stats failed: {exc.message}", 1)
    finally:
        archive.close()
    if as_json:
        typer.echo(json.dumps({
            "patients": stats.patients, "studies": stats.studies, "series": stats.series,
            "instances": stats.instances, "bytes": stats.bytes, "storage": storage,
            "by_modality": {m: {"instances": c, "bytes": b} for m, (c, b) in sorted(stats.by_modality.items())},
        }, indent=2))
        return
    table = Table(title=f"Archive ({storage})")
    table.add_column("Patients", justify="right")
    table.add_column("Studies", justify="right")
    table.add_column("Series", justify="right")
    table.add_column("Instances", justify="right")
    table.add_column("Stored", justify="right")
    table.add_row(str(stats.patients), str(stats.studies), str(stats.series), str(stats.instances),
                  human_bytes(stats.bytes))
    console.print(table)
    if stats.by_modality:
        mods = Table(title="By modality")
        mods.add_column("Modality")
        mods.add_column("Instances", justify="right")
        mods.add_column("Stored", justify="right")
        for modality, (count, nbytes) in sorted(stats.by_modality.items(), key=lambda kv: -kv[1][0]):
            mods.add_row(modality, str(count), human_bytes(nbytes))
        console.print(mods)


def _print_originals(report: OriginalsReport, examples: int) -> None:
    if not report.failed:
        console.print(f"[green]{report.checked} originals of compressed objects rebuilt bit for bit[/green]")
        return
    err.print(f"[red]{len(report.failed)} of {report.checked} compressed objects do not rebuild their original:"
              "[/red]")
    for sop, key, problem in report.failed[:examples]:
        err.print(f"  {sop} (blob {key[:16]}…): {problem}")
