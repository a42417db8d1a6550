"""SQL of the IOCM rejection memory (``ports.index.IndexRepository.record_rejections`` and friends)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

from sqlalchemy import Engine, exists, select
from sqlalchemy.dialects import postgresql, sqlite

from dicomvault.adapters.index.tables import rejected_instances
from dicomvault.adapters.index.transactions import Retrying, Transactions, Tx
from dicomvault.domain.trash import Rejected


class RejectionIndex(Transactions):
    def __init__(self, engine: Engine, write: Tx, read: Tx, retrying: Retrying) -> None:
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._bind(write, read, retrying)

    def record(self, rows: Sequence[Rejected]) -> None:
        if not rows:
            return
        stmt = self._insert(rejected_instances)
        stmt = stmt.on_conflict_do_update(
            index_elements=[rejected_instances.c.sop_uid],
            set_={"code": stmt.excluded.code, "note_uid": stmt.excluded.note_uid,
                  "rejected_at": stmt.excluded.rejected_at})

        self._in_write(lambda conn: conn.execute(stmt, [
            {"sop_uid": r.sop_uid, "study_uid": r.study_uid, "series_uid": r.series_uid, "code": r.code,
             "note_uid": r.note_uid, "rejected_at": r.rejected_at} for r in rows]))

    def find(self, sop_uid: str) -> Rejected | None:
        row = self._in_read(lambda conn: conn.execute(select(rejected_instances).where(
            rejected_instances.c.sop_uid == sop_uid)).first())
        if row is None:
            return None
        at = row.rejected_at if row.rejected_at.tzinfo else row.rejected_at.replace(tzinfo=UTC)
        return Rejected(row.sop_uid, row.study_uid, row.series_uid, row.code, row.note_uid, at)

    def any(self) -> bool:
        return bool(self._in_read(lambda conn: conn.execute(select(exists().select_from(rejected_instances)))
                                  .scalar()))
