"""SqlDeliveryLedger: ``ports.route_deliveries.DeliveryLedger`` on the index database (migration 0014).

Every operation is one transaction (``BEGIN IMMEDIATE`` on SQLite, so a read-then-write is atomic across threads
and processes; on PostgreSQL the claims lock their rows with ``FOR UPDATE SKIP LOCKED``, so jobs of several nodes
never claim the same row and never wait on each other). Timestamps are UTC (naive on SQLite, as the job queue).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from dicomvault.adapters.index.job_queue import enqueue_on
from dicomvault.adapters.index.tables import instances as ins
from dicomvault.adapters.index.tables import route_deliveries as rd
from dicomvault.adapters.index.tables import route_stable as rs
from dicomvault.adapters.index.times import aware
from dicomvault.adapters.index.transactions import EngineTransactions
from dicomvault.domain.routing import Delivery, DeliveryState, DestinationStatus
from dicomvault.ports.jobs import JobState
from dicomvault.ports.route_deliveries import DeliveryJob, Outcome, StoredInstance

T = TypeVar("T")
_ERROR_LENGTH = 1024
_DELIVERED = (DeliveryState.SENT.value, DeliveryState.CONFIRMED.value)


def _delivery(row: Any) -> Delivery:
    return Delivery(destination=row.destination, sop_uid=row.sop_uid, study_uid=row.study_uid,
                    sop_class_uid=row.sop_class_uid, route=row.route, via=row.via,
                    transfer_syntax=row.transfer_syntax, commitment=bool(row.commitment),
                    state=DeliveryState(row.state), attempts=int(row.attempts), last_error=row.last_error,
                    commitment_uid=row.commitment_uid, updated_at=aware(row.updated_at))


class SqlDeliveryLedger(EngineTransactions):
    """Implements ``ports.route_deliveries.DeliveryLedger``."""

    def __init__(self, engine: Engine, *, retries: int = 5) -> None:
        super().__init__(engine, retries=retries)
        self._insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert

    def _db(self, value: datetime) -> datetime:
        value = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).astimezone(UTC)
        return value if self._dialect == "postgresql" else value.replace(tzinfo=None)

    # -- selection ------------------------------------------------------------------------------------------

    def record(self, deliveries: Sequence[Delivery], stable: Sequence[tuple[str, str, datetime]],
               jobs: Sequence[DeliveryJob] = ()) -> None:
        if not deliveries and not stable and not jobs:
            return
        now = self._db(datetime.now(UTC))
        rows = [{"destination": d.destination, "sop_uid": d.sop_uid, "study_uid": d.study_uid,
                 "sop_class_uid": d.sop_class_uid, "route": d.route[:64], "via": d.via,
                 "transfer_syntax": d.transfer_syntax, "commitment": d.commitment, "state": d.state.value,
                 "attempts": 0, "created_at": now, "updated_at": now} for d in deliveries]
        # one row per key in a statement (PostgreSQL refuses an ON CONFLICT that would touch a row twice)
        unique = list({(r["destination"], r["sop_uid"]): r for r in rows}.values())
        waits: dict[tuple[str, str], datetime] = {}
        for destination, study, due in stable:
            waits[(destination, study)] = max(waits.get((destination, study), due), due)

        def run(conn: Connection) -> None:
            if unique:
                stmt = self._insert(rd).values(unique)
                # a waiting row selected by a route on stored instances too goes now
                stmt = stmt.on_conflict_do_update(
                    index_elements=["destination", "sop_uid"],
                    set_={"state": DeliveryState.QUEUED.value, "updated_at": now},
                    where=and_(rd.c.state == DeliveryState.WAITING.value,
                               stmt.excluded.state == DeliveryState.QUEUED.value))
                conn.execute(stmt)
            if waits:
                values = [{"destination": d, "study_uid": s, "due_at": self._db(due)} for (d, s), due in waits.items()]
                wait = self._insert(rs).values(values)
                conn.execute(wait.on_conflict_do_update(
                    index_elements=["destination", "study_uid"], set_={"due_at": wait.excluded.due_at},
                    where=rs.c.due_at < wait.excluded.due_at))
            # the jobs commit with their rows: one transaction (one fsync on SQLite) per batch, and no window in
            # which rows exist without a job
            for job in jobs:
                job_id, found = enqueue_on(conn, self._dialect, job.kind, job.payload, max_attempts=job.max_attempts,
                                           dedupe_key=job.dedupe_key[:200])
                if found == JobState.RUNNING:
                    enqueue_on(conn, self._dialect, job.kind, job.payload, max_attempts=job.max_attempts,
                               dedupe_key=f"{job.dedupe_key}:after:{job_id}"[:200])

        self._run(run)

    def recorded(self, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        destinations = sorted({d for d, _ in pairs})
        uids = sorted({u for _, u in pairs})
        wanted = set(pairs)

        def run(conn: Connection) -> set[tuple[str, str]]:
            found: set[tuple[str, str]] = set()
            for chunk in _chunks(uids, 500):
                found.update((r.destination, r.sop_uid) for r in conn.execute(
                    select(rd.c.destination, rd.c.sop_uid).where(rd.c.destination.in_(destinations),
                                                                 rd.c.sop_uid.in_(chunk))))
            return found & wanted

        return self._read(run) if pairs else set()

    # -- reconciliation (instances read back) ----------------------------------------------------------------

    def last_stored_before(self, since: datetime) -> int:
        def run(conn: Connection) -> int:
            low, high = conn.execute(select(func.min(ins.c.id), func.max(ins.c.id))).one()
            if low is None:
                return 0

            def recent(n: int) -> bool:  # the first instance from id n on was stored at or after `since`
                row = conn.execute(select(ins.c.stored_at).where(ins.c.id >= n).order_by(ins.c.id).limit(1)).first()
                return row is None or (aware(row.stored_at) or since) >= since

            # binary search for the first id from which instances are recent (ids grow with storing)
            lo, hi = int(low), int(high) + 1
            while lo < hi:
                mid = (lo + hi) // 2
                if recent(mid):
                    hi = mid
                else:
                    lo = mid + 1
            return max(lo - 1, 0)

        return self._read(run)

    def stored_after(self, after_id: int, limit: int) -> list[StoredInstance]:
        def run(conn: Connection) -> list[StoredInstance]:
            rows = conn.execute(
                select(ins.c.id, ins.c.sop_uid, ins.c.sop_class_uid, ins.c.source, ins.c.stored_at, ins.c.metadata)
                .where(ins.c.id > after_id).order_by(ins.c.id).limit(limit))
            return [StoredInstance(id=int(r.id), sop_uid=r.sop_uid, sop_class_uid=r.sop_class_uid,
                                   source=r.source or "", stored_at=aware(r.stored_at) or datetime.now(UTC),
                                   header_json=r.metadata) for r in rows]

        return self._read(run)

    def release_stable(self, now: datetime, limit: int = 100) -> list[tuple[str, str]]:
        at = self._db(now)
        if self._read(lambda c: c.execute(select(rs.c.destination).where(rs.c.due_at <= at).limit(1)).first()) is None:
            return []  # the common case: a read, no write lock

        def run(conn: Connection) -> list[tuple[str, str]]:
            q = select(rs.c.destination, rs.c.study_uid).where(rs.c.due_at <= at).order_by(rs.c.due_at).limit(limit)
            if self._dialect == "postgresql":
                q = q.with_for_update(skip_locked=True)
            pairs = [(r.destination, r.study_uid) for r in conn.execute(q)]
            for destination, study in pairs:
                conn.execute(delete(rs).where(rs.c.destination == destination, rs.c.study_uid == study))
                conn.execute(update(rd).where(rd.c.destination == destination, rd.c.study_uid == study,
                                              rd.c.state == DeliveryState.WAITING.value)
                             .values(state=DeliveryState.QUEUED.value, updated_at=at))
            return pairs

        return self._run(run)

    def stale(self, queued_before: datetime, sending_before: datetime, limit: int = 100) -> list[tuple[str, str]]:
        queued_at, sending_at = self._db(queued_before), self._db(sending_before)

        def stuck(conn: Connection) -> bool:
            return conn.execute(select(rd.c.id).where(
                rd.c.state == DeliveryState.SENDING.value, rd.c.updated_at < sending_at).limit(1)).first() is not None

        if self._read(stuck):
            self._run(lambda conn: conn.execute(
                update(rd).where(rd.c.state == DeliveryState.SENDING.value, rd.c.updated_at < sending_at)
                .values(state=DeliveryState.QUEUED.value, claimed_by=None, updated_at=queued_at)))

        def run(conn: Connection) -> list[tuple[str, str]]:
            q = (select(rd.c.destination, rd.c.study_uid)
                 .where(rd.c.state == DeliveryState.QUEUED.value, rd.c.updated_at < queued_at)
                 .group_by(rd.c.destination, rd.c.study_uid).limit(limit))
            return [(r.destination, r.study_uid) for r in conn.execute(q)]

        return self._read(run)

    # -- sending --------------------------------------------------------------------------------------------

    def claim(self, destination: str, study_uid: str, claimer: str, limit: int) -> list[Delivery]:
        now = self._db(datetime.now(UTC))

        claimable = and_(rd.c.destination == destination, rd.c.study_uid == study_uid,
                         or_(rd.c.state == DeliveryState.QUEUED.value,
                             and_(rd.c.state == DeliveryState.SENDING.value, rd.c.claimed_by == claimer)))
        if self._read(lambda c: c.execute(select(rd.c.id).where(claimable).limit(1)).first()) is None:
            return []  # a job's last look finds nothing: a read, not SQLite's write lock the stores wait for

        def run(conn: Connection) -> list[Delivery]:
            q = select(rd.c.id).where(claimable).order_by(rd.c.id).limit(limit)
            if self._dialect == "postgresql":
                q = q.with_for_update(skip_locked=True)
            ids = [r.id for r in conn.execute(q)]
            if not ids:
                return []
            rows = conn.execute(
                update(rd).where(rd.c.id.in_(ids))
                .values(state=DeliveryState.SENDING.value, claimed_by=claimer[:64], attempts=rd.c.attempts + 1,
                        updated_at=now)
                .returning(*rd.c)).all()
            return sorted((_delivery(r) for r in rows), key=lambda d: d.sop_uid)

        return self._run(run)

    def settle(self, destination: str, outcomes: Sequence[Outcome], now: datetime) -> None:
        at = self._db(now)

        def run(conn: Connection) -> None:
            for o in outcomes:
                values: dict[str, Any] = {"state": o.state.value, "updated_at": at, "claimed_by": None}
                if o.error is not None:
                    values["last_error"] = o.error[:_ERROR_LENGTH]
                if o.state in (DeliveryState.SENT, DeliveryState.CONFIRMED):
                    values["sent_at"] = at
                    values["commitment_uid"] = o.commitment_uid
                if o.state == DeliveryState.CONFIRMED:
                    values["confirmed_at"] = at
                conn.execute(update(rd).where(rd.c.destination == destination, rd.c.sop_uid == o.sop_uid,
                                              rd.c.state == DeliveryState.SENDING.value).values(**values))

        self._run(run)

    def commitment_report(self, transaction_uid: str, committed: Sequence[str], failed: dict[str, str],
                          now: datetime) -> int:
        at = self._db(now)

        def run(conn: Connection) -> int:
            changed = 0
            mine = and_(rd.c.commitment_uid == transaction_uid, rd.c.state == DeliveryState.SENT.value)
            for chunk in _chunks(list(committed), 500):
                changed += conn.execute(update(rd).where(mine, rd.c.sop_uid.in_(chunk)).values(
                    state=DeliveryState.CONFIRMED.value, confirmed_at=at, updated_at=at)).rowcount or 0
            for sop_uid, reason in failed.items():
                changed += conn.execute(update(rd).where(mine, rd.c.sop_uid == sop_uid).values(
                    state=DeliveryState.FAILED.value, last_error=reason[:_ERROR_LENGTH], updated_at=at)).rowcount or 0
            return changed

        return self._run(run)

    # -- operators ------------------------------------------------------------------------------------------

    def retry(self, destination: str | None, now: datetime) -> list[tuple[str, str]]:
        at = self._db(now)

        def run(conn: Connection) -> list[tuple[str, str]]:
            where = [rd.c.state == DeliveryState.FAILED.value]
            if destination is not None:
                where.append(rd.c.destination == destination)
            pairs = [(r.destination, r.study_uid) for r in conn.execute(
                select(rd.c.destination, rd.c.study_uid).where(*where).group_by(rd.c.destination, rd.c.study_uid))]
            conn.execute(update(rd).where(*where).values(state=DeliveryState.QUEUED.value, attempts=0,
                                                         updated_at=at))
            return pairs

        return self._run(run)

    def status(self) -> list[DestinationStatus]:
        def run(conn: Connection) -> list[DestinationStatus]:
            out: dict[str, DestinationStatus] = {}
            for r in conn.execute(select(rd.c.destination, rd.c.state, func.count())
                                  .group_by(rd.c.destination, rd.c.state)):
                out.setdefault(r[0], DestinationStatus(r[0])).counts[r[1]] = int(r[2])
            # the latest error of an instance not (yet) delivered: an error a later attempt overcame is history
            pending = and_(rd.c.last_error.is_not(None), rd.c.state.not_in(_DELIVERED))
            latest = (select(rd.c.destination, func.max(rd.c.updated_at).label("at"))
                      .where(pending).group_by(rd.c.destination).subquery())
            for r in conn.execute(select(rd.c.destination, rd.c.last_error, rd.c.updated_at).join(
                    latest, and_(latest.c.destination == rd.c.destination, latest.c.at == rd.c.updated_at))
                    .where(pending)):
                status = out.setdefault(r.destination, DestinationStatus(r.destination))
                status.last_error, status.last_error_at = r.last_error, aware(r.updated_at)
            return [out[d] for d in sorted(out)]

        return self._read(run)

    def deliveries(self, destination: str | None = None, study_uid: str | None = None) -> list[Delivery]:
        def run(conn: Connection) -> list[Delivery]:
            q = select(rd)
            if destination is not None:
                q = q.where(rd.c.destination == destination)
            if study_uid is not None:
                q = q.where(rd.c.study_uid == study_uid)
            return [_delivery(r) for r in conn.execute(q.order_by(rd.c.id))]

        return self._read(run)


def _chunks(values: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]
