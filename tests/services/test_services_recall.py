"""RecallService and the recall job on a real archive whose ingest store is a GLACIER bucket (moto server) and
the real index (``study_blobs`` reads the copies ingest recorded)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dicomvault.bootstrap import build_archive
from dicomvault.domain.errors import NotFound, NotRestored
from dicomvault.jobs.handlers import default_handlers, recall_handler
from dicomvault.jobs.worker import Worker
from dicomvault.ports.jobs import JobState
from dicomvault.services.archive import Archive
from dicomvault.services.recall import RECALL_JOB, RecallPending, RecallService, build_recall
from dicomvault.settings import Settings
from tests.recall_support import STEP, cold_settings, slow_restores, store_study


@pytest.fixture
def cold(tmp_path: Path, s3_bucket_url: str) -> Iterator[Archive]:
    archive = build_archive(cold_settings(tmp_path, s3_bucket_url))
    yield archive
    archive.close()


def _recall(archive: Archive) -> RecallService:
    return archive.recall or build_recall(archive.index, archive.blobs, archive.tiers,
                                          archive.settings.resolved_stores(), archive.jobs)


def _read_all(archive: Archive, study: str) -> dict[str, bytes]:
    return {r.sop_uid: b"".join(archive.retrieve.iter_bytes(r)) for r in archive.retrieve.locate(study_uid=study)}


def test_recall_requests_restores_then_the_study_is_served(cold: Archive) -> None:
    study, objects = store_study(cold, 3)
    with pytest.raises(NotRestored):
        _read_all(cold, study)
    recall = _recall(cold)
    first = recall.recall(study)
    assert (first.blobs, first.readable, first.restoring, first.requested, first.missing) == (3, 0, 0, 3, 0)
    assert _read_all(cold, study) == objects  # moto restores at once; nothing restarted
    again = recall.recall(study)  # idempotent: no second request
    assert (again.readable, again.requested) == (3, 0) and again.readable_all and again.settled


def test_start_queues_one_follow_up_job_that_completes(cold: Archive) -> None:
    study, _ = store_study(cold, 2)
    recall = _recall(cold)
    started = recall.start(study)
    assert started.requested == 2 and started.job_id is not None
    assert cold.jobs is not None
    job = cold.jobs.get(started.job_id)
    assert (job.kind, job.payload, job.state) == (RECALL_JOB, {"study_uid": study}, JobState.QUEUED)
    handlers = {**default_handlers(cold), RECALL_JOB: recall_handler(recall)}
    assert Worker(cold.jobs, handlers, kinds=[RECALL_JOB]).run_once()
    done = cold.jobs.get(started.job_id)
    assert done.state == JobState.DONE and done.result is not None
    assert done.result["readable_all"] is True and done.result["readable"] == 2
    assert recall.start(study).job_id is None  # readable: nothing to follow


def test_restoring_study_keeps_its_job_retrying(cold: Archive, moto_server: Any) -> None:
    study, objects = store_study(cold, 1)
    recall = _recall(cold)
    with slow_restores(moto_server.endpoint):
        time.sleep(STEP + 0.2)  # moto counts its first step from the object's creation
        started = recall.start(study)
        assert started.requested == 1 and started.job_id is not None
        with pytest.raises(NotRestored) as refused:
            _read_all(cold, study)
        assert refused.value.restoring
        with pytest.raises(RecallPending, match="1 of 1 blob"):
            recall.follow_up(study)
        assert cold.jobs is not None
        worker = Worker(cold.jobs, {RECALL_JOB: recall_handler(recall)}, backoff_base=0.01, backoff_cap=0.01)
        assert worker.run_once()
        job = cold.jobs.get(started.job_id)
        assert job.state == JobState.QUEUED and "RecallPending" in (job.last_error or "")  # retried later
        deadline = time.monotonic() + 10 * STEP
        while cold.jobs.get(started.job_id).state != JobState.DONE:
            assert time.monotonic() < deadline, "the recall job never completed"
            worker.run_once()
            time.sleep(0.3)
    assert _read_all(cold, study) == objects


def test_unknown_study_is_not_found_and_a_gone_study_ends_its_job(cold: Archive) -> None:
    recall = _recall(cold)
    with pytest.raises(NotFound):
        recall.recall("1.2.3.4.5")
    assert recall.follow_up("1.2.3.4.5") == {"study_uid": "1.2.3.4.5", "gone": True}


def test_a_copy_on_a_readable_store_needs_no_restore(tmp_path: Path) -> None:
    archive = build_archive(Settings.load(data_dir=tmp_path / "hot"))
    try:
        study, objects = store_study(archive, 2)
        result = _recall(archive).start(study)
        assert (result.readable, result.requested, result.job_id) == (2, 0, None)
        assert _read_all(archive, study) == objects
    finally:
        archive.close()
