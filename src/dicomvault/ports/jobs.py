"""The job queue port: durable background work shared by every node of a cluster.

Delivery is *at least once*. A claimed job carries a lease; if the claiming node dies (or stalls past the lease),
the job becomes claimable again and another node runs it. The effect is exactly once only because every
handler is idempotent (verify a checksum, delete a blob that is still unreferenced, send an instance the
destination already has): handlers must keep that property. A job whose handler keeps failing is retried with
backoff until ``max_attempts``, then parked as ``failed`` (dead) for an operator to inspect and ``retry``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Protocol


class JobState(str, Enum):
    QUEUED = "queued"  # waiting for run_at, or for a worker
    RUNNING = "running"  # claimed; lease_until says until when the claim holds
    DONE = "done"
    FAILED = "failed"  # dead: attempts exhausted or a permanent error; only an operator's retry revives it
    CANCELLED = "cancelled"  # an operator cancelled it before it ran; a retry revives it too


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    payload: dict[str, Any]
    state: JobState
    attempts: int  # claims so far (a claim whose lease expired counts as an attempt)
    max_attempts: int
    run_at: datetime
    created_at: datetime
    updated_at: datetime
    lease_until: datetime | None = None
    worker_id: str | None = None
    last_error: str | None = None
    dedupe_key: str | None = None
    result: dict[str, Any] | None = field(default=None)


class JobQueue(Protocol):
    def enqueue(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        run_at: datetime | None = None,
        max_attempts: int = 5,
        dedupe_key: str | None = None,
    ) -> int:
        """Add a job (JSON-serialisable ``payload``) runnable from ``run_at`` (default: now); return its id.

        With ``dedupe_key``, a queued or running job with the same key is reused (its id is returned) instead of
        adding a second one, so producers may enqueue the same work repeatedly.
        """
        ...

    def claim(self, worker_id: str, kinds: list[str] | None = None, lease_seconds: float = 300.0) -> Job | None:
        """Atomically take the oldest due job (optionally of ``kinds``) for ``worker_id`` with a lease, or None.

        Concurrent claimers on any number of nodes never receive the same job while its lease holds. Jobs whose
        lease expired are claimable again (their previous worker is presumed dead).
        """
        ...

    def heartbeat(self, job_id: int, worker_id: str, lease_seconds: float = 300.0) -> bool:
        """Extend the lease of a running job; False if this worker no longer holds it."""
        ...

    def complete(self, job_id: int, result: dict[str, Any] | None = None) -> None:
        """Mark a claimed job done (with an optional JSON-serialisable result)."""
        ...

    def fail(self, job_id: int, error: str, retry_at: datetime | None) -> JobState:
        """Record a failed attempt. With ``retry_at`` the job is queued again for then, unless its attempts are
        exhausted; with None it fails permanently. Returns the job's new state."""
        ...

    def retry(self, job_id: int) -> None:
        """Operator action: queue a failed (or done, or cancelled) job again now with a fresh attempt budget;
        raises ``NotFound``, or ``Conflict`` if it is queued or running."""
        ...

    def cancel(self, job_id: int) -> None:
        """Operator action: a queued job will not run (it becomes ``cancelled``; ``retry`` queues it again);
        raises ``NotFound``, or ``Conflict`` if it is not queued (a running job is not interrupted)."""
        ...

    def counts(self) -> dict[tuple[JobState, str], int]:
        """How many jobs are queued, running or failed, per (state, kind); done and cancelled jobs are history and
        not counted."""
        ...

    def get(self, job_id: int) -> Job:
        """Raises ``NotFound``."""
        ...

    def list(self, state: JobState | None = None, limit: int = 100) -> list[Job]:
        """Most recent first."""
        ...

    def requeue_expired(self) -> int:
        """Put running jobs whose lease expired back in the queue (or fail them when out of attempts);
        returns how many. ``claim`` does this too; this makes ``list`` truthful between claims."""
        ...
