"""One index call in one transaction, retried as every index call is: the helpers the SQL modules share.

Every module of ``adapters.index`` that runs its own statements (removal claims, tiers, the trash, rejections)
receives the repository's ``write`` / ``read`` transaction factories and its ``retrying`` wrapper (a deadlock or
a serialization failure on PostgreSQL, a busy SQLite: the whole transaction runs again), and needs the same two
ways to use them. Stores built on the engine itself (the job queue, the routing ledger) use ``EngineTransactions``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from dicomvault.adapters.index import postgres

T = TypeVar("T")
Tx = Callable[[], AbstractContextManager[Connection]]
Retrying = Callable[[Callable[[], Any]], Any]


class Transactions:
    """``_in_write(fn)`` / ``_in_read(fn)``: ``fn(connection)`` in one write or read transaction, retried."""

    _write: Tx
    _read: Tx
    _retrying: Retrying

    def _bind(self, write: Tx, read: Tx, retrying: Retrying) -> None:
        self._write, self._read, self._retrying = write, read, retrying

    def _in_write(self, fn: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self._write() as conn:
                return fn(conn)

        result: T = self._retrying(run)
        return result

    def _in_read(self, fn: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self._read() as conn:
                return fn(conn)

        result: T = self._retrying(run)
        return result


class EngineTransactions:
    """``_run(fn)`` / ``_read(fn)``: ``fn(connection)`` in one write transaction (IMMEDIATE on SQLite: the write
    lock up front, no deferred upgrade failing under load) or one read, retried by ``postgres.run_with_retries``."""

    def __init__(self, engine: Engine, *, retries: int = 5) -> None:
        self.engine = engine
        self._dialect = engine.dialect.name
        self._retries = retries

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                yield conn

    def _run(self, fn: Callable[[Connection], T]) -> T:
        def attempt() -> T:
            with self._tx() as conn:
                return fn(conn)

        return postgres.run_with_retries(attempt, dialect=self._dialect, retries=self._retries)

    def _read(self, fn: Callable[[Connection], T]) -> T:
        def attempt() -> T:
            with self.engine.connect() as conn:
                return fn(conn)

        return postgres.run_with_retries(attempt, dialect=self._dialect, retries=self._retries)
