"""SqlJobQueue: ``ports.jobs.JobQueue`` on the index database, so a cluster needs no extra broker.

Claiming is the only contended operation:

* PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED`` picks the oldest due row no other transaction is claiming,
  then one UPDATE leases it; any number of workers on any number of nodes claim without waiting on each other
  and never receive the same job.
* SQLite: the claim runs inside ``BEGIN IMMEDIATE``; SQLite admits one writer at a time, so select-then-update
  is atomic across threads and processes on the host.

Time comes from the database on PostgreSQL (``now()``), so leases do not depend on the nodes' clocks agreeing;
on SQLite (one host) it is the local UTC clock. Timestamps are stored as UTC.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
    and_,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from dicomvault.adapters.index import postgres
from dicomvault.adapters.index.tables import Id, metadata
from dicomvault.adapters.index.times import aware
from dicomvault.adapters.index.transactions import EngineTransactions
from dicomvault.domain.errors import Conflict, NotFound
from dicomvault.ports.jobs import Job, JobState

log = logging.getLogger(__name__)
T = TypeVar("T")

_ACTIVE = (JobState.QUEUED.value, JobState.RUNNING.value)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False),
    Column("payload", Text, nullable=False),  # JSON object
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("run_at", DateTime(timezone=True), nullable=False),
    Column("lease_until", DateTime(timezone=True)),
    Column("worker_id", String(128)),
    Column("last_error", Text),
    Column("dedupe_key", String(200)),
    Column("result", Text),  # JSON object
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Index("ix_jobs_state_run_at", "state", "run_at"),
    Index("ix_jobs_state_lease_until", "state", "lease_until"),
)
#: At most one queued or running job per dedupe key (partial unique index, both dialects).
Index("ux_jobs_dedupe_key_active", jobs.c.dedupe_key, unique=True,
      postgresql_where=jobs.c.state.in_(_ACTIVE), sqlite_where=jobs.c.state.in_(_ACTIVE))


def enqueue_on(conn: Connection, dialect: str, kind: str, payload: dict[str, Any], *,
               run_at: datetime | None = None, max_attempts: int = 5,
               dedupe_key: str | None = None) -> tuple[int, JobState | None]:
    """``JobQueue.enqueue`` inside the caller's transaction (``conn``, begun IMMEDIATE on SQLite), for a producer
    whose own rows and the job must commit together (``adapters.index.route_deliveries``: one fsync, not two).
    Returns the job's id and, when a queued or running job of ``dedupe_key`` was found instead of inserting, its
    state. A concurrent insert of the same key on PostgreSQL violates the partial unique index: the caller's
    transaction is retried (``postgres.run_with_retries``) and finds that job."""
    if not kind or len(kind) > 64:
        raise ValueError("job kind must be 1-64 characters")
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    if dedupe_key is not None:
        q = select(jobs.c.id, jobs.c.state).where(jobs.c.dedupe_key == dedupe_key, jobs.c.state.in_(_ACTIVE))
        if dialect == "postgresql":
            # wait for a claim in progress: its state is then running, not a queued job that may already have
            # looked for the caller's rows before they commit
            q = q.with_for_update()
        found = conn.execute(q).first()
        if found is not None:
            return int(found.id), JobState(found.state)
    if dialect == "postgresql":
        now = aware(conn.execute(select(func.now())).scalar_one()).astimezone(UTC)
    else:
        now = datetime.now(UTC)

    def db(value: datetime) -> datetime:
        value = aware(value).astimezone(UTC)
        return value if dialect == "postgresql" else value.replace(tzinfo=None)

    body = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    job_id = conn.execute(
        jobs.insert().returning(jobs.c.id),
        {"kind": kind, "payload": body, "state": JobState.QUEUED.value, "attempts": 0,
         "max_attempts": max_attempts, "run_at": db(run_at or now), "dedupe_key": dedupe_key,
         "created_at": db(now), "updated_at": db(now)},
    ).scalar_one()
    return int(job_id), None


class SqlJobQueue(EngineTransactions):
    """Implements ``ports.jobs.JobQueue`` (see the module docstring for the claim protocol per dialect)."""

    # -- plumbing (transactions: ``EngineTransactions``) -------------------------------------------------

    def _now(self, conn: Connection) -> datetime:
        if self._dialect == "postgresql":
            return aware(conn.execute(select(func.now())).scalar_one())
        return datetime.now(UTC)

    def _db(self, value: datetime) -> datetime:
        """The form a timestamp is bound in: aware UTC for PostgreSQL, naive UTC for SQLite (which stores text
        and would otherwise compare differently formatted values)."""
        value = aware(value).astimezone(UTC)
        return value if self._dialect == "postgresql" else value.replace(tzinfo=None)

    # -- producers ---------------------------------------------------------------------------------------

    def enqueue(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        run_at: datetime | None = None,
        max_attempts: int = 5,
        dedupe_key: str | None = None,
    ) -> int:
        def run(conn: Connection) -> int:
            return enqueue_on(conn, self._dialect, kind, payload, run_at=run_at, max_attempts=max_attempts,
                              dedupe_key=dedupe_key)[0]

        if self._dialect != "postgresql" and dedupe_key is not None:
            try:
                return self._run(run)
            except IntegrityError:  # SQLite: only another process can race us (BEGIN IMMEDIATE); look again
                return self._run(run)
        return self._run(run)

    # -- workers -----------------------------------------------------------------------------------------

    def claim(self, worker_id: str, kinds: list[str] | None = None, lease_seconds: float = 300.0) -> Job | None:
        if not self._anything_due(kinds):
            return None  # idle polls stay read-only: no SQLite write lock, no row locks

        def run(conn: Connection) -> Job | None:
            now = self._now(conn)
            self._expire(conn, now)
            q = select(jobs.c.id).where(jobs.c.state == JobState.QUEUED.value, jobs.c.run_at <= self._db(now))
            if kinds:
                q = q.where(jobs.c.kind.in_(kinds))
            q = q.order_by(jobs.c.run_at, jobs.c.id).limit(1)
            if self._dialect == "postgresql":
                q = q.with_for_update(skip_locked=True)
            job_id = conn.execute(q).scalar_one_or_none()
            if job_id is None:
                return None
            row = conn.execute(
                update(jobs).where(jobs.c.id == job_id)
                .values(state=JobState.RUNNING.value, worker_id=worker_id[:128], attempts=jobs.c.attempts + 1,
                        lease_until=self._db(now + timedelta(seconds=lease_seconds)), updated_at=self._db(now))
                .returning(*jobs.c)
            ).one()
            return _job(row)

        return self._run(run)

    def _anything_due(self, kinds: list[str] | None) -> bool:
        def run() -> bool:
            with self.engine.connect() as conn:
                now = self._db(self._now(conn))
                q = select(jobs.c.id).where(or_(
                    and_(jobs.c.state == JobState.QUEUED.value, jobs.c.run_at <= now),
                    and_(jobs.c.state == JobState.RUNNING.value, jobs.c.lease_until < now),
                ))
                if kinds:
                    q = q.where(jobs.c.kind.in_(kinds))
                return conn.execute(q.limit(1)).first() is not None

        return postgres.run_with_retries(run, dialect=self._dialect, retries=self._retries)

    def _expire(self, conn: Connection, now: datetime) -> int:
        """Requeue running jobs whose lease ran out (their worker died or stalled); fail those out of attempts.
        Rows another claimer is handling right now are skipped, not waited for."""
        q = select(jobs.c.id, jobs.c.attempts, jobs.c.max_attempts).where(
            jobs.c.state == JobState.RUNNING.value, jobs.c.lease_until < self._db(now))
        if self._dialect == "postgresql":
            q = q.with_for_update(skip_locked=True)
        rows = conn.execute(q).all()
        for r in rows:
            dead = r.attempts >= r.max_attempts
            conn.execute(
                update(jobs).where(jobs.c.id == r.id).values(
                    state=(JobState.FAILED if dead else JobState.QUEUED).value, lease_until=None, worker_id=None,
                    last_error="lease expired: the worker stopped or died while running the job",
                    run_at=self._db(now), updated_at=self._db(now), finished_at=self._db(now) if dead else None,
                )
            )
        if rows:
            log.warning("requeued %d job(s) whose lease expired", len(rows))
        return len(rows)

    def requeue_expired(self) -> int:
        return self._run(lambda conn: self._expire(conn, self._now(conn)))

    def heartbeat(self, job_id: int, worker_id: str, lease_seconds: float = 300.0) -> bool:
        def run(conn: Connection) -> bool:
            now = self._now(conn)
            n = conn.execute(
                update(jobs).where(jobs.c.id == job_id, jobs.c.worker_id == worker_id[:128],
                                   jobs.c.state == JobState.RUNNING.value)
                .values(lease_until=self._db(now + timedelta(seconds=lease_seconds)), updated_at=self._db(now))
            ).rowcount
            return bool(n == 1)

        return self._run(run)

    def complete(self, job_id: int, result: dict[str, Any] | None = None) -> None:
        body = json.dumps(result, sort_keys=True) if result is not None else None

        def run(conn: Connection) -> None:
            # Unconditional: if the lease had expired meanwhile, the work is done all the same, and marking it
            # done spares another run (a second run would be harmless: handlers are idempotent).
            now = self._db(self._now(conn))
            n = conn.execute(update(jobs).where(jobs.c.id == job_id).values(
                state=JobState.DONE.value, result=body, lease_until=None, updated_at=now, finished_at=now,
            )).rowcount
            if n != 1:
                raise NotFound(f"job {job_id} does not exist")

        self._run(run)

    def fail(self, job_id: int, error: str, retry_at: datetime | None) -> JobState:
        def run(conn: Connection) -> JobState:
            row = conn.execute(select(jobs.c.state, jobs.c.attempts, jobs.c.max_attempts)
                               .where(jobs.c.id == job_id)).first()
            if row is None:
                raise NotFound(f"job {job_id} does not exist")
            if row.state != JobState.RUNNING.value:
                return JobState(row.state)  # the lease expired and the job moved on: leave it alone
            now = self._now(conn)
            dead = retry_at is None or row.attempts >= row.max_attempts
            state = JobState.FAILED if dead else JobState.QUEUED
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(
                state=state.value, last_error=error[:4000], lease_until=None, worker_id=None,
                run_at=self._db(retry_at) if retry_at is not None and not dead else self._db(now),
                updated_at=self._db(now), finished_at=self._db(now) if dead else None,
            ))
            return state

        return self._run(run)

    # -- operators ---------------------------------------------------------------------------------------

    def retry(self, job_id: int) -> None:
        def run(conn: Connection) -> None:
            row = conn.execute(select(jobs.c.state, jobs.c.dedupe_key).where(jobs.c.id == job_id)).first()
            if row is None:
                raise NotFound(f"job {job_id} does not exist")
            if row.state in _ACTIVE:
                raise Conflict(f"job {job_id} is {row.state}; only failed or done jobs can be retried")
            if row.dedupe_key is not None and conn.execute(select(jobs.c.id).where(
                    jobs.c.dedupe_key == row.dedupe_key, jobs.c.state.in_(_ACTIVE))).first() is not None:
                raise Conflict(f"job {job_id}: another job with the same dedupe key is queued or running")
            now = self._db(self._now(conn))
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(
                state=JobState.QUEUED.value, attempts=0, run_at=now, updated_at=now, finished_at=None,
                lease_until=None, worker_id=None,
            ))

        self._run(run)

    def cancel(self, job_id: int) -> None:
        def run(conn: Connection) -> None:
            now = self._db(self._now(conn))
            # one conditional UPDATE: a claim racing the cancel either took the job first (then nothing changes
            # here and the job runs) or finds it cancelled
            n = conn.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.state == JobState.QUEUED.value).values(
                state=JobState.CANCELLED.value, last_error="cancelled by an operator", updated_at=now,
                finished_at=now, lease_until=None, worker_id=None,
            )).rowcount
            if n == 1:
                return
            row = conn.execute(select(jobs.c.state).where(jobs.c.id == job_id)).first()
            if row is None:
                raise NotFound(f"job {job_id} does not exist")
            raise Conflict(f"job {job_id} is {row.state}; only queued jobs can be cancelled")

        self._run(run)

    def counts(self) -> dict[tuple[JobState, str], int]:
        # the (state, run_at) index finds the few live rows among the done ones
        q = (select(jobs.c.state, jobs.c.kind, func.count())
             .where(jobs.c.state.in_((*_ACTIVE, JobState.FAILED.value)))
             .group_by(jobs.c.state, jobs.c.kind))

        def run() -> dict[tuple[JobState, str], int]:
            with self.engine.connect() as conn:
                return {(JobState(state), kind): int(n) for state, kind, n in conn.execute(q)}

        return postgres.run_with_retries(run, dialect=self._dialect, retries=self._retries)

    def get(self, job_id: int) -> Job:
        def run(conn: Connection) -> Job:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
            if row is None:
                raise NotFound(f"job {job_id} does not exist")
            return _job(row)

        return self._run(run)

    def list(self, state: JobState | None = None, limit: int = 100) -> list[Job]:
        q = select(jobs).order_by(jobs.c.id.desc()).limit(max(1, limit))
        if state is not None:
            q = q.where(jobs.c.state == JobState(state).value)
        return self._run(lambda conn: [_job(r) for r in conn.execute(q)])


def _job(row: Row[Any]) -> Job:
    return Job(
        id=int(row.id), kind=row.kind, payload=json.loads(row.payload), state=JobState(row.state),
        attempts=int(row.attempts), max_attempts=int(row.max_attempts), run_at=aware(row.run_at),
        created_at=aware(row.created_at), updated_at=aware(row.updated_at), lease_until=aware(row.lease_until),
        worker_id=row.worker_id, last_error=row.last_error, dedupe_key=row.dedupe_key,
        result=json.loads(row.result) if row.result else None,
    )
