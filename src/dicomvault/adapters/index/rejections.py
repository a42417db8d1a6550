"""SQL of the IOCM rejection memory (``ports.index.IndexRepository.record_rejections`` and friends)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC
from typing import Any

from sqlalchemy import Connection, Engine, exists, select
from sqlalchemy.dialects import postgresql, sqlite

from dicomvault.adapters.index.tables import rejected_instances
from dicomvault.domain.trash import Rejected

Tx = Callable[[], AbstractContextManager[Connection]]


class RejectionIndex:
    def __init__(self, engine: Engine, write: Tx, read: Tx, retrying: Callable[[Callable[[], Any]], Any]) -> None:
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._write, self._read, self._retrying = write, read, retrying

    def record(self, rows: Sequence[Rejected]) -> None:
        if not rows:
            return
        stmt = self._insert(rejected_instances)
        stmt = stmt.on_conflict_do_update(
            index_elements=[rejected_instances.c.sop_uid],
            set_={"code": stmt.excluded.code, "note_uid": stmt.excluded.note_uid,
                  "rejected_at": stmt.excluded.rejected_at})

        def run() -> None:
            with self._write() as conn:
                conn.execute(stmt, [{"sop_uid": r.sop_uid, "study_uid": r.study_uid, "series_uid": r.series_uid,
                                     "code": r.code, "note_uid": r.note_uid, "rejected_at": r.rejected_at}
                                    for r in rows])

        self._retrying(run)

    def find(self, sop_uid: str) -> Rejected | None:
        def run() -> Rejected | None:
            with self._read() as conn:
                row = conn.execute(select(rejected_instances).where(
                    rejected_instances.c.sop_uid == sop_uid)).first()
            if row is None:
                return None
            at = row.rejected_at if row.rejected_at.tzinfo else row.rejected_at.replace(tzinfo=UTC)
            return Rejected(row.sop_uid, row.study_uid, row.series_uid, row.code, row.note_uid, at)

        result: Rejected | None = self._retrying(run)
        return result

    def any(self) -> bool:
        def run() -> bool:
            with self._read() as conn:
                return bool(conn.execute(select(exists().select_from(rejected_instances))).scalar())

        return bool(self._retrying(run))
