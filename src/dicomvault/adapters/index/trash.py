"""The index side of soft delete: the ``trash`` of released blobs and the ``deletion_log`` (tables in ``tables``).

A soft delete removes the instance rows exactly as a delete does (``SqlIndexRepository._delete_rows``), so no
query changes, but the blobs it releases are written here instead of being recorded as pending removals, in the
same transaction. A key in ``trash`` counts as referenced wherever the index decides whether a blob is: the
claim's reference check (``removals.RemovalStatements.referenced``), ``blob_referenced`` and the release decision
of a delete or a replace (``repository._referenced``), ``add_blob_copy``, and the fixity and migration walks
(``tiers.iter_blob_copies``, ``tiers.iter_uncopied_blobs``, ``reads.iter_blob_refs``). So the removal protocol
never deletes a trashed blob, and its copies stay checked and repaired.

Purge (``purge``): one transaction locks and deletes the trash rows, then records as pending removals those of
their keys that no instance or prior-version row references (an object sent again meanwhile keeps its blob), and
logs. From there it is an ordinary removal (``services.lifecycle``), with one difference argued there as case
d: this pending row was created by a transaction that did not remove an instance row, so it does not wait for a
store in flight that found the bytes present. On PostgreSQL the purge therefore waits for the transactions in
flight at its commit to end (``removals.settle_postgres``) before the caller claims; a claim's reference check
then sees every such store. SQLite has one writer: a store reads the key's removal row and commits in one write
transaction, which a purge cannot split.

``TrashIndex`` runs on the repository's connections and retry policy; the ``IndexRepository`` methods of the
same names delegate here, one line each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from dicomvault.adapters.index.removals import SETTLE_TIMEOUT, RemovalStatements, settle_postgres
from dicomvault.adapters.index.tables import deletion_log, instance_versions, instances, trash
from dicomvault.adapters.index.times import aware
from dicomvault.adapters.index.transactions import Transactions
from dicomvault.domain.records import BlobInfo
from dicomvault.domain.trash import Deletion, DeletionAction, DeletionEntry, PurgeBatch, TrashItem

Tx = Callable[[], AbstractContextManager[Connection]]

#: Keys per IN list (far below SQLite's and psycopg's parameter limits).
BATCH = 500


def _utc(value: datetime) -> datetime:
    """SQLite stores a datetime's wall time and drops its zone: every time written or compared is UTC."""
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _batches(keys: Sequence[str]) -> list[Sequence[str]]:
    return [keys[i : i + BATCH] for i in range(0, len(keys), BATCH)]


def _short(value: str | None) -> str | None:
    return value[:256] if value else None


def write_log(conn: Connection, action: DeletionAction, *, study_uid: str, series_uid: str | None,
              sop_uid: str | None, instances_count: int, deletion: Deletion | None, at: datetime) -> None:
    """One deletion log row, in the caller's transaction (the change and its record commit together)."""
    conn.execute(insert(deletion_log).values(
        at=_utc(at), study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid, instances=instances_count,
        reason=_short(deletion.reason if deletion else None), by=_short(deletion.by if deletion else None),
        action=action.value))


def instance_referenced(conn: Connection, keys: Sequence[str]) -> set[str]:
    """The ``keys`` an instance or prior-version row references (the trash not counted)."""
    found: set[str] = set()
    for part in _batches(list(keys)):
        for table in (instances, instance_versions):
            found.update(conn.execute(select(table.c.blob_key).where(table.c.blob_key.in_(part)).distinct())
                         .scalars())
    return found


def _item(r: Any) -> TrashItem:
    return TrashItem(BlobInfo(r.key, int(r.blob_size), r.blob_sha256), r.sop_uid, r.series_uid, r.study_uid,
                     bool(r.superseded), aware(r.deleted_at), aware(r.purge_after), r.reason or "",
                     r.deleted_by or "")


def _where(stmt: Any, study_uid: str | None, series_uid: str | None, sop_uid: str | None) -> Any:
    if study_uid is not None:
        stmt = stmt.where(trash.c.study_uid == study_uid)
    if series_uid is not None:
        stmt = stmt.where(trash.c.series_uid == series_uid)
    if sop_uid is not None:
        stmt = stmt.where(trash.c.sop_uid == sop_uid)
    return stmt


class TrashIndex(Transactions):
    """The trash and deletion-log methods of ``ports.index.IndexRepository``."""

    def __init__(self, engine: Engine, removals: RemovalStatements, write: Tx, read: Tx,
                 retrying: Callable[[Callable[[], Any]], Any]) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._removals = removals
        self._write = write
        self._read = read
        self._retrying = retrying
        ins = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(trash)
        # A key trashed again (its object was sent again, then deleted again) gets the new deletion's times.
        self._upsert = ins.on_conflict_do_update(index_elements=["key"], set_={
            c: ins.excluded[c] for c in ("sop_uid", "study_uid", "series_uid", "superseded", "deleted_at",
                                         "purge_after", "reason", "deleted_by")})

    # -- in the soft delete's transaction ------------------------------------------------------------------

    def put(self, conn: Connection, rows: Sequence[tuple[BlobInfo, str, str, str, bool]], *, at: datetime,
            purge_after: datetime, deletion: Deletion) -> None:
        """Trash released blobs: (blob, sop_uid, series_uid, study_uid, superseded) each."""
        if rows:
            conn.execute(self._upsert, [
                {"key": b.key, "sop_uid": sop, "series_uid": se, "study_uid": st, "blob_size": b.size,
                 "blob_sha256": b.sha256, "superseded": superseded, "deleted_at": _utc(at),
                 "purge_after": _utc(purge_after), "reason": _short(deletion.reason), "deleted_by": _short(deletion.by)}
                for b, sop, se, st, superseded in rows])

    # -- reads -------------------------------------------------------------------------------------------

    def items(self, *, study_uid: str | None, series_uid: str | None, sop_uid: str | None,
              limit: int | None) -> list[TrashItem]:
        stmt = _where(select(trash), study_uid, series_uid, sop_uid).order_by(
            trash.c.study_uid, trash.c.series_uid, trash.c.sop_uid, trash.c.deleted_at, trash.c.key)
        if limit is not None:
            stmt = stmt.limit(limit)
        return self._in_read(lambda conn: [_item(r) for r in conn.execute(stmt)])

    def due(self, *, now: datetime, limit: int) -> list[str]:
        stmt = (select(trash.c.key).where(trash.c.purge_after <= _utc(now))
                .order_by(trash.c.purge_after, trash.c.key).limit(limit))
        return self._in_read(lambda conn: list(conn.execute(stmt).scalars()))

    def log(self, *, study_uid: str | None, limit: int) -> list[DeletionEntry]:
        stmt = select(deletion_log)
        if study_uid is not None:
            stmt = stmt.where(deletion_log.c.study_uid == study_uid)
        stmt = stmt.order_by(deletion_log.c.id.desc()).limit(limit)
        return self._in_read(lambda conn: [
            DeletionEntry(int(r.id), aware(r.at), DeletionAction(r.action), r.study_uid, r.series_uid, r.sop_uid,
                          int(r.instances), r.reason or "", r.by or "") for r in conn.execute(stmt)])

    # -- restore and purge -------------------------------------------------------------------------------

    def restored(self, keys: Sequence[str], *, study_uid: str, series_uid: str | None, sop_uid: str | None,
                 instances_count: int, deletion: Deletion, at: datetime) -> int:
        """Delete the trash rows of ``keys`` that an instance or prior-version row references again (their
        objects were ingested anew), and log the restore. A key not referenced keeps its row: its blob stays
        protected, and a purge removes it later. Returns rows deleted."""

        def run(conn: Connection) -> int:
            back = sorted(instance_referenced(conn, keys))
            n = 0
            for part in _batches(back):
                n += int(conn.execute(delete(trash).where(trash.c.key.in_(part))).rowcount)
            if n or instances_count:
                write_log(conn, DeletionAction.RESTORE, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid,
                          instances_count=instances_count, deletion=deletion, at=at)
            return n

        return self._in_write(run)

    def purge(self, keys: Sequence[str], *, due_at: datetime | None, deletion: Deletion, at: datetime) -> PurgeBatch:
        """In one write transaction: lock the trash rows of ``keys`` (those whose ``purge_after`` is at or before
        ``due_at``; None: all), delete them, record as pending removals the keys no instance or prior-version
        row references, and log one purge per study. On PostgreSQL, then wait for the transactions in flight
        (module docstring); should that time out, nothing is handed back for removal now (the rows stay pending
        and the sweep removes them after ``blob_removal_stale_after``)."""
        todo = sorted(set(keys))

        def run(conn: Connection) -> PurgeBatch:
            rows: list[Any] = []
            for part in _batches(todo):
                stmt = select(trash).where(trash.c.key.in_(part)).order_by(trash.c.key).with_for_update()
                if due_at is not None:
                    stmt = stmt.where(trash.c.purge_after <= _utc(due_at))
                rows.extend(conn.execute(stmt).all())
            if not rows:
                return PurgeBatch()
            gone = [r.key for r in rows]
            for part in _batches(gone):
                conn.execute(delete(trash).where(trash.c.key.in_(part)))
            referenced = instance_referenced(conn, gone)
            pending = [k for k in gone if k not in referenced]
            self._removals.record_pending(conn, pending)
            per_study: dict[str, set[str]] = {}
            for r in rows:
                per_study.setdefault(r.study_uid, set()).add(r.sop_uid)
            for study_uid, sops in sorted(per_study.items()):
                write_log(conn, DeletionAction.PURGE, study_uid=study_uid, series_uid=None, sop_uid=None,
                          instances_count=len(sops), deletion=deletion, at=at)
            return PurgeBatch(len(rows), tuple(pending), tuple(sorted(referenced)))

        batch = self._in_write(run)
        if batch.remove and self.dialect == "postgresql" and not settle_postgres(self.engine, timeout=SETTLE_TIMEOUT):
            return PurgeBatch(batch.purged, (), batch.referenced)
        return batch

    def count(self) -> int:
        return self._in_read(lambda conn: int(conn.execute(select(func.count()).select_from(trash)).scalar_one()))
