"""The job worker: claim → run the kind's handler → complete, or fail with exponential backoff and jitter.

One ``Worker`` is a thread; every node of a cluster may run one (``dicomvault serve`` does, ``dicomvault jobs
work`` runs one in the foreground). While a handler runs, a heartbeat extends the job's lease, so only a worker
that really stopped (crash, SIGKILL, lost network) lets its job run again elsewhere after the lease expires.
Handlers must therefore be idempotent (see ``ports.jobs``).

The worker also runs small *periodic* tasks between jobs: the blob removal sweep (``BlobRemover.sweep``, which
finishes removals a crashed process left behind), the purge of the trash (``TrashService.purge_due``). Why here
rather than as queued jobs or a timer of its own: every serving node already runs exactly one worker thread,
started and stopped with the server and resilient to a database outage; the sweep is idempotent and safe on every
node at once (claims are exclusive), so it needs neither scheduling through the queue nor a leader.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from dicomvault.domain.errors import (
    IntegrityFailure,
    InvalidDicom,
    InvalidQuery,
    NotFound,
    Unavailable,
    Unsupported,
)
from dicomvault.jobs.handlers import FIXITY_SCAN, TIER_KINDS, Handler, PermanentJobError, default_handlers
from dicomvault.ports.blobs import BlobStore
from dicomvault.ports.index import IndexRepository
from dicomvault.ports.jobs import Job, JobQueue
from dicomvault.services.fixity import FixityService
from dicomvault.services.lifecycle import BlobRemover
from dicomvault.services.read_tracker import ReadTracker
from dicomvault.services.retrieve import RetrieveService
from dicomvault.services.routing import ROUTE_DELIVER, RoutingService
from dicomvault.services.tiering import TierService
from dicomvault.services.trash import TrashService
from dicomvault.settings import Settings

log = logging.getLogger(__name__)

#: Errors a retry cannot fix: the job fails at once instead of burning its attempts.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    PermanentJobError, IntegrityFailure, InvalidDicom, InvalidQuery, NotFound, Unsupported,
)


def backoff_delay(attempt: int, *, base: float = 5.0, cap: float = 3600.0) -> float:
    """Seconds before retry number ``attempt`` (1-based): base·2^(attempt-1), capped, with "equal jitter"
    (half fixed, half random) so that jobs failing together (a destination down) do not retry in lockstep."""
    delay = min(cap, base * (2 ** max(0, attempt - 1)))
    return delay / 2 + random.uniform(0, delay / 2)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass
class Periodic:
    """A task the worker runs every ``interval`` seconds between jobs (first run one interval after start)."""

    name: str
    interval: float
    run: Callable[[], object]
    due: float = 0.0


class Worker(threading.Thread):
    """Runs jobs until ``stop()``; never dies on a handler's or the database's error (it logs and goes on)."""

    def __init__(
        self,
        queue: JobQueue,
        handlers: Mapping[str, Handler],
        *,
        worker_id: str | None = None,
        kinds: list[str] | None = None,
        poll_interval: float = 1.0,
        lease_seconds: float = 300.0,
        backoff_base: float = 5.0,
        backoff_cap: float = 3600.0,
        periodic: Sequence[Periodic] = (),
    ) -> None:
        super().__init__(name="dicomvault-worker", daemon=True)
        self.queue = queue
        self.handlers = dict(handlers)
        self.worker_id = worker_id or default_worker_id()
        self.kinds = kinds if kinds is not None else sorted(self.handlers)
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._stop_event = threading.Event()
        self.processed = 0
        self.periodic = list(periodic)
        #: workers started and stopped with this one (``start_worker``: the tier job workers)
        self.companions: list[Worker] = []
        for task in self.periodic:
            task.due = time.monotonic() + task.interval

    def run(self) -> None:
        log.info("job worker %s started (kinds: %s)", self.worker_id, ", ".join(self.kinds))
        while not self._stop_event.is_set():
            self.run_periodic()
            try:
                worked = self.run_once()
            except Unavailable as exc:  # the database is down: wait and try again
                log.warning("job worker %s: cannot claim jobs: %s", self.worker_id, exc.message)
                worked = False
            except Exception as exc:
                # Type only above DEBUG: a database error's text can quote the statement's parameters.
                log.error("job worker %s: unexpected %s while claiming", self.worker_id, type(exc).__name__)
                log.debug("claim failure detail", exc_info=True)
                worked = False
            if not worked:
                self._stop_event.wait(self.poll_interval)
        log.info("job worker %s stopped", self.worker_id)

    def run_periodic(self) -> None:
        """Run the periodic tasks that are due; a failure is logged and the task tried again next interval."""
        for task in self.periodic:
            if time.monotonic() < task.due:
                continue
            try:
                task.run()
            except Unavailable as exc:
                log.warning("job worker %s: %s skipped: %s", self.worker_id, task.name, exc.message)
            except Exception as exc:  # the message may quote identifiers: its text and traceback only at DEBUG
                log.error("job worker %s: %s failed (%s); tried again in %g s", self.worker_id, task.name,
                          type(exc).__name__, task.interval)
                log.debug("periodic task failure detail", exc_info=True)
            task.due = time.monotonic() + task.interval

    def stop(self, timeout: float | None = 30.0) -> None:
        """Graceful: the job in progress finishes (and is recorded) before the thread ends; companions (the tier
        workers ``start_worker`` adds) stop too."""
        self._stop_event.set()
        for companion in self.companions:
            companion._stop_event.set()
        for thread in (*self.companions, self):
            if thread.is_alive():
                thread.join(timeout)

    def run_once(self) -> bool:
        """Claim and run at most one job; False when none was due."""
        job = self.queue.claim(self.worker_id, self.kinds, self.lease_seconds)
        if job is None:
            return False
        self.execute(job)
        self.processed += 1
        return True

    def execute(self, job: Job) -> None:
        handler = self.handlers.get(job.kind)
        if handler is None:
            self.queue.fail(job.id, f"no handler for job kind {job.kind!r}", None)
            return
        beat = _Heartbeat(self.queue, job.id, self.worker_id, self.lease_seconds)
        beat.start()
        try:
            result = handler(job)
        except PERMANENT_ERRORS as exc:
            # The message names instances (e.g. a fixity failure lists SOP Instance UIDs): it goes to the job's
            # record (`dicomvault jobs list --state failed`) and to the log only at DEBUG.
            log.warning("job %d (%s) failed permanently (%s); `dicomvault jobs list --state failed` shows why",
                        job.id, job.kind, type(exc).__name__)
            log.debug("job %d failure detail: %s", job.id, exc)
            self.queue.fail(job.id, f"{type(exc).__name__}: {exc}", None)
        except Exception as exc:
            delay = backoff_delay(job.attempts, base=self.backoff_base, cap=self.backoff_cap)
            retry_at = datetime.now(UTC) + timedelta(seconds=delay)
            state = self.queue.fail(job.id, f"{type(exc).__name__}: {exc}", retry_at)
            log.warning("job %d (%s) attempt %d failed (%s); now %s", job.id, job.kind, job.attempts,
                        type(exc).__name__, state.value)
            log.debug("job %d failure detail", job.id, exc_info=True)
        else:
            self.queue.complete(job.id, result)
            log.debug("job %d (%s) done", job.id, job.kind)
        finally:
            beat.stop()


class _Heartbeat(threading.Thread):
    """Extends a running job's lease every third of its length while the handler works."""

    def __init__(self, queue: JobQueue, job_id: int, worker_id: str, lease_seconds: float) -> None:
        super().__init__(name=f"dicomvault-heartbeat-{job_id}", daemon=True)
        self.queue, self.job_id, self.worker_id, self.lease = queue, job_id, worker_id, lease_seconds
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.lease / 3):
            try:
                if not self.queue.heartbeat(self.job_id, self.worker_id, self.lease):
                    log.warning("job %d: lease lost (another worker may run it too)", self.job_id)
                    return
            except Exception as exc:
                log.warning("job %d: heartbeat failed (%s)", self.job_id, type(exc).__name__)
                log.debug("heartbeat failure detail", exc_info=True)

    def stop(self) -> None:
        self._done.set()


class WorkerHost(Protocol):
    """What ``start_worker`` needs from the composition root's ``Archive``."""

    settings: Settings
    jobs: JobQueue | None
    index: IndexRepository
    blobs: BlobStore
    retrieve: RetrieveService
    remover: BlobRemover
    tiering: TierService | None
    reads: ReadTracker | None
    fixity: FixityService
    trash: TrashService | None


#: Seconds between writes of the studies' last-read times (``services.read_tracker``).
READ_FLUSH_INTERVAL = 30.0
#: Seconds between routing scans (stable studies released, stale deliveries enqueued again: ``services.routing``).
ROUTING_SCAN_INTERVAL = 1.0
#: How often the routing worker looks for delivery jobs when idle (an idle look is one read): the added latency
#: of forwarding an instance once stored is about this plus the send.
ROUTING_POLL_INTERVAL = 0.1

#: Seconds between purges of trashed blobs whose grace period is over (``services.trash``): always on, because
#: the trash may hold studies deleted while ``delete_grace_days`` was set; an empty trash costs one indexed read.
TRASH_PURGE_INTERVAL = 600.0


def periodic_tasks(archive: WorkerHost) -> list[Periodic]:
    """The periodic tasks of every node's worker: the blob removal sweep, the lifecycle schedule (safe on every
    node at once: its jobs are deduplicated per study), the batched last-read times, and the trash purge (safe on
    every node at once: the purge transaction locks the trash rows it deletes; a second node finds them gone)."""
    tasks = []
    interval = archive.settings.blob_removal_sweep_interval
    if interval > 0:
        tasks.append(Periodic("blob removal sweep", interval, archive.remover.sweep))
    if archive.tiering is not None and archive.settings.lifecycle and archive.settings.lifecycle_interval > 0:
        tasks.append(Periodic("lifecycle schedule", archive.settings.lifecycle_interval, archive.tiering.schedule))
    if archive.reads is not None:
        tasks.append(Periodic("last-read times", READ_FLUSH_INTERVAL, archive.reads.flush))
    if archive.trash is not None:
        tasks.append(Periodic("trash purge", TRASH_PURGE_INTERVAL, archive.trash.purge_due))
    routing: RoutingService | None = getattr(archive, "routing", None)
    if routing is not None and routing.active:
        tasks.append(Periodic("routing scan", ROUTING_SCAN_INTERVAL, routing.scan))
    days = archive.settings.fixity_interval_days
    if days > 0 and archive.jobs is not None:
        jobs = archive.jobs
        tasks.append(Periodic("fixity scan", days * 86400.0,
                              lambda: jobs.enqueue(FIXITY_SCAN, {}, dedupe_key=FIXITY_SCAN, max_attempts=3)))
    return tasks


def start_worker(
    archive: WorkerHost,
    *,
    poll_interval: float = 1.0,
    lease_seconds: float = 300.0,
    worker_id: str | None = None,
) -> Worker:
    """Start a background worker over ``archive`` with the default handlers (``dicomvault serve`` calls this;
    call ``worker.stop()`` before closing the archive)."""
    if archive.jobs is None:
        raise ValueError("this archive has no job queue")
    handlers = default_handlers(archive)
    worker = Worker(archive.jobs, handlers, poll_interval=poll_interval, lease_seconds=lease_seconds,
                    worker_id=worker_id, periodic=periodic_tasks(archive),
                    kinds=sorted(k for k in handlers if k not in TIER_KINDS and k != ROUTE_DELIVER))
    tier_kinds = [k for k in TIER_KINDS if k in handlers]
    worker.companions = [
        Worker(archive.jobs, handlers, poll_interval=poll_interval, lease_seconds=lease_seconds,
               worker_id=f"{worker.worker_id}-tier{n}", kinds=tier_kinds)
        for n in range(archive.settings.tier_max_concurrent_jobs if tier_kinds else 0)
    ]
    if ROUTE_DELIVER in handlers:  # forwarding on its own thread: a slow destination delays no other job
        worker.companions.append(Worker(archive.jobs, handlers, poll_interval=ROUTING_POLL_INTERVAL,
                                        lease_seconds=lease_seconds, worker_id=f"{worker.worker_id}-route",
                                        kinds=[ROUTE_DELIVER]))
    for companion in worker.companions:
        companion.start()
    worker.start()
    return worker
