"""One index call in one transaction, retried as every index call is: the helpers the SQL modules share.

Every module of ``adapters.index`` that runs its own statements (removal claims, tiers, the trash, rejections)
receives the repository's ``write`` / ``read`` transaction factories and its ``retrying`` wrapper (a deadlock or
a serialization failure on PostgreSQL, a busy SQLite: the whole transaction runs again), and needs the same two
ways to use them.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from sqlalchemy import Connection

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
