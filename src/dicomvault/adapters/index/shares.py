"""SqlShareStore: the share link port on the index database (migration 0016)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, DateTime, Engine, Index, Integer, String, Table, select, update

from dicomvault.adapters.index.postgres import run_with_retries
from dicomvault.adapters.index.tables import Id, metadata
from dicomvault.adapters.index.times import aware
from dicomvault.ports.shares import ShareLink, ShareUse

share_links = Table(
    "share_links",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("study_uid", String(64), nullable=False),
    Column("created_by", String(256), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("password_hash", String(256)),
    Column("failed_attempts", Integer, nullable=False, default=0),
    Column("locked_until", DateTime(timezone=True)),
    Column("uses", Integer, nullable=False, default=0),
    Column("last_used_at", DateTime(timezone=True)),
    Index("ix_share_links_study", "study_uid"),
)

share_uses = Table(
    "share_uses",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("share_id", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("what", String(16), nullable=False),
    Column("client", String(64), nullable=False),
    Index("ix_share_uses_share", "share_id", "at"),
)


def _link(row: Any) -> ShareLink:
    created, expires = aware(row.created_at), aware(row.expires_at)
    assert created is not None and expires is not None
    return ShareLink(
        id=int(row.id), study_uid=row.study_uid, created_by=row.created_by, created_at=created, expires_at=expires,
        revoked_at=aware(row.revoked_at), password_hash=row.password_hash,
        failed_attempts=int(row.failed_attempts or 0), locked_until=aware(row.locked_until),
        uses=int(row.uses or 0), last_used_at=aware(row.last_used_at),
    )


def _use(row: Any) -> ShareUse:
    at = aware(row.at)
    assert at is not None
    return ShareUse(id=int(row.id), share_id=int(row.share_id), at=at, what=row.what, client=row.client)


class SqlShareStore:
    """Implements ``ports.shares.ShareStore``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _writer(self) -> Any:
        return self.engine.connect().execution_options(sqlite_begin="IMMEDIATE")

    def _one(self, conn: Any, share_id: int) -> ShareLink:
        return _link(conn.execute(select(share_links).where(share_links.c.id == share_id)).one())

    def add(self, *, secret_hash: str, study_uid: str, created_by: str, created_at: datetime,
            expires_at: datetime, password_hash: str | None) -> ShareLink:
        with self._writer() as conn, conn.begin():
            res = conn.execute(share_links.insert().values(
                secret_hash=secret_hash, study_uid=study_uid, created_by=created_by[:256], created_at=created_at,
                expires_at=expires_at, password_hash=password_hash, failed_attempts=0, uses=0))
            return self._one(conn, int(res.inserted_primary_key[0]))

    def by_hash(self, secret_hash: str) -> ShareLink | None:
        def run() -> Any:
            with self.engine.connect() as conn:
                return conn.execute(select(share_links).where(share_links.c.secret_hash == secret_hash)).first()

        row = run_with_retries(run, dialect=self.engine.dialect.name)
        return _link(row) if row is not None else None

    def by_id(self, share_id: int) -> ShareLink | None:
        def run() -> Any:
            with self.engine.connect() as conn:
                return conn.execute(select(share_links).where(share_links.c.id == share_id)).first()

        row = run_with_retries(run, dialect=self.engine.dialect.name)
        return _link(row) if row is not None else None

    def all(self, *, limit: int = 500) -> list[ShareLink]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(share_links).order_by(share_links.c.id.desc()).limit(limit))
            return [_link(r) for r in rows]

    def revoke(self, share_id: int, when: datetime) -> bool:
        with self._writer() as conn, conn.begin():
            res = conn.execute(update(share_links)
                               .where(share_links.c.id == share_id, share_links.c.revoked_at.is_(None))
                               .values(revoked_at=when))
            return bool(res.rowcount)

    def record_use(self, share_id: int, *, at: datetime, what: str, client: str) -> None:
        with self._writer() as conn, conn.begin():
            conn.execute(share_uses.insert().values(share_id=share_id, at=at, what=what[:16], client=client[:64]))
            if what == "opened":
                conn.execute(update(share_links).where(share_links.c.id == share_id).values(
                    uses=share_links.c.uses + 1, last_used_at=at, failed_attempts=0, locked_until=None))

    def wrong_password(self, share_id: int, *, at: datetime, client: str, max_attempts: int,
                       lock_until: datetime) -> ShareLink:
        with self._writer() as conn, conn.begin():
            conn.execute(share_uses.insert().values(share_id=share_id, at=at, what="wrong_password",
                                                    client=client[:64]))
            conn.execute(update(share_links).where(share_links.c.id == share_id).values(
                failed_attempts=share_links.c.failed_attempts + 1))
            link = self._one(conn, share_id)
            if link.failed_attempts >= max_attempts:
                conn.execute(update(share_links).where(share_links.c.id == share_id).values(
                    failed_attempts=0, locked_until=lock_until))
                link = self._one(conn, share_id)
            return link

    def uses(self, share_id: int, *, limit: int = 200) -> list[ShareUse]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(share_uses).where(share_uses.c.share_id == share_id)
                                .order_by(share_uses.c.id.desc()).limit(limit))
            return [_use(r) for r in rows]
