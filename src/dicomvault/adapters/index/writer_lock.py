"""The SQLite writer's lock across processes: a blocking ``flock`` on a file beside the database.

Why: SQLite lets one transaction write at a time, and a writer that finds the database locked waits in SQLite's
busy handler, which sleeps in growing steps (1, 2, 5, 10, ... 100 ms) and tries again. With DIMSE worker processes
(``dimse_workers``) or an import beside ``serve``, writers of several processes meet all the time; each of their
transactions lasts well under a millisecond, so those sleeps, not the work, decided the rate (8 and 16
associations stored slower than 4). Taking this lock before ``BEGIN IMMEDIATE`` queues the writers of all
processes in the kernel instead: the next one runs as soon as the previous one commits. Writers that do not take
it (older versions, other tools) still meet SQLite's own lock and busy timeout, so correctness never depends on
this file; it only orders the writers that use it. An in-memory database has no file and needs no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator


class WriterLock:
    """``hold()`` blocks until this process's writer may write; released when the context ends."""

    def __init__(self, database: str | None) -> None:
        self._fd: int | None = None
        if database and database != ":memory:" and not database.startswith("file::memory:"):
            self._fd = os.open(f"{database}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        fd = self._fd
        if fd is None:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
