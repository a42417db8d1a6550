"""Group commit on SQLite: units of work queued together share one transaction; a unit that fails is undone
alone; a failing transaction fails every unit in it; nobody gets an answer before the COMMIT."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, text

from dicomvault.adapters.index.engine import create_index_engine
from dicomvault.adapters.index.group_commit import GroupCommit


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = create_index_engine(f"sqlite:///{tmp_path / 'gc.sqlite'}")
    with eng.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (k TEXT PRIMARY KEY)")
    yield eng
    eng.dispose()


class Harness:
    """A GroupCommit whose write transaction can be held open, so that work queues up behind it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.gate.set()
        self.group = GroupCommit(self.write)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self.lock, self.engine.connect() as conn:
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                yield conn
                self.gate.wait(10)

    def keys(self) -> list[str]:
        with self.engine.connect() as conn:
            return sorted(r[0] for r in conn.execute(text("SELECT k FROM t")))


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def insert(key: str) -> object:
    def work(conn: Connection) -> str:
        if key.startswith("bad"):
            conn.execute(text("INSERT INTO t VALUES (:k)"), {"k": key})  # written, then undone with its savepoint
            raise ValueError(key)
        conn.execute(text("INSERT INTO t VALUES (:k)"), {"k": key})
        return key
    return work


def test_queued_units_share_a_transaction_and_a_failure_is_undone_alone(engine: Engine) -> None:
    h = Harness(engine)
    h.gate.clear()  # the first unit's transaction stays open: the next ones queue behind it
    results: dict[str, object] = {}

    def run(key: str) -> None:
        try:
            results[key] = h.group.run(insert(key))  # type: ignore[arg-type]
        except Exception as exc:
            results[key] = exc

    first = threading.Thread(target=run, args=("a0",))
    first.start()
    wait_for(h.lock.locked)
    others = [threading.Thread(target=run, args=(k,)) for k in ("a1", "bad", "a2")]
    for t in others:
        t.start()
    wait_for(lambda: len(h.group._queue) == 3)  # all three queued behind the open transaction
    assert results == {}  # nobody answered before a COMMIT
    h.gate.set()
    for t in [first, *others]:
        t.join(10)
    assert results["a0"] == "a0" and results["a1"] == "a1" and results["a2"] == "a2"
    assert isinstance(results["bad"], ValueError)
    assert h.keys() == ["a0", "a1", "a2"]
    assert h.group.batches == 2 and h.group.units == 4  # a0 alone, then the three together


def test_a_failed_transaction_fails_every_unit_in_it(engine: Engine) -> None:
    h = Harness(engine)
    assert h.group.run(insert("dup")) == "dup"  # type: ignore[arg-type]
    h.gate.clear()
    results: dict[str, object] = {}

    def run(key: str, work: object) -> None:
        try:
            results[key] = h.group.run(work)  # type: ignore[arg-type]
        except Exception as exc:
            results[key] = exc

    blocker = threading.Thread(target=run, args=("x0", insert("x0")))
    blocker.start()
    wait_for(h.lock.locked)
    # A unit that breaks the database statement (primary key violation: a DBAPIError) aborts its batch.
    threads = [threading.Thread(target=run, args=(k, w)) for k, w in (("x1", insert("x1")), ("dup", insert("dup")))]
    for t in threads:
        t.start()
    wait_for(lambda: len(h.group._queue) == 2)
    h.gate.set()
    for t in [blocker, *threads]:
        t.join(10)
    assert results["x0"] == "x0"
    assert isinstance(results["x1"], Exception) and isinstance(results["dup"], Exception)
    assert h.keys() == ["dup", "x0"]
