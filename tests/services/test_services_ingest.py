"""The one ingest path: validation, durability order, duplicate policies, concurrency."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomvault.bootstrap import Archive, build_archive
from dicomvault.domain.errors import Conflict, InvalidDicom, InvalidIdentity, MalformedDicom, WrongStudy
from dicomvault.domain.records import DuplicatePolicy, StoreOutcome
from dicomvault.domain.tags import Level
from dicomvault.settings import Settings
from tests.conftest import DAMAGED, corpus_dir
from tests.helpers import make_ct


def ingest(archive: Archive, data: bytes):  # type: ignore[no-untyped-def]
    return archive.ingest.ingest(io.BytesIO(data), source="test")


def test_store_then_retrieve_exact_bytes(archive: Archive) -> None:
    data = make_ct()
    res = ingest(archive, data)
    assert res.outcome == StoreOutcome.STORED
    rec = archive.retrieve.locate(sop_uids=[res.sop_instance_uid])[0]
    assert b"".join(archive.retrieve.iter_bytes(rec, verify=True)) == data


def test_identical_duplicate_is_success_and_stores_nothing(archive: Archive) -> None:
    data = make_ct()
    ingest(archive, data)
    keys_before = list(archive.blobs.iter_keys())
    assert ingest(archive, data).outcome == StoreOutcome.DUPLICATE
    assert list(archive.blobs.iter_keys()) == keys_before
    assert archive.index.stats().instances == 1


def test_reject_policy_keeps_first_version(archive: Archive) -> None:
    sop = generate_uid()
    first = make_ct(sop=sop, seed=1)
    ingest(archive, first)
    with pytest.raises(Conflict):
        ingest(archive, make_ct(sop=sop, seed=2))
    rec = archive.retrieve.locate(sop_uids=[sop])[0]
    assert b"".join(archive.retrieve.iter_bytes(rec)) == first
    assert len(list(archive.blobs.iter_keys())) == 1, "the rejected object's blob was removed"


@pytest.mark.parametrize(("policy", "outcome", "blobs"), [
    (DuplicatePolicy.REPLACE, StoreOutcome.REPLACED, 1),
    (DuplicatePolicy.KEEP_BOTH, StoreOutcome.VERSIONED, 2),
])
def test_replace_and_keep_both(tmp_path: Path, policy: DuplicatePolicy, outcome: StoreOutcome, blobs: int) -> None:
    archive = build_archive(Settings.load(data_dir=tmp_path / "v", duplicate_policy=policy))
    sop, study, series = generate_uid(), generate_uid(), generate_uid()
    ingest(archive, make_ct(sop=sop, study=study, series=series, seed=1))
    second = make_ct(sop=sop, study=study, series=series, seed=2)
    assert ingest(archive, second).outcome == outcome
    rec = archive.retrieve.locate(sop_uids=[sop])[0]
    assert b"".join(archive.retrieve.iter_bytes(rec)) == second
    assert len(list(archive.blobs.iter_keys())) == blobs
    stats = archive.index.stats()
    assert (stats.studies, stats.series, stats.instances) == (1, 1, 1)
    archive.close()


@pytest.mark.parametrize("data", [b"", b"not dicom at all" * 10, make_ct()[:200]])
def test_malformed_objects_are_rejected_and_leave_nothing(archive: Archive, data: bytes) -> None:
    with pytest.raises(InvalidDicom):
        ingest(archive, data)
    assert archive.index.stats().instances == 0
    assert list(archive.blobs.iter_keys()) == []


def test_missing_identifying_uid_is_rejected(archive: Archive) -> None:
    ds = pydicom.dcmread(io.BytesIO(make_ct()))
    del ds.SeriesInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf)
    with pytest.raises(InvalidDicom, match="SeriesInstanceUID"):
        ingest(archive, buf.getvalue())


def test_concurrent_stores_into_one_study(archive: Archive) -> None:
    study, series = generate_uid(), generate_uid()
    objs = [make_ct(study=study, series=series, InstanceNumber=i, seed=i) for i in range(40)]
    errors: list[BaseException] = []

    def worker(chunk: list[bytes]) -> None:
        try:
            for o in chunk:
                ingest(archive, o)
                ingest(archive, o)  # a retry of the same object must not double-count
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(objs[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    spec = archive.query.build_spec(Level.STUDY, {"StudyInstanceUID": study})
    [row] = archive.query.search(spec)
    assert row["00201208"]["Value"] == [40]  # NumberOfStudyRelatedInstances
    assert row["00201206"]["Value"] == [1]
    assert archive.index.stats().instances == 40


def test_frame_index_points_at_frame_bytes(archive: Archive) -> None:
    data = make_ct(frames=5, rows=8, columns=8)
    res = ingest(archive, data)
    rec = archive.retrieve.locate(sop_uids=[res.sop_instance_uid])[0]
    pixels = pydicom.dcmread(io.BytesIO(data)).PixelData
    for n in range(1, 6):
        assert archive.retrieve.frame(rec, n) == pixels[(n - 1) * 128 : n * 128]


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_truncated_corpus_files_are_refused_as_malformed(archive: Archive, name: str) -> None:
    with pytest.raises(MalformedDicom, match="truncated"):
        ingest(archive, (corpus_dir() / name).read_bytes())
    assert archive.index.stats().instances == 0


def test_the_request_is_checked_on_ingests_own_parse(archive: Archive) -> None:
    """C-STORE's Affected SOP UIDs (``expect``) and STOW-RS's study in the URL (``target_study``) are compared with
    the data set ingest reads; a mismatch is refused before anything is written, naming the instance."""
    study = generate_uid()
    data = make_ct(study=study, seed=21)
    ds = pydicom.dcmread(io.BytesIO(data))
    sop_class, sop = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
    with pytest.raises(InvalidIdentity, match="Instance UID differs") as wrong_sop:
        archive.ingest.ingest(io.BytesIO(data), expect=(sop_class, "1.2.3"))
    assert wrong_sop.value.sop_instance_uid == sop
    with pytest.raises(InvalidIdentity, match="Class UID differs"):
        archive.ingest.ingest(io.BytesIO(data), expect=("1.2.3", sop))
    with pytest.raises(WrongStudy) as wrong_study:
        archive.ingest.ingest(io.BytesIO(data), target_study=generate_uid())
    assert (wrong_study.value.study_uid, wrong_study.value.sop_instance_uid) == (study, sop)
    assert archive.index.stats().instances == 0
    result = archive.ingest.ingest(io.BytesIO(data), expect=(sop_class, sop), target_study=study)
    assert result.sop_instance_uid == sop and archive.index.stats().instances == 1
