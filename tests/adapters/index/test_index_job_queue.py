"""Operator actions of the job queue added for the admin pages (cancel) and the dashboard's counts, on SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dicomvault.adapters.index.engine import create_index_engine, migrate
from dicomvault.adapters.index.job_queue import SqlJobQueue
from dicomvault.domain.errors import Conflict, NotFound
from dicomvault.ports.jobs import JobState


@pytest.fixture
def queue(any_index_url: str) -> Iterator[SqlJobQueue]:
    engine = create_index_engine(any_index_url, pool_size=2)
    migrate(engine)
    yield SqlJobQueue(engine)
    engine.dispose()


def test_cancel_a_queued_job_then_retry_it(queue: SqlJobQueue) -> None:
    job_id = queue.enqueue("fixity", {"sop_uid": "1.2.3"}, dedupe_key="fixity:1.2.3")
    queue.cancel(job_id)
    cancelled = queue.get(job_id)
    assert cancelled.state == JobState.CANCELLED and cancelled.last_error == "cancelled by an operator"
    assert queue.claim("w1") is None  # a cancelled job never runs
    assert queue.enqueue("fixity", {"sop_uid": "1.2.3"}, dedupe_key="fixity:1.2.3") != job_id  # key released
    with pytest.raises(Conflict):
        queue.retry(job_id)  # another job of the same key is queued now
    other = queue.claim("w1")
    assert other is not None
    queue.complete(other.id)
    queue.retry(job_id)
    assert queue.get(job_id).state == JobState.QUEUED


def test_only_queued_jobs_can_be_cancelled(queue: SqlJobQueue) -> None:
    job_id = queue.enqueue("fixity", {})
    assert queue.claim("w1") is not None
    with pytest.raises(Conflict, match="running"):
        queue.cancel(job_id)
    assert queue.get(job_id).state == JobState.RUNNING
    with pytest.raises(NotFound):
        queue.cancel(987654)


def test_counts_of_live_and_failed_jobs_per_kind(queue: SqlJobQueue) -> None:
    assert queue.counts() == {}
    for n in range(3):
        queue.enqueue("fixity", {"n": n})
    queue.enqueue("recall", {})
    running = queue.claim("w1", kinds=["recall"])
    assert running is not None
    failed = queue.enqueue("route-deliver", {})
    assert queue.claim("w1", kinds=["route-deliver"]) is not None
    queue.fail(failed, "refused", None)
    done = queue.enqueue("tier-move", {})
    assert queue.claim("w1", kinds=["tier-move"]) is not None
    queue.complete(done)
    queue.cancel(queue.enqueue("fixity", {"n": 9}))
    assert queue.counts() == {(JobState.QUEUED, "fixity"): 3, (JobState.RUNNING, "recall"): 1,
                              (JobState.FAILED, "route-deliver"): 1}
