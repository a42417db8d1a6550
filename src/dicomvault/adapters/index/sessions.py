"""SqlSessionStore: the web session port on the index database (migration 0015)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, DateTime, Engine, Index, Integer, String, Table, delete, or_, select, update

from dicomvault.adapters.index.postgres import run_with_retries
from dicomvault.adapters.index.tables import Id, metadata
from dicomvault.adapters.index.times import aware
from dicomvault.ports.sessions import WebSession

web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("principal", String(256), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("scopes", String(256), nullable=False),  # space-separated
    Column("csrf", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("token_id", Integer),
    Column("share_id", Integer),
    Column("study_uid", String(64)),
    Index("ix_web_sessions_share", "share_id"),
    Index("ix_web_sessions_expires", "expires_at"),
)


def _record(row: Any) -> WebSession:
    created, expires = aware(row.created_at), aware(row.expires_at)
    assert created is not None and expires is not None
    return WebSession(
        id=int(row.id), principal=row.principal, kind=row.kind,
        scopes=tuple(s for s in row.scopes.split() if s), csrf=row.csrf, created_at=created, expires_at=expires,
        revoked_at=aware(row.revoked_at), token_id=row.token_id, share_id=row.share_id, study_uid=row.study_uid,
    )


class SqlSessionStore:
    """Implements ``ports.sessions.SessionStore``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _writer(self) -> Any:
        return self.engine.connect().execution_options(sqlite_begin="IMMEDIATE")

    def add(self, *, secret_hash: str, principal: str, kind: str, scopes: tuple[str, ...], csrf: str,
            created_at: datetime, expires_at: datetime, token_id: int | None = None, share_id: int | None = None,
            study_uid: str | None = None) -> WebSession:
        with self._writer() as conn, conn.begin():
            res = conn.execute(web_sessions.insert().values(
                secret_hash=secret_hash, principal=principal[:256], kind=kind, scopes=" ".join(scopes), csrf=csrf,
                created_at=created_at, expires_at=expires_at, token_id=token_id, share_id=share_id,
                study_uid=study_uid))
            new_id = int(res.inserted_primary_key[0])
            row = conn.execute(select(web_sessions).where(web_sessions.c.id == new_id)).one()
        return _record(row)

    def by_hash(self, secret_hash: str) -> WebSession | None:
        def run() -> Any:
            with self.engine.connect() as conn:
                return conn.execute(select(web_sessions).where(web_sessions.c.secret_hash == secret_hash)).first()

        row = run_with_retries(run, dialect=self.engine.dialect.name)
        return _record(row) if row is not None else None

    def revoke(self, session_id: int, when: datetime) -> bool:
        with self._writer() as conn, conn.begin():
            res = conn.execute(update(web_sessions)
                               .where(web_sessions.c.id == session_id, web_sessions.c.revoked_at.is_(None))
                               .values(revoked_at=when))
            return bool(res.rowcount)

    def revoke_share(self, share_id: int, when: datetime) -> int:
        with self._writer() as conn, conn.begin():
            res = conn.execute(update(web_sessions)
                               .where(web_sessions.c.share_id == share_id, web_sessions.c.revoked_at.is_(None))
                               .values(revoked_at=when))
            return int(res.rowcount or 0)

    def purge(self, before: datetime) -> int:
        with self._writer() as conn, conn.begin():
            res = conn.execute(delete(web_sessions).where(or_(
                web_sessions.c.expires_at < before, web_sessions.c.revoked_at < before)))
            return int(res.rowcount or 0)
