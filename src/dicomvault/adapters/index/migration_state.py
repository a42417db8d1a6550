"""SqlMigrationState: the migration state port (``ports.migration.MigrationState``) on the index database
(migration 0013, table ``migration_studies``).

Named ``migration_state`` and not ``migrations`` because that folder holds the Alembic schema migrations.
One row per (peer AE title, Study Instance UID); every write is one short transaction, so that a migration killed
at any moment leaves each study either in its previous state or in its new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.dialects import postgresql, sqlite

from dicomvault.adapters.index.postgres import run_with_retries
from dicomvault.adapters.index.tables import migration_studies as t
from dicomvault.domain.migration import MigrationStudy, RemoteStudy, StudyState

#: Rows read or written per statement (bounded IN lists and VALUES lists on both dialects).
BATCH = 500


def _row(row: Any) -> MigrationStudy:
    return MigrationStudy(
        peer=row.peer, study_uid=row.study_uid, state=StudyState(row.state), study_date=row.study_date or "",
        expected=row.expected, received=int(row.received), attempts=int(row.attempts), bytes=int(row.bytes),
        last_error=row.last_error, queued_at=row.queued_at, updated_at=row.updated_at)


class SqlMigrationState:
    """Implements ``ports.migration.MigrationState``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    def _retry(self, fn: Any) -> Any:
        return run_with_retries(fn, dialect=self.engine.dialect.name)

    def _writer(self) -> Any:
        return self.engine.connect().execution_options(sqlite_begin="IMMEDIATE")

    def enqueue(self, peer: str, studies: Sequence[RemoteStudy]) -> None:
        now = datetime.now(UTC)
        for start in range(0, len(studies), BATCH):
            chunk = studies[start:start + BATCH]
            rows = [{"peer": peer, "study_uid": s.study_uid, "state": StudyState.QUEUED.value,
                     "study_date": (s.study_date or "")[:8], "expected": s.expected, "received": 0, "attempts": 0,
                     "bytes": 0, "last_error": None, "queued_at": now, "updated_at": now} for s in chunk]

            def run(rows: list[dict[str, Any]] = rows) -> None:
                with self._writer() as conn, conn.begin():
                    stmt = self._insert(t).values(rows)
                    # an existing row keeps its state; the peer's newest description of the study wins
                    conn.execute(stmt.on_conflict_do_update(
                        index_elements=["peer", "study_uid"],
                        set_={"expected": stmt.excluded.expected, "study_date": stmt.excluded.study_date}))
            self._retry(run)

    def get(self, peer: str, study_uids: Sequence[str]) -> dict[str, MigrationStudy]:
        out: dict[str, MigrationStudy] = {}
        uids = list(dict.fromkeys(study_uids))
        for start in range(0, len(uids), BATCH):
            chunk = uids[start:start + BATCH]

            def run(chunk: list[str] = chunk) -> list[MigrationStudy]:
                with self.engine.connect() as conn:
                    return [_row(r) for r in conn.execute(
                        select(t).where(t.c.peer == peer, t.c.study_uid.in_(chunk)))]
            for row in self._retry(run):
                out[row.study_uid] = row
        return out

    def list(self, peer: str, states: Sequence[StudyState] = ()) -> list[MigrationStudy]:
        def run() -> list[MigrationStudy]:
            stmt = select(t).where(t.c.peer == peer)
            if states:
                stmt = stmt.where(t.c.state.in_([s.value for s in states]))
            with self.engine.connect() as conn:
                return [_row(r) for r in conn.execute(stmt.order_by(t.c.study_uid))]
        result: list[MigrationStudy] = self._retry(run)
        return result

    def record(self, peer: str, study_uid: str, state: StudyState, *, expected: int | None, received: int,
               bytes_: int, error: str | None, attempted: bool) -> None:
        now = datetime.now(UTC)

        def run() -> None:
            with self._writer() as conn, conn.begin():
                values: dict[str, Any] = {"state": state.value, "received": received, "bytes": bytes_,
                                          "last_error": (error or None) and error[:1024], "updated_at": now}
                if expected is not None:
                    values["expected"] = expected
                if attempted:
                    values["attempts"] = t.c.attempts + 1
                done = conn.execute(update(t).where(t.c.peer == peer, t.c.study_uid == study_uid).values(**values))
                if not done.rowcount:  # a study given by UID that was never enqueued
                    conn.execute(self._insert(t).values(
                        peer=peer, study_uid=study_uid, study_date="", queued_at=now,
                        **{**values, "attempts": 1 if attempted else 0}))
        self._retry(run)
