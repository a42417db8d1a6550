"""``dicomvault migrate``: absorb a legacy PACS's studies into the archive (issue #12 item 5).

    dicomvault migrate --from OLDPACS --via move --listen-port 11113 [--since 2015-01-01] [--until 2019-12-31]
    dicomvault migrate --from OLDPACS --via get --modality CT --max-studies-in-flight 4 --max-bytes-per-second 20000000
    dicomvault migrate --from OLDPACS --via dicomweb --studies uids.txt --report report.json

The peer is a registered or configured peer (``dicomvault peers add OLDPACS --host … --port …
[--dicomweb-url …]``). Run the same command again after an interruption: studies already verified are not fetched
again; the others are completed. Exit status: 0 when every study is migrated or skipped, 1 when a study failed or
the peer could not be queried, 2 for a usage or configuration problem.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from dicomvault.bootstrap import build_migration
from dicomvault.cli.common import ConfigFile, DataDir, IndexUrl, console, fail, human_bytes, load_settings, open_archive
from dicomvault.domain.errors import DicomVaultError, NotFound
from dicomvault.domain.migration import StudyFilter, Via, check_date
from dicomvault.logging_setup import configure_logging
from dicomvault.services.migration import MigrationReport, MigrationService, Tick


class _Rate(ProgressColumn):
    """Studies per second over the run so far."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:.2f} studies/s", style="progress.data.speed")


def _read_uids(path: Path) -> tuple[str, ...]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    uids = [line.split("#", 1)[0].strip() for line in lines]
    bad = [u for u in uids if u and any(c not in "0123456789." for c in u)]
    if bad:
        fail(f"{path}: {bad[0]!r} is not a Study Instance UID (one per line)")
    return tuple(dict.fromkeys(u for u in uids if u))


def _write_report(report: MigrationReport, path: Path) -> None:
    path.write_text(json.dumps(report.as_json(), indent=2) + "\n")
    path.with_suffix(".txt").write_text(report.text() + "\n")


def migrate_command(
    peer: Annotated[str, typer.Option("--from", help="AE title of the legacy PACS (dicomvault peers list).")],
    since: Annotated[str | None, typer.Option("--since", help="Studies from this Study Date (YYYY-MM-DD).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Studies up to this Study Date, inclusive.")] = None,
    modality: Annotated[str | None, typer.Option("--modality", help="Only studies with this modality.")] = None,
    studies: Annotated[Path | None, typer.Option(
        "--studies", help="File of Study Instance UIDs to migrate, one per line (# starts a comment).")] = None,
    via: Annotated[Via, typer.Option("--via", help="move: C-MOVE to this archive; get: C-GET; dicomweb: "
                                     "QIDO-RS + WADO-RS (needs the peer's DICOMweb URL).")] = Via.MOVE,
    listen_port: Annotated[int | None, typer.Option(
        "--listen-port", help="--via move: receive on this port in this process (the peer must know our AE "
        "title at this host and port). Without it the running archive (dicomvault serve) receives.")] = None,
    listen_host: Annotated[str, typer.Option("--listen-host", help="Interface of --listen-port.")] = "0.0.0.0",
    move_aet: Annotated[str | None, typer.Option(
        "--move-aet", help="--via move: the move destination AE title (default: the archive's AE title).")] = None,
    in_flight: Annotated[int, typer.Option("--max-studies-in-flight", min=1, max=64,
                                           help="Studies pulled at the same time.")] = 2,
    bytes_per_second: Annotated[int, typer.Option(
        "--max-bytes-per-second", min=0, help="Average receive rate limit (0: none; not applied when the "
        "running archive receives a C-MOVE).")] = 0,
    timeout: Annotated[float, typer.Option("--timeout", min=1.0, help="Seconds a peer may stay silent.")] = 30.0,
    report_path: Annotated[Path | None, typer.Option(
        "--report", help="Write the report as JSON here (and a text summary next to it, .txt).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="Log level (INFO logs every instance stored).")
                         ] = "WARNING",
    config: ConfigFile = None, data_dir: DataDir = None, index_url: IndexUrl = None,
) -> None:
    """Migrate studies from a legacy PACS: query, pull, verify every instance; resumable and throttled."""
    try:
        flt = StudyFilter(since=check_date(since), until=check_date(until),
                          modality=modality.strip().upper() if modality else None,
                          study_uids=_read_uids(studies) if studies is not None else ())
    except ValueError as exc:
        fail(f"error: {exc}")
    if listen_port is not None and via != Via.MOVE:
        fail("--listen-port applies to --via move only")
    settings = load_settings(config, data_dir=data_dir, index_url=index_url)
    try:
        configure_logging(log_level)
    except ValueError as exc:
        fail(f"error: {exc}")
    archive = open_archive(settings)
    stop = threading.Event()

    def interrupted(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        console.print("[yellow]stopping after the studies in flight (Ctrl-C again to abort)[/yellow]")

    previous = signal.signal(signal.SIGINT, interrupted) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        try:
            service = build_migration(archive, via=via, listen_port=listen_port, listen_host=listen_host,
                                      move_aet=move_aet, bytes_per_second=bytes_per_second, timeout=timeout)
            if via == Via.MOVE:
                dest = (move_aet or settings.aet).strip()
                where = f"port {listen_port} of this host" if listen_port else \
                    f"the running archive's DIMSE port ({settings.dimse_port})"
                console.print(f"C-MOVE destination {dest}: the peer must send it to {where}", highlight=False)
            report = _run(service, peer, flt, in_flight, stop, quiet)
        except NotFound as exc:
            fail(f"error: {exc.message}", 1)
        except DicomVaultError as exc:
            fail(f"error: {exc.message}", 1)
        except OSError as exc:  # the storage SCP's port
            fail(f"error: cannot listen on {listen_host}:{listen_port}: {exc.strerror}", 2)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        archive.close()
    if report_path is not None:
        _write_report(report, report_path)
    console.print(report.text(), highlight=False, soft_wrap=True)
    if any("move destination" in (r.reason or "") for r in report.failed):
        console.print(f"[yellow]the peer does not know the move destination: add AE title "
                      f"{(move_aet or settings.aet).strip()} with this host and port "
                      f"{listen_port or settings.dimse_port} to its DICOM nodes, then run again[/yellow]")
    if not report.ok:
        raise typer.Exit(1)


def _run(service: MigrationService, peer: str, flt: StudyFilter, in_flight: int, stop: threading.Event,
         quiet: bool) -> MigrationReport:
    if quiet:
        return service.run(peer, flt, max_in_flight=in_flight, stop=stop)
    columns = [TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(),
               TextColumn("{task.fields[bytes]}"), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(f"studies from {peer}", total=None, bytes="")

        def tick(t: Tick) -> None:
            bar.update(task, total=t.total, completed=t.finished, bytes=human_bytes(t.bytes))

        return service.run(peer, flt, max_in_flight=in_flight, progress=tick, stop=stop)
