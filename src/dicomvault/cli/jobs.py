"""``dicomvault jobs``: inspect and drive the durable job queue (list, show, enqueue, retry, work).

``work`` runs a worker in the foreground (the same worker ``dicomvault serve`` runs in the background), e.g. on
a node dedicated to background work; ``--once`` runs the jobs that are due now and exits (cron, tests).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from dicomvault.cli.common import load_settings, open_archive
from dicomvault.domain.errors import DicomVaultError
from dicomvault.jobs.handlers import default_handlers
from dicomvault.jobs.worker import Worker, periodic_tasks
from dicomvault.ports.jobs import Job, JobQueue, JobState
from dicomvault.services.archive import Archive

app = typer.Typer(help="Inspect and run background jobs (fixity checks, deferred blob deletion, …).",
                  no_args_is_help=True)
err = Console(stderr=True)

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Folder of the embedded index and blob store.")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="TOML configuration file.")]
IndexUrl = Annotated[str | None, typer.Option("--index-url", help="Index database URL.")]
StorageUrl = Annotated[str | None, typer.Option("--storage-url", help="Blob store URL.")]


@contextmanager
def _archive(
    data_dir: Path | None, config: Path | None, index_url: str | None, storage_url: str | None = None
) -> Iterator[tuple[Archive, JobQueue]]:
    settings = load_settings(config, data_dir=data_dir, index_url=index_url, storage_url=storage_url)
    archive = open_archive(settings, create=False)  # jobs act on an archive that exists
    try:
        if archive.jobs is None:
            err.print("[red]this archive has no job queue[/red]")
            raise typer.Exit(2)
        yield archive, archive.jobs
    except DicomVaultError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None
    finally:
        archive.close()


def _ts(value: Any) -> str:
    return value.isoformat(timespec="seconds") if value is not None else ""


def _as_dict(job: Job) -> dict[str, Any]:
    return {
        "id": job.id, "kind": job.kind, "state": job.state.value, "attempts": job.attempts,
        "max_attempts": job.max_attempts, "payload": job.payload, "run_at": _ts(job.run_at),
        "lease_until": _ts(job.lease_until), "worker_id": job.worker_id, "last_error": job.last_error,
        "dedupe_key": job.dedupe_key, "result": job.result, "created_at": _ts(job.created_at),
        "updated_at": _ts(job.updated_at),
    }


@app.command("list")
def list_jobs(
    state: Annotated[JobState | None, typer.Option("--state", help="Only jobs in this state.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many (newest first).")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    index_url: IndexUrl = None,
) -> None:
    """List jobs, newest first."""
    with _archive(data_dir, config, index_url) as (_, queue):
        queue.requeue_expired()
        found = queue.list(state, limit)
    if as_json:
        for job in found:
            typer.echo(json.dumps(_as_dict(job)))
        return
    table = Table("id", "kind", "state", "attempts", "run at", "worker", "last error")
    for j in found:
        table.add_row(str(j.id), j.kind, j.state.value, f"{j.attempts}/{j.max_attempts}", _ts(j.run_at),
                      j.worker_id or "", (j.last_error or "")[:60])
    Console(width=180).print(table)


@app.command()
def show(
    job_id: Annotated[int, typer.Argument(help="Job id.")],
    data_dir: DataDir = None,
    config: ConfigFile = None,
    index_url: IndexUrl = None,
) -> None:
    """Print one job as JSON."""
    with _archive(data_dir, config, index_url) as (_, queue):
        job = queue.get(job_id)
    typer.echo(json.dumps(_as_dict(job), indent=2))


@app.command()
def enqueue(
    kind: Annotated[str, typer.Argument(help="Job kind, e.g. fixity or delete-blob.")],
    payload: Annotated[str, typer.Option("--payload", help="JSON object handed to the handler.")] = "{}",
    max_attempts: Annotated[int, typer.Option("--max-attempts", min=1)] = 5,
    dedupe_key: Annotated[str | None, typer.Option("--dedupe-key", help="Reuse an active job with this key.")] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    index_url: IndexUrl = None,
) -> None:
    """Add a job; prints its id."""
    try:
        body = json.loads(payload)
    except json.JSONDecodeError as exc:
        err.print(f"[red]--payload is not JSON:[/red] {exc}")
        raise typer.Exit(2) from None
    if not isinstance(body, dict):
        err.print("[red]--payload must be a JSON object[/red]")
        raise typer.Exit(2)
    with _archive(data_dir, config, index_url) as (archive, queue):
        known = default_handlers(archive)
        if kind not in known:
            err.print(f"[red]unknown job kind {kind!r}[/red] (known: {', '.join(sorted(known))})")
            raise typer.Exit(2)
        job_id = queue.enqueue(kind, body, max_attempts=max_attempts, dedupe_key=dedupe_key)
    typer.echo(str(job_id))


@app.command()
def retry(
    job_id: Annotated[int, typer.Argument(help="Id of a failed (or done) job.")],
    data_dir: DataDir = None,
    config: ConfigFile = None,
    index_url: IndexUrl = None,
) -> None:
    """Queue a failed job again now, with a fresh attempt budget."""
    with _archive(data_dir, config, index_url) as (_, queue):
        queue.retry(job_id)
    err.print(f"job {job_id} queued again")


@app.command()
def work(
    once: Annotated[bool, typer.Option("--once", help="Run the jobs due now, then exit.")] = False,
    kind: Annotated[list[str] | None, typer.Option("--kind", help="Only these kinds (repeatable).")] = None,
    poll_interval: Annotated[float, typer.Option("--poll-interval", min=0.05)] = 1.0,
    lease_seconds: Annotated[float, typer.Option("--lease-seconds", min=1.0)] = 300.0,
    data_dir: DataDir = None,
    config: ConfigFile = None,
    index_url: IndexUrl = None,
    storage_url: StorageUrl = None,
) -> None:
    """Run a job worker in the foreground until interrupted (SIGINT/SIGTERM finish the current job first)."""
    with _archive(data_dir, config, index_url, storage_url) as (archive, queue):
        worker = Worker(queue, default_handlers(archive), kinds=kind or None, poll_interval=poll_interval,
                        lease_seconds=lease_seconds, periodic=periodic_tasks(archive))
        if once:
            n = 0
            while worker.run_once():
                n += 1
            err.print(f"ran {n} job(s)")
            return

        def _stop(_sig: int, _frame: FrameType | None) -> None:
            worker.stop(timeout=0)

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        err.print(f"job worker {worker.worker_id} running; Ctrl-C to stop")
        worker.start()
        while worker.is_alive():
            worker.join(0.5)
