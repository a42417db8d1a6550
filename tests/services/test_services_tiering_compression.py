"""Compression at rest as a lifecycle action (issue #11 items 2 and 4): compress rules and ``compress_on_ingest``
through the real scheduler, durable queue and worker, alone and together with a move to the cold store, on the
backends the environment selects (``tests/services/test_services_tiering.py`` explains the fixtures)."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import JPEGLSLossless, generate_uid

from dicomvault.bootstrap import Archive, build_archive
from dicomvault.domain.records import StoreOutcome
from dicomvault.ports.jobs import JobState
from dicomvault.services.tiering import COMPRESS_ON_INGEST, TIER_STUDY
from tests.helpers import make_ct
from tests.services.test_services_tiering import _settings, _stores_of, _work

COMPRESS_CT = {"name": "compress CT", "when": {"modality": "CT"}, "action": {"compress": "jpeg-ls"}}
OLD_TO_COLD = {"name": "old to cold", "when": {"study_age_days": 30}, "action": {"move_to": "cold"}}


def _study(archive: Archive, n: int = 3, **attrs: Any) -> tuple[str, dict[str, bytes]]:
    study, series = generate_uid(), generate_uid()
    objects: dict[str, bytes] = {}
    for i in range(n):
        data = make_ct(study=study, series=series, rows=32, columns=32, seed=i, **attrs)
        result = archive.ingest.ingest(io.BytesIO(data), source="CTSCANNER")
        objects[result.sop_instance_uid] = data
    return study, objects


def _originals(archive: Archive, study: str) -> dict[str, bytes]:
    out = {}
    for r in archive.retrieve.locate(study_uid=study):
        syntax = r.original.syntax if r.original is not None else r.transfer_syntax_uid
        out[r.sop_uid] = b"".join(archive.retrieve.iter_transcoded(r, syntax))
    return out


def _syntaxes(archive: Archive, study: str) -> set[str]:
    return {r.transfer_syntax_uid for r in archive.retrieve.locate(study_uid=study)}


def _archive(tmp_path: Path, request: pytest.FixtureRequest, **extra: Any) -> Archive:
    return build_archive(_settings(tmp_path, request, **extra))


def test_a_compress_rule_compresses_through_the_job_and_plans_nothing_after(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    archive = _archive(tmp_path, request, lifecycle=[COMPRESS_CT])
    try:
        assert archive.tiering is not None
        ct, objects = _study(archive)
        mr, mr_objects = _study(archive, Modality="MR")
        [plan] = archive.tiering.plan()
        assert plan.action == "compress (jpeg-ls)"
        assert (plan.studies, plan.instances, plan.sample) == (1, 3, [ct])
        assert archive.tiering.schedule() == 1
        assert _work(archive) == 1
        assert _syntaxes(archive, ct) == {str(JPEGLSLossless)}
        assert _syntaxes(archive, mr) == {"1.2.840.10008.1.2.1"}, "the rule's condition is respected"
        assert _originals(archive, ct) == objects and _originals(archive, mr) == mr_objects
        assert archive.tiering.plan()[0].studies == 0, "compressed studies are not selected again"
        (saved,) = archive.index.compression_savings()
        assert (saved.modality, saved.instances) == ("CT", 3)
        assert saved.original_bytes == sum(len(d) for d in objects.values())
        study_row = archive.index.study_facts(ct)
        assert study_row is not None and study_row.bytes == saved.stored_bytes, "the study's size is what it stores"
        done = [j for j in archive.jobs.list(JobState.DONE, limit=10)] if archive.jobs is not None else []
        assert any((j.result or {}).get("compression", {}) and j.result["compression"]["compressed"] == 3
                   for j in done)
    finally:
        archive.close()


def test_ineligible_instances_are_recorded_once_and_not_selected_again(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    archive = _archive(tmp_path, request, lifecycle=[COMPRESS_CT])
    try:
        assert archive.tiering is not None
        study, _ = _study(archive, n=2)
        tiny = make_ct(study=study, rows=4, columns=4, seed=9)  # a 32-byte frame: left as it is
        archive.ingest.ingest(io.BytesIO(tiny), source="CTSCANNER")
        archive.tiering.schedule()
        _work(archive)
        assert _syntaxes(archive, study) == {str(JPEGLSLossless), "1.2.840.10008.1.2.1"}
        assert archive.tiering.plan()[0].studies == 0, "the one left uncompressed is known, with its reason"
        [(reason, count)] = archive.index.compression_skip_reasons()
        assert "too small" in reason and count == 1
    finally:
        archive.close()


def test_compress_then_move_carries_the_compressed_objects_to_the_cold_store(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # two encoding processes: the pooled path (spawned workers, a window of objects ahead of the writes)
    archive = _archive(tmp_path, request, lifecycle=[COMPRESS_CT, OLD_TO_COLD], compression_processes=2)
    try:
        assert archive.tiering is not None and archive.tiers is not None
        study, objects = _study(archive, n=6, StudyDate="20200101")
        received_keys = {r.blob.key for r in archive.retrieve.locate(study_uid=study)}
        archive.tiering.schedule()
        _work(archive)
        assert _stores_of(archive, study) == {("cold",)}
        assert _syntaxes(archive, study) == {str(JPEGLSLossless)}
        for name in ("hot", "cold"):
            assert not any(archive.tiers.store(name).exists(k) for k in received_keys), "no original left anywhere"
        assert _originals(archive, study) == objects
        assert archive.compression is not None
        report = archive.compression.prove_all()
        assert report.checked == 6 and not report.failed
    finally:
        archive.close()


def test_compress_on_ingest_queues_one_delayed_job_per_study(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    archive = _archive(tmp_path, request, compress_on_ingest="jpeg-ls")
    try:
        assert archive.tiering is not None and archive.jobs is not None
        before = datetime.now(UTC)
        study, objects = _study(archive, n=4)
        queued = [j for j in archive.jobs.list(JobState.QUEUED, limit=100) if j.kind == TIER_STUDY]
        assert len(queued) == 1, "one job for the study, not one per instance"
        assert queued[0].payload == {"study_uid": study, "rule": COMPRESS_ON_INGEST}
        assert (queued[0].run_at - before).total_seconds() >= 25, "delayed: the rest of the study arrives first"
        assert _work(archive) == 0, "not due yet"
        # the lifecycle evaluation finds it too (compress_on_ingest is a rule matching every study)
        [plan] = archive.tiering.plan()
        assert plan.rule == COMPRESS_ON_INGEST and plan.studies == 1
        archive.tiering.apply_study(study)
        assert _syntaxes(archive, study) == {str(JPEGLSLossless)}
        assert _originals(archive, study) == objects
        again = archive.ingest.ingest(io.BytesIO(next(iter(objects.values()))), source="CTSCANNER")
        assert again.outcome == StoreOutcome.DUPLICATE
    finally:
        archive.close()


def test_a_rule_overrides_compress_on_ingest(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    rule = {"name": "MR in JPEG 2000", "when": {"modality": "MR"}, "action": {"compress": "jpeg2000"}}
    archive = _archive(tmp_path, request, compress_on_ingest="jpeg-ls", lifecycle=[rule])
    try:
        assert archive.tiering is not None
        study, objects = _study(archive, n=1, Modality="MR")
        archive.tiering.apply_study(study)
        assert _syntaxes(archive, study) == {"1.2.840.10008.1.2.4.90"}
        assert _originals(archive, study) == objects
        (record,) = archive.retrieve.locate(study_uid=study)
        stored = pydicom.dcmread(io.BytesIO(b"".join(archive.retrieve.iter_bytes(record))))
        received = pydicom.dcmread(io.BytesIO(next(iter(objects.values()))))
        assert (stored.pixel_array == received.pixel_array).all()
    finally:
        archive.close()
