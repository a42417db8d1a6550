"""Storage tiers end to end through the services, on the backends the environment selects: the index is SQLite
or PostgreSQL (``DV_TEST_INDEX_URL``); the hot store is a folder and the cold store a second folder, or a moto S3
bucket when ``DV_TEST_STORAGE_URL=s3``. Lifecycle jobs go through the real durable queue and the real worker.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomvault.adapters.blobs.s3 import S3BlobStore
from dicomvault.bootstrap import Archive, build_archive
from dicomvault.jobs.handlers import TIER_KINDS, default_handlers
from dicomvault.jobs.worker import Worker, start_worker
from dicomvault.ports.jobs import JobState
from dicomvault.services.fixity import RepairResult
from dicomvault.settings import Settings
from tests.conftest import free_port
from tests.helpers import make_ct

CT_TO_COLD = {"name": "CT to cold", "when": {"modality": "CT", "study_age_days": 30}, "action": {"move_to": "cold"}}


def _cold_url(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if os.environ.get("DV_TEST_STORAGE_URL") == "s3":
        return str(request.getfixturevalue("s3_bucket_url"))
    return f"file://{tmp_path / 'cold'}"


def _settings(tmp_path: Path, request: pytest.FixtureRequest, **extra: Any) -> Settings:
    index_url = os.environ.get("DV_TEST_INDEX_URL") or None
    if index_url and index_url.startswith("postgres"):
        index_url = str(request.getfixturevalue("pg_url"))
    stores = {"hot": {"url": f"file://{tmp_path / 'hot'}"}, "cold": {"url": _cold_url(tmp_path, request)}}
    stores.update(extra.pop("stores", {}))
    return Settings.load(data_dir=tmp_path / "vault", index_url=index_url, ingest_store="hot", stores=stores,
                         dimse_port=free_port(), http_port=free_port(), tier_max_bytes_per_second=0,
                         **extra)


@pytest.fixture
def tiered(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Archive]:
    archive = build_archive(_settings(tmp_path, request, lifecycle=[CT_TO_COLD]))
    yield archive
    archive.close()


def _study(archive: Archive, n: int = 3, **attrs: Any) -> tuple[str, dict[str, bytes]]:
    study = generate_uid()
    series = generate_uid()
    objects: dict[str, bytes] = {}
    for i in range(n):
        sop = generate_uid()
        data = make_ct(study=study, series=series, sop=sop, seed=i, **attrs)
        archive.ingest.ingest(io.BytesIO(data), source="CTSCANNER")
        objects[sop] = data
    return study, objects


def _work(archive: Archive) -> int:
    """Run every due tier job with the real worker, in this thread; returns how many ran."""
    assert archive.jobs is not None
    handlers = default_handlers(archive)
    worker = Worker(archive.jobs, handlers, kinds=list(TIER_KINDS), poll_interval=0)
    done = 0
    while worker.run_once():
        done += 1
    return done


def _stores_of(archive: Archive, study: str) -> set[tuple[str, ...]]:
    return {b.stores for b in archive.index.study_blobs(study)}


def _read_all(archive: Archive, study: str) -> dict[str, bytes]:
    return {r.sop_uid: b"".join(archive.retrieve.iter_bytes(r, verify=True))
            for r in archive.retrieve.locate(study_uid=study)}


def test_a_study_moves_to_the_cold_store_and_reads_back_identical(tiered: Archive) -> None:
    assert tiered.tiering is not None and tiered.tiers is not None
    old, objects = _study(tiered, StudyDate="20200101")
    young, _ = _study(tiered, StudyDate="21000101")
    mr, _ = _study(tiered, StudyDate="20200101", Modality="MR")
    assert _stores_of(tiered, old) == {("hot",)}

    [plan] = tiered.tiering.plan()
    assert (plan.studies, plan.instances) == (1, 3) and plan.sample == [old]
    assert plan.bytes == sum(len(d) for d in objects.values())

    assert tiered.tiering.schedule() == 1
    assert tiered.tiering.schedule() == 1, "scheduling twice queues nothing new (one job per study)"
    assert _work(tiered) == 1
    assert _stores_of(tiered, old) == {("cold",)}
    assert _stores_of(tiered, young) == {("hot",)} and _stores_of(tiered, mr) == {("hot",)}
    hot = tiered.tiers.store("hot")
    assert not any(hot.exists(b.blob.key) for b in tiered.index.study_blobs(old)), "the hot copies are gone"
    assert _read_all(tiered, old) == objects, "retrieval reads the cold copies, byte for byte"
    assert tiered.tiering.plan()[0].studies == 0
    usage = {u.store: u for u in tiered.index.store_usage()}
    assert usage["cold"].copies == 3 and usage["cold"].studies == 1 and usage["hot"].studies == 2
    assert usage["cold"].by_modality["CT"][0] == 3


def test_a_re_sent_object_after_the_move_is_a_duplicate_and_stays_readable(tiered: Archive) -> None:
    assert tiered.tiering is not None
    study, objects = _study(tiered, StudyDate="20200101")
    tiered.tiering.schedule()
    _work(tiered)
    data = next(iter(objects.values()))
    outcome = tiered.ingest.ingest(io.BytesIO(data), source="CTSCANNER").outcome
    assert outcome.value == "duplicate"
    assert _read_all(tiered, study) == objects
    # the bytes the re-send wrote on the hot disk are either recorded or left untracked; never a record alone
    for blob in tiered.index.study_blobs(study):
        for store in blob.stores:
            assert tiered.tiers is not None and tiered.tiers.store(store).exists(blob.blob.key)


def test_replication_and_a_move_that_keeps_the_replica(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    rules = [CT_TO_COLD, {"name": "replica", "when": {"min_study_bytes": 0}, "action": {"copy_to": "dr"}}]
    archive = build_archive(_settings(tmp_path, request, lifecycle=rules,
                                      stores={"dr": {"url": f"file://{tmp_path / 'dr'}"}}))
    try:
        assert archive.tiering is not None
        old, objects = _study(archive, StudyDate="20200101")
        young, _ = _study(archive, StudyDate="21000101")
        assert archive.tiering.schedule() == 2
        _work(archive)
        assert _stores_of(archive, young) == {("dr", "hot")} or _stores_of(archive, young) == {("hot", "dr")}
        assert {tuple(sorted(s)) for s in _stores_of(archive, old)} == {("cold", "dr")}
        assert _read_all(archive, old) == objects
    finally:
        archive.close()


def test_deleting_a_moved_study_removes_its_blobs_on_every_store(tiered: Archive) -> None:
    assert tiered.tiering is not None and tiered.tiers is not None
    study, _ = _study(tiered, StudyDate="20200101")
    tiered.tiering.schedule()
    _work(tiered)
    keys = [b.blob.key for b in tiered.index.study_blobs(study)]
    tiered.lifecycle.delete(study_uid=study)
    assert not any(tiered.tiers.exists(k) for k in keys)
    assert tiered.index.blob_copies(keys) == {}


def test_an_unreachable_target_fails_the_job_and_loses_nothing(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    dead = f"s3://nowhere/dv?endpoint=http://127.0.0.1:{free_port()}&region=us-east-1"
    archive = build_archive(_settings(tmp_path, request, lifecycle=[CT_TO_COLD], stores={"cold": {"url": dead}}))
    try:
        assert archive.tiering is not None and archive.jobs is not None
        study, objects = _study(archive, StudyDate="20200101")
        archive.tiering.schedule()
        _work(archive)
        [job] = [j for j in archive.jobs.list(limit=10) if j.kind == "tier-study"]
        assert job.state is JobState.QUEUED and job.attempts == 1 and job.last_error, "retried later"
        assert _stores_of(archive, study) == {("hot",)}
        assert _read_all(archive, study) == objects
    finally:
        archive.close()


def test_reads_set_the_last_read_time_and_not_read_days_waits(tmp_path: Path,
                                                              request: pytest.FixtureRequest) -> None:
    rule = {"name": "idle", "when": {"not_read_days": 0}, "action": {"move_to": "cold"}}
    archive = build_archive(_settings(tmp_path, request, lifecycle=[rule]))
    try:
        assert archive.tiering is not None and archive.reads is not None
        study, _ = _study(archive)
        _read_all(archive, study)  # fixity-style verified reads are not user reads…
        assert archive.reads.flush() == 0
        record = archive.retrieve.locate(study_uid=study)[0]
        with archive.retrieve.open(record):  # …a retrieval is
            pass
        archive.retrieve.frame(record, 1)
        assert archive.reads.flush() == 1
        facts = archive.index.study_facts(study)
        assert facts is not None and facts.last_activity is not None
    finally:
        archive.close()


def test_promotion_on_read_adds_a_hot_copy(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    rule = {"name": "cold", "when": {"study_age_days": 30, "not_read_days": 30}, "action": {"move_to": "cold"}}
    settings = _settings(tmp_path, request, lifecycle=[rule],
                         stores={"cold": {"url": _cold_url(tmp_path, request), "promote_on_read": True}})
    archive = build_archive(settings)
    try:
        assert archive.tiering is not None and archive.reads is not None
        study, objects = _study(archive, StudyDate="20200101")
        archive.index.note_study_reads([study], archive.tiering._now().replace(year=2020))
        archive.tiering.schedule()
        _work(archive)
        assert _stores_of(archive, study) == {("cold",)}
        record = archive.retrieve.locate(study_uid=study)[0]
        archive.retrieve.frame(record, 1)
        archive.reads.flush()
        _work(archive)
        assert {tuple(sorted(s)) for s in _stores_of(archive, study)} == {("cold", "hot")}
        assert archive.tiering.plan()[0].studies == 0, "read recently: the move rule waits"
        assert _read_all(archive, study) == objects
    finally:
        archive.close()


def test_fixity_repairs_copies_from_another_store_and_reports_data_loss(tmp_path: Path,
                                                                         request: pytest.FixtureRequest) -> None:
    rules = [{"name": "replica", "when": {"min_study_bytes": 0}, "action": {"copy_to": "cold"}}]
    archive = build_archive(_settings(tmp_path, request, lifecycle=rules))
    try:
        assert archive.tiering is not None and archive.tiers is not None
        study, objects = _study(archive, StudyDate="20200101")
        archive.tiering.schedule()
        _work(archive)
        blobs = archive.index.study_blobs(study)
        hot = archive.tiers.store("hot")
        first, second, third = blobs[0].blob, blobs[1].blob, blobs[2].blob
        path = hot.local_path(first.key)
        assert path is not None
        path.chmod(0o644)
        path.write_bytes(b"rot" + path.read_bytes()[3:])  # bit rot on the hot disk
        cold = archive.tiers.store("cold")
        cold.delete(second.key)  # a lost cloud object
        expected = {(first.key, "hot", "corrupt"), (second.key, "cold", "missing")}
        if isinstance(cold, S3BlobStore):  # an object overwritten in the bucket (by hand, or a faulty tool)
            cold.client.put_object(Bucket=cold.bucket, Key=cold.object_key(third.key), Body=b"not the object")
            expected.add((third.key, "cold", "corrupt"))
        report = archive.fixity.check()
        assert {(d.blob.key, d.store, d.problem) for d in report.damaged} == expected
        assert report.data_loss == []
        result = RepairResult()
        archive.fixity.repair_copies(report, result)
        assert result.copies_repaired == len(expected) and not result.not_repaired
        assert archive.fixity.check().clean
        assert _read_all(archive, study) == objects

        # a blob whose every copy is damaged: data loss, reported, and its index row kept
        third = blobs[2].blob
        archive.tiers.store("cold").delete(third.key)
        hot.delete(third.key)
        report = archive.fixity.check()
        assert [d.blob.key for d in report.data_loss] == [third.key, third.key]
        result = RepairResult()
        archive.fixity.repair_copies(report, result)
        assert len(result.not_repaired) == 2
        assert len(archive.retrieve.locate(study_uid=study)) == 3, "never silently dropped from the index"
    finally:
        archive.close()


def test_a_copy_is_never_dropped_when_it_is_the_last(tiered: Archive) -> None:
    assert tiered.copier is not None
    study, _ = _study(tiered)
    blob = tiered.index.study_blobs(study)[0]
    assert blob.stores == ("hot",)
    assert tiered.copier.drop(blob.blob, "hot") is False
    assert tiered.tiers is not None and tiered.tiers.store("hot").exists(blob.blob.key)


def test_single_store_archives_record_their_copies_as_default(archive: Archive) -> None:
    data = make_ct()
    result = archive.ingest.ingest(io.BytesIO(data), source="x")
    blobs = archive.index.study_blobs(result.study_uid)
    assert [b.stores for b in blobs] == [("default",)]
    assert pydicom.dcmread(io.BytesIO(b"".join(archive.retrieve.iter_bytes(
        archive.retrieve.locate(study_uid=result.study_uid)[0])))).SOPInstanceUID == result.sop_instance_uid


def test_the_server_worker_schedules_moves_and_scans_on_its_own(tmp_path: Path,
                                                                  request: pytest.FixtureRequest) -> None:
    rules = [CT_TO_COLD, {"name": "replica", "when": {"min_study_bytes": 0}, "action": {"copy_to": "dr"}}]
    settings = _settings(tmp_path, request, lifecycle=rules, lifecycle_interval=0.2,
                         stores={"dr": {"url": f"file://{tmp_path / 'dr'}"}})
    archive = build_archive(settings)
    try:
        assert archive.jobs is not None and archive.tiers is not None
        study, objects = _study(archive, StudyDate="20200101")
        worker = start_worker(archive, poll_interval=0.05)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and {tuple(sorted(s)) for s in _stores_of(archive, study)} != {
                    ("cold", "dr")}:
                time.sleep(0.1)
            assert {tuple(sorted(s)) for s in _stores_of(archive, study)} == {("cold", "dr")}
            # bit rot on the replica, then the scheduled scan (queued as the worker's periodic task would)
            key = archive.index.study_blobs(study)[0].blob.key
            path = archive.tiers.store("dr").local_path(key)
            assert path is not None
            path.chmod(0o644)
            data = path.read_bytes()
            path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
            archive.jobs.enqueue("fixity-scan", {}, dedupe_key="fixity-scan")
            report = settings.data_dir / "fixity" / "last-report.json"
            while time.monotonic() < deadline and not report.exists():
                time.sleep(0.1)
        finally:
            worker.stop()
        doc = json.loads(report.read_text())
        assert [(c["key"], c["store"]) for c in doc["corrupt"]] == [(key, "dr")], doc
        assert doc["repair"]["copies_repaired"] == 1 and doc["data_loss"] == []
        assert archive.fixity.check().clean
        assert _read_all(archive, study) == objects
    finally:
        archive.close()
