"""Engine construction per database URL, and schema migration through Alembic.

SQLite: WAL journal, ``synchronous=FULL`` (a commit is on disk when it returns: we acknowledge stores only after
it), a busy timeout, foreign keys, case-sensitive LIKE (DICOM wildcard matching is case-sensitive except for PN,
which matches on a folded column), and explicit ``BEGIN IMMEDIATE`` for writers.
PostgreSQL: psycopg 3 with a sized pool and pre-ping, so a restarted server is reconnected transparently
(options and their reasons in ``adapters.index.postgres``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from dicomvault.adapters.index import postgres

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` and pick the psycopg 3 driver; leave other URLs as given."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def create_index_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        u = make_url(url)
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": 60, "check_same_thread": False},
                               pool_size=pool_size, max_overflow=pool_size, pool_use_lifo=True)
        _configure_sqlite(engine)
        return engine
    if url.startswith("postgresql"):
        return create_engine(url, echo=echo, **postgres.engine_options(pool_size))
    return create_engine(url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                         pool_recycle=1800)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA case_sensitive_like=ON")
        cur.execute("PRAGMA cache_size=-65536")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent; safe to call at every start, also by several nodes
    of a cluster at once: PostgreSQL migrations are serialised by an advisory lock)."""
    with postgres.migration_lock(engine):
        command.upgrade(alembic_config(engine), "head")
