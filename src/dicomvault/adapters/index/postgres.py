"""PostgreSQL specifics of the index adapter: engine options and the error policy behind ``_retrying``.

Why these choices:

* READ COMMITTED (PostgreSQL's default, set explicitly so a server default cannot change it): every statement
  of the ingest transaction sees rows committed by other nodes, the ``INSERT … ON CONFLICT DO NOTHING`` upserts
  wait for a concurrent inserter of the same key and then see its row, and ``SET n = n + 1`` counter updates
  re-read the newest row version after a lock wait, so counters stay exact without SERIALIZABLE.
* A bounded pool (``index_pool_size`` connections + as many overflow) with pre-ping: a server restart or a
  failover is noticed when a connection is checked out, not half-way through a request.
* ``connect_timeout`` and ``pool_timeout`` are short: when the database is down a request fails within seconds
  with ``Unavailable`` (HTTP 503 / DIMSE 0xA700) instead of hanging a DIMSE association.
* ``statement_timeout`` bounds a runaway query; ``lock_timeout`` bounds waiting behind a stuck transaction;
  ``idle_in_transaction_session_timeout`` frees locks held by a client that vanished mid-transaction.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Any, TypeVar

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from dicomvault.domain.errors import Unavailable

T = TypeVar("T")

#: serialization_failure, deadlock_detected, unique_violation (two nodes inserting the same SOP Instance UID:
#: the retry finds the committed row and answers duplicate/conflict), foreign_key_violation (a concurrent delete
#: removed the series this instance was about to join: the retry creates it again), lock_not_available.
RETRY_SQLSTATES = frozenset({"40001", "40P01", "23505", "23503", "55P03"})
#: admin/crash shutdown, cannot connect now, too many connections, query cancelled by statement_timeout.
UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300", "57014"})


class ErrorKind(str, Enum):
    RETRY = "retry"  # run the whole transaction again (after a short, jittered pause)
    UNAVAILABLE = "unavailable"  # give up: the database is down or overloaded → domain ``Unavailable``
    OTHER = "other"  # a bug or a constraint the caller must see: re-raise as is


def engine_options(
    pool_size: int,
    *,
    statement_timeout_ms: int = 30_000,
    lock_timeout_ms: int = 20_000,
    connect_timeout_s: int = 5,
    application_name: str = "dicomvault",
) -> dict[str, Any]:
    """Keyword arguments for ``sqlalchemy.create_engine`` on a ``postgresql+psycopg`` URL."""
    pool_size = max(1, pool_size)
    options = (
        f"-c statement_timeout={statement_timeout_ms} -c lock_timeout={lock_timeout_ms} "
        "-c idle_in_transaction_session_timeout=60000"
    )
    return {
        "pool_size": pool_size,
        "max_overflow": pool_size,
        "pool_timeout": 10,
        "pool_pre_ping": True,
        "pool_recycle": 1800,
        "isolation_level": "READ COMMITTED",
        "connect_args": {
            "connect_timeout": connect_timeout_s,
            "application_name": application_name,
            "options": options,
        },
    }


def sqlstate(exc: DBAPIError) -> str | None:
    return getattr(getattr(exc, "orig", None), "sqlstate", None)


def classify(exc: DBAPIError) -> ErrorKind:
    """How the repository should react to a driver error raised inside a transaction."""
    code = sqlstate(exc)
    if code in RETRY_SQLSTATES:
        return ErrorKind.RETRY
    if code in UNAVAILABLE_SQLSTATES:
        return ErrorKind.UNAVAILABLE
    if exc.connection_invalidated or (code or "").startswith("08"):
        # The connection broke (server restart, network): the pool discards it, a retry reconnects. A commit
        # whose outcome is unknown is safe to retry: store finds its own row (duplicate), delete finds nothing.
        return ErrorKind.RETRY
    if isinstance(exc, OperationalError):
        return ErrorKind.RETRY if code is None else ErrorKind.UNAVAILABLE
    return ErrorKind.OTHER


def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): exponential with full jitter, capped at 1 s."""
    return float(min(1.0, random.uniform(0.01, 0.05) * (2**attempt)))


def classify_for(dialect: str, exc: DBAPIError) -> ErrorKind:
    """``classify`` for PostgreSQL; SQLite's errors ("database is locked" after busy_timeout, I/O errors) are
    nothing an immediate retry would fix."""
    if dialect == "postgresql":
        return classify(exc)
    if exc.connection_invalidated or isinstance(exc, OperationalError):
        return ErrorKind.UNAVAILABLE
    return ErrorKind.OTHER


def run_with_retries(fn: Callable[[], T], *, dialect: str, retries: int = 5) -> T:
    """Run the transaction ``fn`` again while the database says a retry can succeed; translate an unreachable
    or overloaded database into ``Unavailable`` (HTTP 503, DIMSE 0xA700) and re-raise anything else."""
    for attempt in range(retries):
        try:
            return fn()
        except PoolTimeoutError as exc:  # no pooled connection became free within pool_timeout
            raise Unavailable("index database unavailable: connection pool exhausted") from exc
        except DBAPIError as exc:
            kind = classify_for(dialect, exc)
            if kind == ErrorKind.RETRY and attempt + 1 < retries:
                time.sleep(backoff(attempt))
                continue
            if kind != ErrorKind.OTHER:
                raise Unavailable(f"index database unavailable: {type(exc.orig).__name__}") from exc
            raise
    raise AssertionError("unreachable")


#: pg_advisory_lock key serialising schema migrations ("DVMIGRAT" as an int64).
MIGRATION_LOCK_KEY = 0x44564D4947524154


@contextmanager
def migration_lock(engine: Engine) -> Iterator[None]:
    """Hold a session advisory lock while migrating: nodes of a cluster starting together must not run the same
    migration at once (the second would fail on CREATE TABLE); the others wait, then find nothing to do."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
            conn.commit()
