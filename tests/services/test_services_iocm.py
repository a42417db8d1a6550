"""IHE IOCM rejection notes (issue #11 item 6): a Key Object Selection document with a CID 7011 rejection code
hides the instances it lists at once — from queries and retrieval — into the trash, logged, purged as the code
requires; restorable during the grace period. Through the real ingest path, on the backends the environment
selects."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomvault.bootstrap import Archive, build_archive
from dicomvault.domain.errors import NotFound
from dicomvault.services.iocm import KEY_OBJECT_SELECTION
from dicomvault.settings import Settings
from tests.helpers import make_ct


def rejection_note(study: str, refs: list[tuple[str, str]], code: str = "113001",
                   meaning: str = "Rejected for Quality Reasons") -> bytes:
    """A KOS rejection note (IOCM) in ``study`` listing ``refs`` (series, SOP Instance UID) of CT images."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = KEY_OBJECT_SELECTION
    ds.SOPClassUID = KEY_OBJECT_SELECTION
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality, ds.StudyDate = "PID-1", "Doe^John", "KO", "20240102"
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = code, "DCM", meaning
    ds.ConceptNameCodeSequence = Sequence([concept])
    by_series: dict[str, list[str]] = {}
    for series, sop in refs:
        by_series.setdefault(series, []).append(sop)
    study_item = Dataset()
    study_item.StudyInstanceUID = study
    series_items = []
    for series, sops in by_series.items():
        item = Dataset()
        item.SeriesInstanceUID = series
        sop_items = []
        for sop in sops:
            ref = Dataset()
            ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", sop
            sop_items.append(ref)
        item.ReferencedSOPSequence = Sequence(sop_items)
        series_items.append(item)
    study_item.ReferencedSeriesSequence = Sequence(series_items)
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([study_item])
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _study(archive: Archive, n: int = 3) -> tuple[str, str, list[str]]:
    study, series = generate_uid(), generate_uid()
    sops = []
    for i in range(n):
        sop = generate_uid()
        archive.ingest.ingest(io.BytesIO(make_ct(study=study, series=series, sop=sop, seed=i)), source="t")
        sops.append(sop)
    return study, series, sops


@pytest.fixture
def archive_with_grace(settings: Settings) -> Any:
    a = build_archive(settings.model_copy(update={"iocm_grace_days": 30.0}))
    yield a
    a.close()


def test_a_rejection_note_hides_what_it_lists_at_once(archive_with_grace: Archive) -> None:
    a = archive_with_grace
    study, series, sops = _study(a)
    absent = generate_uid()
    note = rejection_note(study, [(series, sops[0]), (series, sops[1]), (series, absent)])
    stored = a.ingest.ingest(io.BytesIO(note), source="dimse:MODALITY")
    assert stored.outcome.value == "stored"
    assert a.retrieve.locate(study_uid=study, sop_uids=sops[:2]) == [], "hidden from retrieval"
    assert {r.sop_uid for r in a.retrieve.locate(study_uid=study)} == {sops[2], stored.sop_instance_uid}
    with pytest.raises(NotFound):
        a.retrieve.instance(study, series, sops[0])
    assert a.trash is not None
    items = a.trash.items(study)
    assert {i.sop_uid for i in items} == set(sops[:2])
    assert all(i.deleted_by == "iocm:113001" and "Quality" in (i.reason or "") for i in items)
    assert min(i.purge_after for i in items) > a.trash.clock() + timedelta(days=29), "restorable for 30 days"
    assert [(e.by, e.instances) for e in a.trash.deletion_log(study)][:2] == [("iocm:113001", 1)] * 2
    # the same note again (a retry): idempotent
    assert a.ingest.ingest(io.BytesIO(note), source="dimse:MODALITY").outcome.value == "duplicate"
    assert {i.sop_uid for i in a.trash.items(study)} == set(sops[:2])
    # a rejection sent by mistake can be undone
    a.trash.restore(study, deletion=_cli())
    assert {r.sop_uid for r in a.retrieve.locate(study_uid=study)} == {*sops, stored.sop_instance_uid}


def _cli() -> Any:
    from dicomvault.domain.trash import Deletion

    return Deletion("cli:test", "undo a mistaken rejection")


def test_retention_expired_is_purged_at_the_next_purge(archive: Archive) -> None:
    study, series, sops = _study(archive, 2)
    note = rejection_note(study, [(series, sops[0])], code="113039", meaning="Data Retention Policy Expired")
    archive.ingest.ingest(io.BytesIO(note), source="t")
    assert archive.trash is not None
    [item] = archive.trash.items(study)
    assert item.purge_after <= archive.trash.clock() + timedelta(seconds=5)
    archive.trash.purge_due()
    assert archive.trash.items(study) == []
    assert not archive.blobs.exists(item.blob.key), "the bytes are gone from every store"
    assert {r.sop_uid for r in archive.retrieve.locate(study_uid=study, series_uid=series)} == {sops[1]}


def test_a_key_object_that_is_not_a_rejection_hides_nothing(archive: Archive) -> None:
    study, series, sops = _study(archive, 2)
    note = rejection_note(study, [(series, sops[0])], code="113000", meaning="Of Interest")
    archive.ingest.ingest(io.BytesIO(note), source="t")
    assert {r.sop_uid for r in archive.retrieve.locate(study_uid=study, series_uid=series)} == set(sops)
    assert archive.trash is not None and archive.trash.items(study) == []


def test_the_purge_waits_for_the_retention_minimum(settings: Settings) -> None:
    a = build_archive(settings.model_copy(update={"retention_min_days": 36500}))
    try:
        study, series, sops = _study(a, 1)  # StudyDate 2024: within a hundred-year minimum
        note = rejection_note(study, [(series, sops[0])], code="113039", meaning="Data Retention Policy Expired")
        a.ingest.ingest(io.BytesIO(note), source="t")
        assert a.retrieve.locate(study_uid=study, sop_uids=sops) == [], "hidden at once regardless"
        assert a.trash is not None
        [item] = a.trash.items(study)
        assert item.purge_after.year >= 2120, "kept (hidden) until the retention minimum allows deleting it"
    finally:
        a.close()


def test_an_instance_arriving_after_its_rejection_is_hidden_too(archive_with_grace: Archive) -> None:
    a = archive_with_grace
    study, series, sops = _study(a, 1)
    late = generate_uid()
    note = rejection_note(study, [(series, late)], code="113038", meaning="Incorrect Modality Worklist Entry")
    a.ingest.ingest(io.BytesIO(note), source="t")
    result = a.ingest.ingest(io.BytesIO(make_ct(study=study, series=series, sop=late, seed=9)), source="t")
    assert result.outcome.value == "stored", "stored (nothing is lost) …"
    assert a.retrieve.locate(study_uid=study, sop_uids=[late]) == [], "… and hidden at once"
    assert a.trash is not None
    [item] = a.trash.items(study)
    assert (item.sop_uid, item.deleted_by) == (late, "iocm:113038")
    assert {r.sop_uid for r in a.retrieve.locate(study_uid=study, series_uid=series)} == set(sops)
    # an operator restoring it overrules the note
    a.trash.restore(study, deletion=_cli())
    assert [r.sop_uid for r in a.retrieve.locate(study_uid=study, sop_uids=[late])] == [late]
