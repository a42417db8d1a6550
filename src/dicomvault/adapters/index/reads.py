"""The read path of the SQL index: queries, instance records, metadata, blob references, counts and the probe.

Why apart from the write path (``adapters.index.repository``, which inherits this class): reads take no write
lock, never open a write transaction and share nothing with ingest's prepared statements, so they can be read and
changed without the store/replace/delete protocol in view. Every read is one unit of work retried and
error-translated like a write (``_reading``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SqlTimeoutError

from dicomvault.adapters.index import postgres, querying, study_answers
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
from dicomvault.domain.errors import Unavailable
from dicomvault.domain.frame_index import HEAD_CHARS
from dicomvault.domain.query import QuerySpec
from dicomvault.domain.records import ArchiveStats, BlobInfo, FrameIndex, InstanceRecord, OriginalForm
from dicomvault.domain.tags import Level

T = TypeVar("T")


class SqlIndexReads:
    """The read methods of ``ports.index.IndexRepository`` over one engine."""

    def __init__(self, engine: Engine, *, retries: int = 5) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name
        self._retries = retries

    # -- transactions -------------------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def _reading(self, fn: Callable[[Connection], T]) -> T:
        """One read-only unit of work, retried and error-translated like a write."""

        def run() -> T:
            with self._read() as conn:
                return fn(conn)

        return self._retrying(run)

    def _retrying(self, fn: Callable[[], T]) -> T:
        """Run a whole transaction again when the database says a retry can succeed (PostgreSQL: serialization
        failure, deadlock, a concurrent insert of the same SOP Instance UID, a dropped connection; policy in
        ``adapters.index.postgres``); translate an unreachable or overloaded database into ``Unavailable``."""
        return postgres.run_with_retries(fn, dialect=self._dialect, retries=self._retries)

    # -- queries -----------------------------------------------------------------------------------------

    def find(self, spec: QuerySpec) -> list[dict[str, Any]]:
        stmt = querying.build_select(spec)

        def run() -> list[dict[str, Any]]:
            with self._read() as conn:
                return [dict(r._mapping) for r in conn.execute(stmt)]

        return self._retrying(run)

    def find_study_json(self, spec: QuerySpec) -> list[tuple[int, str, str | dict[str, Any]]]:
        """(row id, Study Instance UID, answer) per matching study, in id order; the answer is the cached default
        DICOM JSON text or, for a study without a current cached answer (``study_answers.valid``), the full row as
        ``find`` gives it (a second query, on those ids only)."""

        def run() -> list[tuple[int, str, str | dict[str, Any]]]:
            with self._read() as conn:
                # Plain tuples: Row attribute access by name costs microseconds per row, a visible share here.
                rows = [tuple(r) for r in conn.execute(querying.build_fragment_select(spec)).all()]
                stale = [r[0] for r in rows if not study_answers.valid(r[2], r[3], r[4])]
                full: dict[int, dict[str, Any]] = {}
                if stale:
                    stmt = querying.build_select(QuerySpec(level=spec.level)).where(studies.c.id.in_(stale))
                    full = {int(m["_id"]): dict(m) for m in conn.execute(stmt).mappings()}
                out: list[tuple[int, str, str | dict[str, Any]]] = []
                for row_id, study_uid, text, count, n in rows:
                    if row_id in full:
                        out.append((row_id, study_uid, full[row_id]))
                    elif study_answers.valid(text, count, n):
                        out.append((row_id, study_uid, text))
                    # else: deleted between the two statements (READ COMMITTED on PostgreSQL gives each statement
                    # its own snapshot): left out rather than answered from a stale cached answer
                return out

        return self._retrying(run)

    def representative_metadata(self, *, study_uid: str, series_uid: str | None = None) -> str | None:
        stmt = (
            select(instances.c.metadata)
            .select_from(INSTANCE_SERIES_STUDY)
            .where(studies.c.study_uid == study_uid)
        )
        if series_uid is not None:
            stmt = stmt.where(series.c.series_uid == series_uid)
        stmt = stmt.order_by(instances.c.id).limit(1)
        return self._reading(lambda conn: conn.execute(stmt).scalar_one_or_none())

    def representative_metadata_many(self, level: Level, row_ids: list[int]) -> dict[int, str]:
        if not row_ids:
            return {}
        stmt = querying.representative_select(level, row_ids)
        return self._reading(lambda conn: {int(owner): text for owner, text in conn.execute(stmt).all()})

    def _instance_select(self, *cols: Any) -> Any:
        return select(*cols).select_from(
            INSTANCE_SERIES_STUDY.join(patients, studies.c.patient_fk == patients.c.id))

    def instances(
        self,
        *,
        patient_id: str | None = None,
        study_uid: str | None = None,
        series_uid: str | None = None,
        sop_uids: list[str] | None = None,
    ) -> list[InstanceRecord]:
        stmt = self._instance_select(
            patients.c.patient_id, studies.c.study_uid, series.c.series_uid, instances.c.sop_uid,
            instances.c.sop_class_uid, instances.c.transfer_syntax_uid, instances.c.blob_key,
            instances.c.blob_size, instances.c.blob_sha256, instances.c.number_of_frames, instances.c.rows,
            instances.c.columns, instances.c.instance_number, instances.c.pixel_problem,
            # Only the head of the frame index: enough for native data and small objects, a header to find a
            # frame's entries with (``frame_index_text``) otherwise; never a multi-MB text per record.
            func.substr(instances.c.frame_index, 1, HEAD_CHARS).label("frame_head"),
            # A compressed-at-rest blob's original form (``services.compression``): one primary-key probe per row.
            blob_originals.c.original_syntax, blob_originals.c.original_size, blob_originals.c.original_sha256,
            blob_originals.c.layout, blob_originals.c.pixel_length,
        ).outerjoin(blob_originals, blob_originals.c.key == instances.c.blob_key)
        if patient_id is not None:
            stmt = stmt.where(patients.c.patient_id == patient_id)
        if study_uid is not None:
            stmt = stmt.where(studies.c.study_uid == study_uid)
        if series_uid is not None:
            stmt = stmt.where(series.c.series_uid == series_uid)
        if sop_uids is not None:
            stmt = stmt.where(instances.c.sop_uid.in_(sop_uids))
        stmt = stmt.order_by(series.c.series_number, series.c.id, instances.c.instance_number, instances.c.id)
        rows = self._reading(lambda conn: conn.execute(stmt).all())
        return [
            InstanceRecord(
                patient_id=r.patient_id, study_uid=r.study_uid, series_uid=r.series_uid, sop_uid=r.sop_uid,
                sop_class_uid=r.sop_class_uid, transfer_syntax_uid=r.transfer_syntax_uid,
                blob=BlobInfo(r.blob_key, r.blob_size, r.blob_sha256), number_of_frames=r.number_of_frames,
                rows=r.rows, columns=r.columns, instance_number=r.instance_number,
                frame_index=FrameIndex.decode(r.frame_head, complete=len(r.frame_head) < HEAD_CHARS,
                                              frames=r.number_of_frames or 1) if r.frame_head else None,
                pixel_problem=r.pixel_problem,
                original=OriginalForm(r.original_syntax, r.original_size, r.original_sha256, json.loads(r.layout),
                                      int(r.pixel_length))
                if r.original_syntax is not None else None,
            )
            for r in rows
        ]

    def frame_index_text(self, sop_uid: str, blob_key: str, start: int, length: int | None) -> str | None:
        column = instances.c.frame_index
        if length is None:
            part = column if start == 0 else func.substr(column, start + 1)
        else:
            part = func.substr(column, start + 1, length)
        stmt = select(part).where(instances.c.sop_uid == sop_uid, instances.c.blob_key == blob_key)
        return self._reading(lambda conn: conn.execute(stmt).scalar_one_or_none())

    def metadata(
        self, *, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
    ) -> Iterator[str]:
        stmt = self._instance_select(instances.c.metadata).where(studies.c.study_uid == study_uid)
        if series_uid is not None:
            stmt = stmt.where(series.c.series_uid == series_uid)
        if sop_uid is not None:
            stmt = stmt.where(instances.c.sop_uid == sop_uid)
        stmt = stmt.order_by(series.c.series_number, series.c.id, instances.c.instance_number, instances.c.id)
        rows = self._reading(lambda conn: conn.execute(stmt).scalars().all())
        yield from rows

    def metadata_documents(
        self, *, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
    ) -> list[tuple[str, str, str]]:
        stmt = (
            select(series.c.series_uid, instances.c.sop_uid, instances.c.metadata)
            .select_from(INSTANCE_SERIES_STUDY)
            .where(studies.c.study_uid == study_uid)
        )
        if series_uid is not None:
            stmt = stmt.where(series.c.series_uid == series_uid)
        if sop_uid is not None:
            stmt = stmt.where(instances.c.sop_uid == sop_uid)
        stmt = stmt.order_by(series.c.series_number, series.c.id, instances.c.instance_number, instances.c.id)
        return self._reading(lambda conn: [(a, b, c) for a, b, c in conn.execute(stmt).all()])

    def metadata_version(self, *, study_uid: str, series_uid: str | None = None) -> tuple[Any, ...] | None:
        """(instance count, highest instance id, the study's ``updated_at``): count and id come from the
        (series_fk, instance_number) index without reading instance rows; ``updated_at`` is rewritten by every
        store into the study, which covers what count and id miss (SQLite reuses the highest rowid when the
        newest instance is replaced)."""
        stmt = (
            select(func.count(instances.c.id), func.max(instances.c.id), func.max(studies.c.updated_at))
            .select_from(INSTANCE_SERIES_STUDY)
            .where(studies.c.study_uid == study_uid)
        )
        if series_uid is not None:
            stmt = stmt.where(series.c.series_uid == series_uid)
        row = self._reading(lambda conn: conn.execute(stmt).one())
        return None if not row[0] else (int(row[0]), int(row[1]), row[2])

    # -- blob references and counts ----------------------------------------------------------------------

    def iter_blob_refs(self) -> Iterator[tuple[str, BlobInfo]]:
        """Streams (server-side cursor on PostgreSQL, ``yield_per``) so a million rows stay in bounded memory.
        Trashed blobs too: until purged they are referenced (``adapters.index.trash``)."""
        queries = (
            select(instances.c.sop_uid, instances.c.blob_key, instances.c.blob_size, instances.c.blob_sha256)
            .order_by(instances.c.id),
            select(instance_versions.c.sop_uid, instance_versions.c.blob_key, instance_versions.c.blob_size,
                   instance_versions.c.blob_sha256).order_by(instance_versions.c.id),
            # soft-deleted blobs are indexed until purged (verify, storage migration): ``adapters.index.trash``
            select(trash.c.sop_uid, trash.c.key.label("blob_key"), trash.c.blob_size, trash.c.blob_sha256)
            .order_by(trash.c.key),
        )
        try:
            with self._read() as conn:
                conn = conn.execution_options(stream_results=True, yield_per=1000)
                for stmt in queries:
                    # closed on every exit, a consumer that stops early included: a PostgreSQL server-side
                    # cursor left to the garbage collector stays open on the server until then
                    with conn.execute(stmt) as result:
                        for r in result:
                            yield r.sop_uid, BlobInfo(r.blob_key, r.blob_size, r.blob_sha256)
        except (DBAPIError, SqlTimeoutError) as exc:
            raise Unavailable("index database unavailable while listing blobs") from exc

    def stats(self) -> ArchiveStats:
        return self._reading(self._stats)

    def _stats(self, conn: Connection) -> ArchiveStats:
        n_pat = conn.execute(select(func.count()).select_from(patients)).scalar_one()
        n_st = conn.execute(select(func.count()).select_from(studies)).scalar_one()
        n_se = conn.execute(select(func.count()).select_from(series)).scalar_one()
        n_in, n_bytes = conn.execute(
            select(func.count(), func.coalesce(func.sum(instances.c.blob_size), 0)).select_from(instances)
        ).one()
        by_mod = {
            (m or "??"): (int(c), int(b))
            for m, c, b in conn.execute(
                select(series.c.modality, func.count(), func.coalesce(func.sum(instances.c.blob_size), 0))
                .select_from(instances.join(series, instances.c.series_fk == series.c.id))
                .group_by(series.c.modality)
            )
        }
        return ArchiveStats(int(n_pat), int(n_st), int(n_se), int(n_in), int(n_bytes), by_mod)

    def ping(self) -> None:
        try:
            with self._read() as conn:
                conn.execute(text("SELECT 1"))
        except DBAPIError as exc:
            raise Unavailable("index database unavailable") from exc
