"""Group commit for a single-writer index (SQLite): the stores that arrive together share one transaction.

Why: SQLite has one writer, and each commit in WAL mode with ``synchronous=FULL`` ends with an fsync of the WAL.
With several associations storing at once, each store used to wait for the write lock, then commit and fsync on
its own. Here, whoever gets the write lock (the leader) takes every store queued by then and runs them in one
transaction, each inside its own SAVEPOINT, so one store's refusal (a duplicate-policy conflict) undoes only
that store; one COMMIT and one fsync then make the whole batch durable. Followers find their work done when
the lock comes to them. Nobody is answered before the COMMIT that holds their rows has returned, so the
durability promise is unchanged; a store that arrives alone runs as before (no savepoint, no extra wait).

PostgreSQL does not need this: concurrent transactions commit in parallel and its WAL writer already groups
their flushes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

T = TypeVar("T")


class _Pending(Generic[T]):
    __slots__ = ("done", "error", "value", "work")

    def __init__(self, work: Callable[[Connection], T]) -> None:
        self.work = work
        self.value: T | None = None
        self.error: BaseException | None = None
        self.done = False


class GroupCommit:
    """Runs units of work in shared write transactions opened by ``write`` (which must serialise writers)."""

    def __init__(self, write: Callable[[], AbstractContextManager[Connection]], *, max_batch: int = 64) -> None:
        self._write = write
        self._max_batch = max_batch
        self._queue: list[_Pending[Any]] = []
        self._queue_lock = threading.Lock()
        self._leader = threading.Lock()
        #: Batches committed and units of work they held (what the tests and the benchmarks look at).
        self.batches = 0
        self.units = 0

    def run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work(conn)`` inside a write transaction; return its value once that transaction has
        committed, or raise what it raised (its own changes undone, the others' kept)."""
        item: _Pending[T] = _Pending(work)
        with self._queue_lock:
            self._queue.append(item)
        while not item.done:
            with self._leader:
                if item.done:
                    break
                with self._queue_lock:
                    batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                self._commit(batch)
        if item.error is not None:
            raise item.error
        return item.value  # type: ignore[return-value]

    def _commit(self, batch: list[_Pending[Any]]) -> None:
        try:
            with self._write() as conn:
                if len(batch) == 1:
                    batch[0].value = batch[0].work(conn)
                else:
                    for item in batch:
                        savepoint = conn.begin_nested()
                        try:
                            item.value = item.work(conn)
                        except DBAPIError:
                            raise  # the database itself failed: the whole transaction is lost
                        except Exception as exc:
                            savepoint.rollback()
                            item.error = exc
                        else:
                            savepoint.commit()
            self.batches += 1
            self.units += len(batch)
        except BaseException as exc:
            # Nothing of this transaction was committed: every unit that had not failed on its own fails with
            # the transaction's error (each caller's retry policy then decides).
            for item in batch:
                if item.error is None:
                    item.value, item.error = None, exc
            if not isinstance(exc, Exception):
                raise
        finally:
            for item in batch:
                item.done = True
