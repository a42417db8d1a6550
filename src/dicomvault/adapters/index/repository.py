"""SqlIndexRepository: the index port on SQLAlchemy Core, for SQLite and PostgreSQL alike; this module holds the
write path (store, replace, delete, blob removal claims), ``adapters.index.reads`` the read path it inherits.

Engine-specific behaviour (SQLite's single writer, PostgreSQL's serialization retries) is configured on the
engine by ``adapters.index.engine``; this module stays dialect-neutral except for the upsert construct.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from dicomvault.adapters.index import study_answers, tiers
from dicomvault.adapters.index import trash as trash_sql
from dicomvault.adapters.index.compression import CompressionIndex
from dicomvault.adapters.index.group_commit import GroupCommit
from dicomvault.adapters.index.hot_store import HotStore
from dicomvault.adapters.index.reads import SqlIndexReads
from dicomvault.adapters.index.rejections import RejectionIndex
from dicomvault.adapters.index.removals import RemovalClaims, RemovalStatements
from dicomvault.adapters.index.tables import (
    INSTANCE_SERIES_STUDY,
    blob_originals,
    instance_versions,
    instances,
    patients,
    series,
    studies,
    trash,
)
from dicomvault.adapters.index.writer_lock import WriterLock
from dicomvault.domain.compression import CompressedSwitch, CompressionSavings
from dicomvault.domain.errors import Conflict
from dicomvault.domain.records import (
    BlobClaim,
    BlobInfo,
    DuplicatePolicy,
    InstanceEntry,
    OriginalRecipe,
    RemovalRound,
    StoreOutcome,
    StoreResult,
)
from dicomvault.domain.tiers import (
    BlobCopy,
    CopyTarget,
    StoreUsage,
    StudyBlob,
    StudyCandidate,
    StudyCondition,
    StudyFacts,
)
from dicomvault.domain.trash import Deletion, DeletionAction, DeletionEntry, PurgeBatch, Rejected, TrashItem

#: A blob a delete released: (blob, SOP Instance UID, Series Instance UID, Study Instance UID, prior version?).
Released = tuple[BlobInfo, str, str, str, bool]


def _now() -> datetime:
    return datetime.now(UTC)


def patient_key(patient_id: str | None, issuer: str | None) -> str:
    """The unique key of a patient row: PatientID and IssuerOfPatientID joined by U+001F (a control character
    LO values cannot contain; NUL, used before, is rejected by PostgreSQL text columns)."""
    return f"{patient_id or ''}\x1f{issuer or ''}"


def _no_nul(values: dict[str, Any]) -> dict[str, Any]:
    """Drop NUL characters (malformed NUL padding) from text values: PostgreSQL text cannot hold them, and both
    dialects must index the same values."""
    return {k: (v.replace("\x00", "") if isinstance(v, str) and "\x00" in v else v) for k, v in values.items()}


class SqlIndexRepository(SqlIndexReads):
    """Implements ``ports.index.IndexRepository``: the write path here, the read path inherited."""

    def __init__(self, engine: Engine, *, retries: int = 5) -> None:
        super().__init__(engine, retries=retries)
        # SQLite has one writer per database: serialising writers inside the process avoids lock-upgrade
        # failures; other processes (a CLI import beside the server) wait on busy_timeout.
        self._write_lock = threading.Lock() if self._dialect == "sqlite" else None
        self._writer: Connection | None = None
        #: and across processes (DIMSE worker processes, an import beside the server): see ``writer_lock``
        self._process_lock = WriterLock(engine.url.database if self._dialect == "sqlite" else None)
        # Stores arriving together share one transaction and one WAL fsync (see ``group_commit``).
        self._group = GroupCommit(self._write) if self._write_lock is not None else None
        self._removals = RemovalStatements(self._dialect)
        self._hot = HotStore(self._dialect)
        self._claims = RemovalClaims(engine, self._removals, self._write, self._read, self._retrying)
        self._tiers = tiers.TierIndex(self._dialect, self._write, self._read, self._retrying)
        self._trash = trash_sql.TrashIndex(engine, self._removals, self._write, self._read, self._retrying)
        self._rejections = RejectionIndex(engine, self._write, self._read, self._retrying)
        self._compression = CompressionIndex(engine, self._removals, self._write, self._read, self._retrying,
                                             lambda conn, key: self._referenced(conn, key, exclude_sop=None))
        self._prepare()

    # -- transactions -------------------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        lock = self._write_lock
        if lock is None:  # PostgreSQL: concurrent writers, each on a pooled connection
            with self.engine.connect() as conn, conn.begin():
                yield conn
            return
        with lock, self._process_lock.hold():
            # SQLite has one writer at a time: it keeps one connection instead of a pool checkout and check-in
            # per transaction (~10 % of a small object's ingest CPU). A connection that failed is replaced.
            kept = self._writer
            if kept is None or kept.closed or kept.invalidated:
                kept = self._writer = self.engine.connect().execution_options(sqlite_begin="IMMEDIATE")
            conn = kept
            try:
                with conn.begin():
                    yield conn
            except DBAPIError:
                self._writer = None
                conn.close()
                raise

    def close(self) -> None:
        """Release the writer's connection (before the engine is disposed)."""
        with self._write_lock or nullcontext():
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            self._process_lock.close()

    def _insert(self, table: Any) -> Any:
        return (postgresql.insert if self._dialect == "postgresql" else sqlite.insert)(table)

    # -- ingest ------------------------------------------------------------------------------------------

    def store_instance(
        self, entry: InstanceEntry, policy: DuplicatePolicy, *, accept_removal: str | None = None
    ) -> StoreResult:
        group = self._group
        if group is not None:
            return self._retrying(lambda: group.run(lambda conn: self._store_in(conn, entry, policy, accept_removal)))
        return self._retrying(lambda: self._store(entry, policy, accept_removal))

    def _prepare(self) -> None:
        """Build the hot-path statements once: SQLAlchemy then reuses their compiled form (a measurable share
        of per-instance ingest time otherwise goes to statement construction and cache-key generation)."""
        # FOR UPDATE (PostgreSQL; SQLite has one writer anyway): two nodes replacing the same instance must not
        # both remove the row they read; the second waits, sees the new row on its retry, and applies the policy.
        self._q_existing = select(
            instances.c.id, instances.c.blob_sha256, instances.c.blob_key, instances.c.blob_size,
            instances.c.transfer_syntax_uid, blob_originals.c.original_sha256,
        ).outerjoin(blob_originals, blob_originals.c.key == instances.c.blob_key).where(
            instances.c.sop_uid == bindparam("b_sop")).with_for_update(of=instances)
        self._q_checksum = select(instances.c.blob_sha256).where(instances.c.sop_uid == bindparam("b_sop"))
        self._q_series_ids = (
            select(series.c.id, series.c.study_fk, studies.c.patient_fk)
            .select_from(series.join(studies, series.c.study_fk == studies.c.id))
            .where(series.c.series_uid == bindparam("b_series"))
        )
        # Explicit RETURNING: the id comes back only when the row was inserted (psycopg reports rowcount -1 for
        # INSERT … RETURNING, and SQLite's lastrowid is stale after a DO NOTHING conflict).
        self._ins_patient = (self._insert(patients).on_conflict_do_nothing(index_elements=["patient_key"])
                             .returning(patients.c.id))
        self._ins_study = (self._insert(studies).on_conflict_do_nothing(index_elements=["study_uid"])
                           .returning(studies.c.id))
        self._ins_series = (self._insert(series).on_conflict_do_nothing(index_elements=["series_uid"])
                            .returning(series.c.id))
        self._ins_instance = instances.insert()
        self._upd_series = (
            update(series).where(series.c.id == bindparam("b_id"))
            .values(num_instances=series.c.num_instances + 1)
        )
        self._upd_study = (
            update(studies).where(studies.c.id == bindparam("b_id"))
            .values(num_instances=studies.c.num_instances + 1,
                    size_bytes=studies.c.size_bytes + bindparam("b_size"),
                    updated_at=bindparam("b_now"))
        )
        self._upd_patient = (
            update(patients).where(patients.c.id == bindparam("b_id"))
            .values(num_instances=patients.c.num_instances + 1)
        )

    def _store(self, entry: InstanceEntry, policy: DuplicatePolicy, accept: str | None) -> StoreResult:
        with self._write() as conn:
            return self._store_in(conn, entry, policy, accept)

    def _store_in(
        self, conn: Connection, entry: InstanceEntry, policy: DuplicatePolicy, accept: str | None
    ) -> StoreResult:
        clean = _no_nul(entry.patient)
        fast = self._hot.store(conn, entry, _now(), patient_key(clean.get("patient_id"),
                                                               clean.get("issuer_of_patient_id")), _no_nul)
        if fast is not None:
            _, removal = fast
            if removal:
                self._removals.check_store(conn, entry.blob.key, accept)
            return StoreResult(StoreOutcome.STORED)
        existing = conn.execute(self._q_existing, {"b_sop": entry.instance["sop_uid"]}).first()
        released: list[BlobInfo] = []
        outcome = StoreOutcome.STORED
        old_study: int | None = None
        if existing is not None:
            if existing.blob_sha256 == entry.blob.sha256:
                return StoreResult(StoreOutcome.DUPLICATE)
            if policy == DuplicatePolicy.REJECT:
                raise Conflict(
                    "a different object with this SOP Instance UID is already stored",
                    entry.instance["sop_uid"], stored_key=existing.blob_key,
                    stored_size=existing.blob_size, stored_sha256=existing.blob_sha256,
                    stored_original_sha256=existing.original_sha256 or "",
                )
            old = BlobInfo(existing.blob_key, existing.blob_size, existing.blob_sha256)
            old_study = self._remove_instance(conn, existing.id)
            if policy == DuplicatePolicy.KEEP_BOTH:
                conn.execute(
                    self._insert(instance_versions).values(
                        sop_uid=entry.instance["sop_uid"], blob_key=old.key, blob_size=old.size,
                        blob_sha256=old.sha256, transfer_syntax_uid=existing.transfer_syntax_uid,
                        superseded_at=_now(),
                    ).on_conflict_do_nothing()
                )
                outcome = StoreOutcome.VERSIONED
            else:
                outcome = StoreOutcome.REPLACED
                if not self._referenced(conn, old.key, exclude_sop=None):
                    released.append(old)
                    self._removals.record_pending(conn, [old.key])
        new_study = self._insert_instance(conn, entry)
        if old_study is not None and old_study != new_study:
            study_answers.refresh(conn, [old_study])  # the replaced instance lived in another study
        tiers.record_ingest_copy(conn, entry, _now())
        # Last, after the instance row is written (services.lifecycle explains why the order matters).
        self._removals.check_store(conn, entry.blob.key, accept)
        return StoreResult(outcome, tuple(released))

    def _upsert_id(
        self, conn: Connection, stmt: Any, table: Any, key_col: str, values: dict[str, Any]
    ) -> tuple[int, bool]:
        inserted = conn.execute(stmt, values).scalar_one_or_none()
        if inserted is not None:
            return int(inserted), True
        row = conn.execute(select(table.c.id).where(table.c[key_col] == values[key_col])).one()
        return int(row.id), False

    def _parents(self, conn: Connection, entry: InstanceEntry) -> tuple[int, int, int, bool, bool]:
        """(patient id, study id, series id, new study?, new series?) — one SELECT when the series exists,
        which is the common case (instance 2..N of a series)."""
        found = conn.execute(self._q_series_ids, {"b_series": entry.series["series_uid"]}).first()
        if found is not None:
            return int(found.patient_fk), int(found.study_fk), int(found.id), False, False
        p = _no_nul(entry.patient)
        p["patient_key"] = patient_key(p.get("patient_id"), p.get("issuer_of_patient_id"))
        patient_id, _ = self._upsert_id(
            conn, self._ins_patient, patients, "patient_key",
            {**p, "num_studies": 0, "num_series": 0, "num_instances": 0},
        )
        study_id, new_study = self._upsert_id(
            conn, self._ins_study, studies, "study_uid",
            {**_no_nul(entry.study), "patient_fk": patient_id, "num_series": 0, "num_instances": 0, "size_bytes": 0,
             "modalities_in_study": "", "updated_at": _now()},
        )
        if not new_study:
            # The study may exist under another patient row; counters follow the study's owner.
            patient_id = conn.execute(select(studies.c.patient_fk).where(studies.c.id == study_id)).scalar_one()
        series_id, new_series = self._upsert_id(
            conn, self._ins_series, series, "series_uid",
            {**_no_nul(entry.series), "study_fk": study_id, "num_instances": 0},
        )
        if not new_series:
            study_id = conn.execute(select(series.c.study_fk).where(series.c.id == series_id)).scalar_one()
            patient_id = conn.execute(select(studies.c.patient_fk).where(studies.c.id == study_id)).scalar_one()
        return patient_id, study_id, series_id, new_study, new_series

    def _insert_instance(self, conn: Connection, entry: InstanceEntry) -> int:
        """Insert the instance row and bring its parents' counters and the study's cached QIDO answer up to
        date; returns the study id."""
        patient_id, study_id, series_id, new_study, new_series = self._parents(conn, entry)
        now = _now()
        conn.execute(
            self._ins_instance,
            {
                **_no_nul(entry.instance),
                "series_fk": series_id,
                "blob_key": entry.blob.key,
                "blob_size": entry.blob.size,
                "blob_sha256": entry.blob.sha256,
                "metadata": entry.metadata_json,
                "frame_index": entry.frame_index.encode() if entry.frame_index else None,
                "source": entry.source[:128] if entry.source else None,
                "stored_at": now,
            },
        )
        conn.execute(self._upd_series, {"b_id": series_id})
        conn.execute(self._upd_study, {"b_id": study_id, "b_size": entry.blob.size, "b_now": now})
        conn.execute(self._upd_patient, {"b_id": patient_id})
        if new_series:
            conn.execute(update(studies).where(studies.c.id == study_id).values(num_series=studies.c.num_series + 1))
            conn.execute(update(patients).where(patients.c.id == patient_id)
                         .values(num_series=patients.c.num_series + 1))
            self._refresh_modalities(conn, study_id)
        if new_study:
            conn.execute(update(patients).where(patients.c.id == patient_id)
                         .values(num_studies=patients.c.num_studies + 1))
        study_answers.refresh(conn, [study_id])
        return study_id

    def _refresh_modalities(self, conn: Connection, study_id: int) -> None:
        mods = sorted(
            {m for (m,) in conn.execute(select(series.c.modality).where(series.c.study_fk == study_id)) if m}
        )
        value = ("\\" + "\\".join(mods) + "\\") if mods else ""
        conn.execute(update(studies).where(studies.c.id == study_id).values(modalities_in_study=value))

    def _remove_instance(self, conn: Connection, instance_id: int) -> int:
        """Delete one instance row, keep counters right, and drop parents left empty. Returns the study id: the
        caller refreshes that study's cached QIDO answer once it has removed everything it removes (one re-render
        per study, not per instance, when a whole series goes)."""
        row = conn.execute(
            select(instances.c.series_fk, instances.c.blob_size, series.c.study_fk, studies.c.patient_fk)
            .select_from(INSTANCE_SERIES_STUDY)
            .where(instances.c.id == instance_id)
        ).one()
        conn.execute(delete(instances).where(instances.c.id == instance_id))
        conn.execute(update(series).where(series.c.id == row.series_fk)
                     .values(num_instances=series.c.num_instances - 1))
        conn.execute(update(studies).where(studies.c.id == row.study_fk).values(
            num_instances=studies.c.num_instances - 1, size_bytes=studies.c.size_bytes - row.blob_size))
        conn.execute(update(patients).where(patients.c.id == row.patient_fk)
                     .values(num_instances=patients.c.num_instances - 1))
        left = conn.execute(select(series.c.num_instances).where(series.c.id == row.series_fk)).scalar_one()
        if left <= 0:
            conn.execute(delete(series).where(series.c.id == row.series_fk))
            conn.execute(update(studies).where(studies.c.id == row.study_fk)
                         .values(num_series=studies.c.num_series - 1))
            conn.execute(update(patients).where(patients.c.id == row.patient_fk)
                         .values(num_series=patients.c.num_series - 1))
            self._refresh_modalities(conn, row.study_fk)
            n_series = conn.execute(select(studies.c.num_series).where(studies.c.id == row.study_fk)).scalar_one()
            if n_series <= 0:
                conn.execute(delete(studies).where(studies.c.id == row.study_fk))
                conn.execute(update(patients).where(patients.c.id == row.patient_fk)
                             .values(num_studies=patients.c.num_studies - 1))
                n_studies = conn.execute(
                    select(patients.c.num_studies).where(patients.c.id == row.patient_fk)).scalar_one()
                if n_studies <= 0:
                    conn.execute(delete(patients).where(patients.c.id == row.patient_fk))
        return int(row.study_fk)

    def _referenced(self, conn: Connection, key: str, exclude_sop: str | None, *, trashed: bool = True) -> bool:
        """Whether an instance or prior-version row references ``key`` or (``trashed``) the trash holds it: a
        soft-deleted blob stays referenced until its purge (``adapters.index.trash``)."""
        q1 = select(instances.c.id).where(instances.c.blob_key == key).limit(1)
        q2 = select(instance_versions.c.id).where(instance_versions.c.blob_key == key).limit(1)
        if conn.execute(q1).first() is not None or conn.execute(q2).first() is not None:
            return True
        return trashed and conn.execute(select(trash.c.key).where(trash.c.key == key)).first() is not None

    # -- lifecycle ---------------------------------------------------------------------------------------

    def _delete_rows(
        self, conn: Connection, study_uid: str, series_uid: str | None, sop_uid: str | None, *, trashed: bool
    ) -> tuple[list[Released], int]:
        """Remove the addressed instances and their prior versions; returns the blobs no longer referenced
        (``trashed``: the trash counts as a reference, see ``_referenced``) and how many instances went."""
        stmt = self._instance_select(instances.c.id, instances.c.sop_uid, instances.c.blob_key,
                                     instances.c.blob_size, instances.c.blob_sha256, series.c.series_uid)
        stmt = stmt.where(studies.c.study_uid == study_uid)
        if series_uid is not None:
            stmt = stmt.where(series.c.series_uid == series_uid)
        if sop_uid is not None:
            stmt = stmt.where(instances.c.sop_uid == sop_uid)
        rows = conn.execute(stmt).all()
        released: list[Released] = []
        seen: set[str] = set()
        touched: set[int] = set()
        for r in rows:
            touched.add(self._remove_instance(conn, r.id))
            versions = conn.execute(
                select(instance_versions.c.blob_key, instance_versions.c.blob_size,
                       instance_versions.c.blob_sha256).where(instance_versions.c.sop_uid == r.sop_uid)
            ).all()
            conn.execute(delete(instance_versions).where(instance_versions.c.sop_uid == r.sop_uid))
            for b, superseded in [(BlobInfo(r.blob_key, r.blob_size, r.blob_sha256), False)] + [
                (BlobInfo(v.blob_key, v.blob_size, v.blob_sha256), True) for v in versions
            ]:
                if b.key not in seen and not self._referenced(conn, b.key, None, trashed=trashed):
                    seen.add(b.key)
                    released.append((b, r.sop_uid, r.series_uid, study_uid, superseded))
        study_answers.refresh(conn, sorted(touched))
        return released, len(rows)

    def delete(
        self, *, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None,
        deletion: Deletion | None = None,
    ) -> list[BlobInfo]:
        def run() -> list[BlobInfo]:
            with self._write() as conn:
                released, n = self._delete_rows(conn, study_uid, series_uid, sop_uid, trashed=True)
                self._removals.record_pending(conn, [r[0].key for r in released])
                if n:
                    trash_sql.write_log(conn, DeletionAction.DELETE, study_uid=study_uid, series_uid=series_uid,
                                        sop_uid=sop_uid, instances_count=n, deletion=deletion, at=_now())
                return [r[0] for r in released]

        return self._retrying(run)

    def soft_delete(
        self, *, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None,
        purge_after: datetime, deletion: Deletion,
    ) -> list[BlobInfo]:
        def run() -> list[BlobInfo]:
            with self._write() as conn:
                # The trash is not a reference here: a key trashed before (its object sent again since) is
                # trashed again, with this deletion's times.
                released, n = self._delete_rows(conn, study_uid, series_uid, sop_uid, trashed=False)
                now = _now()
                self._trash.put(conn, released, at=now, purge_after=purge_after, deletion=deletion)
                if n:
                    trash_sql.write_log(conn, DeletionAction.SOFT_DELETE, study_uid=study_uid,
                                        series_uid=series_uid, sop_uid=sop_uid, instances_count=n,
                                        deletion=deletion, at=now)
                return [r[0] for r in released]

        return self._retrying(run)

    # -- the trash and the deletion log (SQL in ``adapters.index.trash``) -----------------------------------

    def record_rejections(self, rows: Sequence[Rejected]) -> None:
        self._rejections.record(rows)

    def rejection(self, sop_uid: str) -> Rejected | None:
        return self._rejections.find(sop_uid)

    def has_rejections(self) -> bool:
        return self._rejections.any()

    def trash_items(self, *, study_uid: str | None = None, series_uid: str | None = None,
                    sop_uid: str | None = None, limit: int | None = None) -> list[TrashItem]:
        return self._trash.items(study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid, limit=limit)

    def trash_due(self, *, now: datetime, limit: int) -> list[str]:
        return self._trash.due(now=now, limit=limit)

    def untrash_restored(self, keys: Sequence[str], *, study_uid: str, series_uid: str | None, sop_uid: str | None,
                         instances_count: int, deletion: Deletion) -> int:
        return self._trash.restored(keys, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid,
                                    instances_count=instances_count, deletion=deletion, at=_now())

    def purge_trash(self, keys: Sequence[str], *, due_at: datetime | None, deletion: Deletion) -> PurgeBatch:
        return self._trash.purge(keys, due_at=due_at, deletion=deletion, at=_now())

    def deletion_log(self, *, study_uid: str | None = None, limit: int = 100) -> list[DeletionEntry]:
        return self._trash.log(study_uid=study_uid, limit=limit)

    # -- blob removal claims (transactions and SQL in ``adapters.index.removals``) -------------------------

    def claim_blob_removals(
        self, keys: Sequence[str], *, stale_after: float, unreferenced_found: bool = False
    ) -> BlobClaim:
        return self._claims.claim(keys, stale_after=stale_after, unreferenced_found=unreferenced_found)

    def finish_blob_removals(self, claim: str, keys: Sequence[str]) -> None:
        self._claims.finish(claim, keys)

    def blob_removal_round(self, key: str) -> RemovalRound | None:
        return self._claims.round(key)

    def blob_removals_due(self, *, stale_after: float, limit: int) -> list[str]:
        return self._claims.due(stale_after=stale_after, limit=limit)

    def forget_blob_removals(self, *, older_than: float) -> int:
        return self._claims.forget(older_than=older_than)

    def instance_checksum(self, sop_uid: str) -> str | None:
        return self._reading(lambda conn: conn.execute(self._q_checksum, {"b_sop": sop_uid}).scalar_one_or_none())

    def blob_referenced(self, key: str) -> bool:
        return self._reading(lambda conn: self._referenced(conn, key, None))

    def replace_blob_key(self, old_key: str, new: BlobInfo) -> int:
        def run() -> int:
            with self._write() as conn:
                n = conn.execute(update(instances).where(instances.c.blob_key == old_key).values(
                    blob_key=new.key, blob_size=new.size, blob_sha256=new.sha256)).rowcount
                n += conn.execute(update(instance_versions).where(instance_versions.c.blob_key == old_key).values(
                    blob_key=new.key, blob_size=new.size, blob_sha256=new.sha256)).rowcount
                n += conn.execute(update(trash).where(trash.c.key == old_key).values(
                    key=new.key, blob_size=new.size, blob_sha256=new.sha256)).rowcount
                return int(n)

        return self._retrying(run)

    # -- storage tiers: verified copies, study selection, reads (SQL in ``adapters.index.tiers``) -------------

    def blob_copies(self, keys: Sequence[str]) -> dict[str, list[BlobCopy]]:
        return self._tiers.blob_copies(keys)

    def add_blob_copy(self, key: str, store: str, *, verified_at: datetime, present: Callable[[], bool]) -> bool:
        return self._tiers.add_blob_copy(key, store, verified_at=verified_at, present=present)

    def drop_blob_copy(self, key: str, store: str, *, delete: Callable[[], None]) -> bool:
        return self._tiers.drop_blob_copy(key, store, delete=delete)

    def study_blobs(self, study_uid: str) -> list[StudyBlob]:
        return self._tiers.study_blobs(study_uid)

    def studies_needing(
        self, condition: StudyCondition, target: CopyTarget, *, now: datetime, after: str = "", limit: int = 1000
    ) -> list[StudyCandidate]:
        return self._tiers.studies_needing(condition, target, now=now, after=after, limit=limit)

    def studies_matching(
        self, condition: StudyCondition, *, now: datetime, after: str = "", limit: int = 1000
    ) -> list[StudyCandidate]:
        return self._tiers.studies_matching(condition, now=now, after=after, limit=limit)

    def study_facts(self, study_uid: str) -> StudyFacts | None:
        return self._tiers.study_facts(study_uid)

    def note_study_reads(self, study_uids: Sequence[str], at: datetime) -> None:
        self._tiers.note_study_reads(study_uids, at)

    def store_usage(self) -> list[StoreUsage]:
        return self._tiers.store_usage()

    def iter_blob_copies(self, store: str) -> Iterator[tuple[str, BlobInfo, tuple[str, ...]]]:
        return self._tiers.iter_blob_copies(store)

    def iter_uncopied_blobs(self) -> Iterator[tuple[str, BlobInfo]]:
        return self._tiers.iter_uncopied_blobs()

    # -- compression at rest (SQL in ``adapters.index.compression``) -------------------------------------------

    def switch_to_compressed(self, sop_uid: str, old: BlobInfo, new: BlobInfo, *, syntax: str,
                             frame_index: str | None, recipe: OriginalRecipe,
                             stores: Sequence[str]) -> CompressedSwitch:
        return self._compression.switch_to_compressed(sop_uid, old, new, syntax=syntax, frame_index=frame_index,
                                                      recipe=recipe, stores=stores)

    def original_recipe(self, key: str) -> OriginalRecipe | None:
        return self._compression.original_recipe(key)

    def record_compression_skip(self, key: str, reason: str) -> None:
        self._compression.record_compression_skip(key, reason)

    def compression_skips(self, keys: Sequence[str]) -> dict[str, str]:
        return self._compression.compression_skips(keys)

    def compression_skip_reasons(self, limit: int = 20) -> list[tuple[str, int]]:
        return self._compression.skip_reasons(limit)

    def studies_to_compress(self, condition: StudyCondition, *, now: datetime, after: str = "",
                            limit: int = 1000) -> list[StudyCandidate]:
        return self._compression.studies_to_compress(condition, now=now, after=after, limit=limit)

    def compression_savings(self) -> list[CompressionSavings]:
        return self._compression.compression_savings()

    def compressed_instances(self, *, after_id: int = 0, limit: int = 500) -> list[tuple[int, str]]:
        return self._compression.compressed_instances(after_id=after_id, limit=limit)
