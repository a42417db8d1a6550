"""``dicomvault import``: bulk-load folders, files and .zip archives through the one ingest path.

Every object goes through ``IngestService.ingest`` (the same path as C-STORE and STOW-RS), so an imported object is
durable and indexed exactly like a received one, and the import can run while ``dicomvault serve`` runs on the
same data directory. Re-running an import is safe: identical objects come back as duplicates without writing.

Memory stays bounded: files are streamed from disk by the workers; zip members are copied one by one into a
``SpooledTemporaryFile`` (in memory up to ``SPOOL_MEMORY`` bytes, then on disk) by the reading thread, and at most
``2 × workers`` spooled members wait for a worker at any time.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated, BinaryIO

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from dicomvault.cli.common import ConfigFile, DataDir, IndexUrl, StorageUrl, console, err, load_settings, open_archive
from dicomvault.domain.errors import Conflict, DicomVaultError, InvalidDicom, NotDicom, TooLarge
from dicomvault.domain.records import StoreOutcome
from dicomvault.logging_setup import configure_logging
from dicomvault.services.ingest import IngestService

SPOOL_MEMORY = 4 * 1024 * 1024
EXAMPLES = 5
SOURCE = "cli-import"  # never the path: folder names often carry patient names, and ingest logs the source


@dataclass(frozen=True)
class Item:
    """One object to import: a file on disk, or a member of a zip archive."""

    label: str
    size: int
    path: Path
    member: str | None = None


@dataclass
class Tally:
    """Outcome counts and grouped reasons; updated from worker threads under ``lock``.

    Each group maps a reason (``DicomVaultError.reason``: short and the same for every object refused so) to the
    items refused for it, each item's label followed by the full message when that says more than the reason
    ("pixel data holds 50000 of the 131072 bytes …" under "pixel data shorter than its header describes")."""

    stored: int = 0
    replaced: int = 0
    duplicates: int = 0
    bytes_stored: int = 0
    #: a different object under a SOP Instance UID already stored (policy ``reject``), or one whose stored copy
    #: cannot be read to compare: counted apart from broken objects, by reason
    conflicts: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    rejected: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    skipped: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    failed: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def _count(groups: dict[str, list[str]]) -> int:
        return sum(len(v) for v in groups.values())

    @property
    def n_conflicts(self) -> int:
        return self._count(self.conflicts)

    @property
    def n_rejected(self) -> int:
        return self._count(self.rejected)

    @property
    def n_skipped(self) -> int:
        return self._count(self.skipped)

    @property
    def n_failed(self) -> int:
        return self._count(self.failed)


def _is_zip(path: Path) -> bool:
    return path.suffix.lower() == ".zip" and zipfile.is_zipfile(path)


def _zip_items(path: Path, label: str) -> Iterator[Item]:
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.is_dir():
                yield Item(f"{label}!{info.filename}", info.file_size, path, info.filename)


def collect(paths: list[Path]) -> tuple[list[Item], list[tuple[str, str]]]:
    """Expand folders (recursively) and zip archives into items; unreadable paths come back as (path, reason)."""
    items: list[Item] = []
    problems: list[tuple[str, str]] = []

    def add_file(p: Path, label: str) -> None:
        try:
            if _is_zip(p):
                items.extend(_zip_items(p, label))
            else:
                items.append(Item(label, p.stat().st_size, p))
        except (OSError, zipfile.BadZipFile) as exc:
            problems.append((str(p), f"unreadable: {exc}"))

    for root in paths:
        if root.is_dir():
            for p in sorted(root.rglob("*")):
                if p.is_file():  # labels relative to the folder given: short, and no absolute paths in reports
                    add_file(p, str(Path(root.name) / p.relative_to(root)))
        elif root.is_file():
            add_file(root, str(root))
        else:
            problems.append((str(root), "no such file or folder"))
    return items, problems


def _reason(exc: BaseException) -> str:
    """A short, groupable reason (no UIDs or patient data): the domain error's ``reason``."""
    if isinstance(exc, DicomVaultError):
        return exc.reason[:120]
    return f"{type(exc).__name__}: {exc}"[:120]


def _example(item: Item, exc: BaseException) -> str:
    """The item's label, with what the error's message says beyond the group's reason ("the object is truncated:
    pixel data needs 3000 more bytes" under "the object is truncated": "pixel data needs 3000 more bytes")."""
    if not isinstance(exc, DicomVaultError) or exc.message == exc.reason:
        return item.label
    detail = exc.message
    if detail.startswith(exc.reason):  # presentation only: the group was chosen from the type and reason
        detail = detail[len(exc.reason):].strip(" :")
        if detail.startswith("(") and detail.endswith(")"):
            detail = detail[1:-1]
    return f"{item.label} ({detail[:120]})" if detail else item.label


def _not_dicom(item: Item, exc: InvalidDicom) -> bool:
    """Files that are simply not DICOM objects (skipped) as opposed to broken DICOM objects (rejected): by the
    error's type, and DICOMDIRs (media directories, not objects to store) by name."""
    name = (item.member or item.path.name).rsplit("/", 1)[-1].upper()
    return name == "DICOMDIR" or isinstance(exc, NotDicom)


@dataclass(frozen=True)
class Outcome:
    """What became of one item: ``kind`` (stored, replaced, duplicate, conflict, rejected, failed, skipped), the
    group's reason and the item's example line for the refusals, the bytes stored. Small and picklable: worker
    processes (``cli.import_processes``) send it back."""

    kind: str
    reason: str = ""
    example: str = ""
    size: int = 0


def outcome_of(ingest: IngestService, item: Item, stream: BinaryIO | None) -> Outcome:
    """Ingest one item (from ``stream`` when the reader spooled it, else from its file); never raises for the
    item's own problems."""
    try:
        if stream is None:
            with open(item.path, "rb") as f:
                result = ingest.ingest(f, source=SOURCE)
        else:
            result = ingest.ingest(stream, source=SOURCE)
    except InvalidDicom as exc:
        return Outcome("skipped" if _not_dicom(item, exc) else "rejected", _reason(exc), _example(item, exc))
    except Conflict as exc:  # the same data set in another encoding is a duplicate: this is another object
        return Outcome("conflict", _reason(exc), _example(item, exc))
    except TooLarge as exc:  # the object's own fault: rejected, with the reason (no retry helps)
        return Outcome("rejected", _reason(exc), _example(item, exc))
    except Exception as exc:  # Unavailable, I/O errors: not the object's fault, reported as failures
        return Outcome("failed", _reason(exc), _example(item, exc))
    finally:
        if stream is not None:
            stream.close()
    if result.outcome == StoreOutcome.DUPLICATE:
        return Outcome("duplicate")
    return Outcome("stored" if result.outcome == StoreOutcome.STORED else "replaced", size=result.blob.size)


def record(tally: Tally, outcome: Outcome) -> None:
    """Count ``outcome`` in ``tally`` (thread-safe)."""
    with tally.lock:
        if outcome.kind == "duplicate":
            tally.duplicates += 1
        elif outcome.kind == "stored":
            tally.stored += 1
            tally.bytes_stored += outcome.size
        elif outcome.kind == "replaced":
            tally.replaced += 1
            tally.bytes_stored += outcome.size
        else:
            groups = {"conflict": tally.conflicts, "rejected": tally.rejected, "failed": tally.failed,
                      "skipped": tally.skipped}[outcome.kind]
            groups[outcome.reason].append(outcome.example)


def ingest_one(ingest: IngestService, item: Item, stream: BinaryIO | None, tally: Tally) -> None:
    """Ingest one item and record its outcome."""
    record(tally, outcome_of(ingest, item, stream))


def _spool(zf: zipfile.ZipFile, member: str) -> IO[bytes]:
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115 - closed by the worker
    try:
        with zf.open(member) as src:
            shutil.copyfileobj(src, spool, 1 << 20)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool


def run_import(
    ingest: IngestService, items: list[Item], tally: Tally, workers: int, advance: Callable[[Item], None]
) -> None:
    """Feed ``items`` to ``workers`` threads, zip members spooled here, at most 2×workers in flight."""
    slots = threading.BoundedSemaphore(max(1, workers) * 2)
    open_zip: tuple[Path, zipfile.ZipFile] | None = None

    def done(item: Item) -> Callable[[Future[None]], None]:
        def callback(_: Future[None]) -> None:
            slots.release()
            advance(item)

        return callback

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="import") as pool:
        try:
            for item in items:
                stream: IO[bytes] | None = None
                if item.member is not None:
                    if open_zip is None or open_zip[0] != item.path:
                        if open_zip is not None:
                            open_zip[1].close()
                        open_zip = (item.path, zipfile.ZipFile(item.path))
                    try:
                        stream = _spool(open_zip[1], item.member)
                    except (OSError, zipfile.BadZipFile, RuntimeError, NotImplementedError) as exc:
                        with tally.lock:
                            tally.failed[f"unreadable zip member: {type(exc).__name__}"].append(item.label)
                        advance(item)
                        continue
                slots.acquire()
                fut = pool.submit(ingest_one, ingest, item, stream, tally)  # type: ignore[arg-type]
                fut.add_done_callback(done(item))
        except KeyboardInterrupt:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            if open_zip is not None:
                open_zip[1].close()


def summary_table(tally: Tally, examples: int) -> Table:
    table = Table(title="Import summary", show_lines=False)
    table.add_column("Outcome")
    table.add_column("Count", justify="right")
    table.add_column("Reason / examples", overflow="fold")
    table.add_row("[green]stored[/green]", str(tally.stored), "")
    if tally.replaced:
        table.add_row("[green]replaced / versioned[/green]", str(tally.replaced), "")
    table.add_row("duplicates (already stored)", str(tally.duplicates), "")
    for title, style, groups in (("conflicts (other object, same SOP Instance UID)", "red", tally.conflicts),
                                 ("rejected", "red", tally.rejected), ("failed", "red", tally.failed),
                                 ("skipped (not DICOM)", "yellow", tally.skipped)):
        if not groups:
            table.add_row(f"[{style}]{title}[/{style}]", "0", "")
        for reason, labels in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            shown = "\n".join(f"  {label}" for label in labels[:examples])
            more = f"\n  … and {len(labels) - examples} more" if len(labels) > examples else ""
            table.add_row(f"[{style}]{title}[/{style}]", str(len(labels)), f"{reason}\n{shown}{more}")
    return table


def import_command(
    paths: Annotated[list[Path], typer.Argument(help="Folders (recursive), DICOM files and .zip archives.")],
    data_dir: DataDir = None,
    config: ConfigFile = None,
    index_url: IndexUrl = None,
    storage_url: StorageUrl = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Parallel ingest threads.")] = None,
    examples: Annotated[int, typer.Option("--examples", min=0, help="Example paths listed per reason.")] = EXAMPLES,
    log_level: Annotated[str | None, typer.Option("--log-level", help="Log level (PHI only at DEBUG).")] = None,
) -> None:
    """Import DICOM objects into the archive (the same index and storage as `serve`, safe while it runs).

    Non-DICOM files are skipped and listed; re-running the same import stores nothing twice (duplicates). An
    object already stored with the same data set counts as a duplicate even when its bytes differ (another File
    Meta, e.g. sent before by storescu, or another transfer syntax's encoding). A different object under a SOP
    Instance UID already stored is a conflict under the default duplicate policy (reject), listed apart.
    Exit code: 0 when every object was stored or already present (skipped non-DICOM files included), 1 when any
    object was in conflict, rejected (broken DICOM, a deflated object inflating beyond the configured limits) or
    failed (storage/database unavailable, unreadable file), 2 on configuration errors, 130 when interrupted.
    """
    settings = load_settings(config, data_dir=data_dir, index_url=index_url, storage_url=storage_url,
                             log_level=log_level)
    configure_logging("WARNING" if log_level is None and settings.log_level.upper() == "INFO" else settings.log_level)
    items, problems = collect(paths)
    archive = open_archive(settings)
    tally = Tally()
    for label, reason in problems:
        tally.failed[reason.split(":")[0]].append(label)
    total_bytes = sum(i.size for i in items)
    n_workers = workers or settings.import_workers
    progress = Progress(
        TextColumn("[bold]importing"), BarColumn(), TextColumn("{task.fields[files]}/{task.fields[of]} files"),
        DownloadColumn(), TimeRemainingColumn(), console=err, transient=False,
    )
    done_files = 0
    try:
        with progress:
            task = progress.add_task("import", total=max(total_bytes, 1), files=0, of=len(items))

            def advance(item: Item) -> None:
                nonlocal done_files
                with tally.lock:
                    done_files += 1
                    progress.update(task, advance=item.size, files=done_files)

            run_import(archive.ingest, items, tally, n_workers, advance)
    except KeyboardInterrupt:
        console.print(summary_table(tally, examples))
        err.print("[yellow]interrupted: objects listed as stored are durable; re-run to import the rest[/yellow]")
        raise typer.Exit(130) from None
    finally:
        archive.close()
    console.print(summary_table(tally, examples))
    console.print(f"{tally.stored + tally.replaced} stored ({tally.bytes_stored} bytes), "
                  f"{tally.duplicates} duplicates, {tally.n_conflicts} conflicts, {tally.n_rejected} rejected, "
                  f"{tally.n_failed} failed, {tally.n_skipped} skipped", highlight=False)
    if tally.n_conflicts or tally.n_rejected or tally.n_failed:
        raise typer.Exit(1)
