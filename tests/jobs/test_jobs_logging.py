"""Job failures log no patient identifiers above DEBUG (issue #9, defect 9): a fixity job that finds a missing blob
names the blob key (a content hash) at ERROR, the SOP Instance UID only at DEBUG and in the job's own record."""

from __future__ import annotations

import io
import logging

import pytest

from dicomvault.bootstrap import Archive
from dicomvault.jobs.handlers import default_handlers
from dicomvault.jobs.worker import Worker
from dicomvault.ports.jobs import JobState
from tests.helpers import make_ct


def test_fixity_failure_logs_no_uid_above_debug(archive: Archive, caplog: pytest.LogCaptureFixture) -> None:
    assert archive.jobs is not None
    stored = archive.ingest.ingest(io.BytesIO(make_ct(seed=3)))
    archive.blobs.delete(stored.blob.key)  # the damage fixity must report
    job_id = archive.jobs.enqueue("fixity", {"sop_uid": stored.sop_instance_uid})
    worker = Worker(archive.jobs, default_handlers(archive), lease_seconds=30)
    caplog.set_level(logging.DEBUG, logger="dicomvault")
    assert worker.run_once()

    job = archive.jobs.get(job_id)
    assert job.state == JobState.FAILED
    assert stored.sop_instance_uid in (job.last_error or "")  # the operator's view: `dicomvault jobs list`
    identifiers = (stored.sop_instance_uid, stored.study_uid, stored.series_uid)
    above = [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG]
    assert any(stored.blob.key in text and "missing" in text for text in above), above
    assert any("failed permanently (IntegrityFailure)" in text for text in above), above
    assert not [text for text in above if any(uid in text for uid in identifiers)]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any(stored.sop_instance_uid in text for text in debug)


def test_retried_failure_logs_the_type_only(archive: Archive, caplog: pytest.LogCaptureFixture) -> None:
    """A handler error that will be retried: WARNING with the exception type, the message (which could quote
    values) only at DEBUG."""
    assert archive.jobs is not None

    def failing(job: object) -> None:
        raise RuntimeError("cannot reach 1.2.826.0.1.3680043.99.MARKER")

    job_id = archive.jobs.enqueue("flaky", {})
    worker = Worker(archive.jobs, {"flaky": failing}, lease_seconds=30)
    caplog.set_level(logging.DEBUG, logger="dicomvault")
    assert worker.run_once()
    assert archive.jobs.get(job_id).state == JobState.QUEUED
    above = [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG]
    assert any("attempt 1 failed (RuntimeError)" in text for text in above), above
    assert not any("MARKER" in text or r.exc_info for text, r in
                   zip(above, [r for r in caplog.records if r.levelno > logging.DEBUG], strict=True))
    assert any(r.exc_info and "MARKER" in str(r.exc_info[1]) for r in caplog.records if r.levelno == logging.DEBUG)
