"""SqlTokenStore: the API token port on the index database (same engine, migrations 0002 and 0005)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, DateTime, Engine, Index, String, Table, func, select, update

from dicomvault.adapters.index.postgres import run_with_retries
from dicomvault.adapters.index.tables import Id, metadata
from dicomvault.adapters.index.times import aware
from dicomvault.ports.tokens import ApiToken

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("scopes", String(256), nullable=False),  # space-separated
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("expires_at", DateTime(timezone=True)),
    Index("ix_api_tokens_name", "name"),
)


def _record(row: Any) -> ApiToken:
    created = aware(row.created_at)
    assert created is not None
    return ApiToken(
        id=int(row.id),
        name=row.name,
        scopes=tuple(s for s in row.scopes.split() if s),
        created_at=created,
        revoked_at=aware(row.revoked_at),
        expires_at=aware(row.expires_at),
    )


class SqlTokenStore:
    """Implements ``ports.tokens.TokenStore``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _writer(self) -> Any:
        # IMMEDIATE on SQLite: take the write lock up front (no deferred lock upgrade failing under load).
        return self.engine.connect().execution_options(sqlite_begin="IMMEDIATE")

    def add(self, *, name: str, token_hash: str, scopes: tuple[str, ...], created_at: datetime,
            expires_at: datetime | None = None) -> ApiToken:
        with self._writer() as conn, conn.begin():
            res = conn.execute(api_tokens.insert().values(
                name=name, token_hash=token_hash, scopes=" ".join(scopes), created_at=created_at,
                expires_at=expires_at))
            new_id = int(res.inserted_primary_key[0])
            row = conn.execute(select(api_tokens).where(api_tokens.c.id == new_id)).one()
        return _record(row)

    def all(self) -> list[ApiToken]:
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(select(api_tokens).order_by(api_tokens.c.id))]

    def by_hash(self, token_hash: str) -> ApiToken | None:
        def run() -> Any:
            with self.engine.connect() as conn:
                return conn.execute(select(api_tokens).where(api_tokens.c.token_hash == token_hash)).first()

        # Checked on every request: a database outage must surface as Unavailable (503), not a bare 500.
        row = run_with_retries(run, dialect=self.engine.dialect.name)
        return _record(row) if row is not None else None

    def by_id(self, token_id: int) -> ApiToken | None:
        def run() -> Any:
            with self.engine.connect() as conn:
                return conn.execute(select(api_tokens).where(api_tokens.c.id == token_id)).first()

        row = run_with_retries(run, dialect=self.engine.dialect.name)
        return _record(row) if row is not None else None

    def revoke(self, token_id: int, when: datetime) -> bool:
        with self._writer() as conn, conn.begin():
            res = conn.execute(update(api_tokens)
                               .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                               .values(revoked_at=when))
            return bool(res.rowcount)

    def count_active(self) -> int:
        def run() -> int:
            with self.engine.connect() as conn:
                return int(conn.execute(select(func.count()).select_from(api_tokens)
                                        .where(api_tokens.c.revoked_at.is_(None))).scalar_one())

        return run_with_retries(run, dialect=self.engine.dialect.name)
