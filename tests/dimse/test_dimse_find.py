"""C-FIND with dcmtk findscu and pynetdicom: every level of both roots, the PS3.4 matching kinds, counts,
only the requested keys back, bad identifiers refused with a status and an ErrorComment."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from tests.dimse.conftest import Loaded, Running, identifier, load, run
from tests.helpers import make_ct


def find(running: Running, model: object, ds: Dataset) -> list[Dataset]:
    ae = AE(ae_title="FINDSCU")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", running.port, ae_title="DICOMVAULT")
    out = []
    for status, ident in assoc.send_c_find(ds, model):
        assert status.Status in (0x0000, 0xFF00), (hex(status.Status), status.get("ErrorComment"))
        if status.Status == 0xFF00:
            out.append(ident)
    assoc.release()
    return out


def findscu(running: Running, folder: Path, root: str, *keys: str) -> list[Dataset]:
    """Run dcmtk findscu with ``-k`` keys; its responses are extracted to files and read back."""
    out = folder / f"find{len(list(folder.iterdir()))}"
    out.mkdir()
    args = ["findscu", root, "-X", "-od", str(out), "-aec", "DICOMVAULT"]
    for key in keys:
        args += ["-k", key]
    r = run([*args, "127.0.0.1", str(running.port)])
    assert r.returncode == 0, r.stderr
    return [pydicom.dcmread(f) for f in sorted(out.glob("rsp*.dcm"))]


@pytest.fixture
def loaded(dimse: Running) -> Loaded:
    return load(dimse.archive)


def test_find_matching_kinds(dimse: Running, loaded: Loaded) -> None:
    a, b = loaded.studies["A"], loaded.studies["B"]
    m = StudyRootQueryRetrieveInformationModelFind
    res = find(dimse, m, identifier("STUDY", StudyInstanceUID="", PatientName="DOE*", NumberOfStudyRelatedInstances="",
                                    NumberOfStudyRelatedSeries="", ModalitiesInStudy="", StudyDate=""))
    assert {r.StudyInstanceUID for r in res} == {a, b}
    by_uid = {r.StudyInstanceUID: r for r in res}
    assert by_uid[a].NumberOfStudyRelatedInstances == 3 and by_uid[a].ModalitiesInStudy == "CT"
    assert by_uid[b].NumberOfStudyRelatedSeries == 1 and by_uid[b].StudyDate == "20210610"
    # exactly the requested keys plus the level
    assert set(res[0].keys()) == {0x00080052, 0x0020000D, 0x00100010, 0x00201208, 0x00201206, 0x00080061,
                                  0x00080020}
    assert len(find(dimse, m, identifier("STUDY", StudyInstanceUID="", StudyDate="20210101-20221231"))) == 2
    assert len(find(dimse, m, identifier("STUDY", StudyInstanceUID="", StudyDate="-20201231"))) == 1
    assert len(find(dimse, m, identifier("STUDY", StudyInstanceUID="", PatientName="m?ller*"))) == 1
    assert len(find(dimse, m, identifier("STUDY", StudyInstanceUID=f"{a}\\{b}"))) == 2
    assert len(find(dimse, m, identifier("STUDY", StudyInstanceUID="", ModalitiesInStudy="MR"))) == 1
    assert len(find(dimse, m, identifier("STUDY", StudyInstanceUID="", AccessionNumber="ACCC"))) == 1
    assert len(find(dimse, m, identifier("STUDY", StudyInstanceUID=""))) == 3  # universal matching
    series = find(dimse, m, identifier("SERIES", StudyInstanceUID=a, SeriesInstanceUID="", Modality="",
                                        NumberOfSeriesRelatedInstances=""))
    assert len(series) == 1 and series[0].NumberOfSeriesRelatedInstances == 3 and series[0].Modality == "CT"
    images = find(dimse, m, identifier("IMAGE", StudyInstanceUID=a, SOPInstanceUID="", InstanceNumber="2"))
    assert len(images) == 1 and images[0].InstanceNumber == 2
    assert len(find(dimse, m, identifier("IMAGE", SeriesInstanceUID=loaded.series["C"], SOPInstanceUID=""))) == 2


def test_patient_root_patient_level_and_non_ascii(dimse: Running, loaded: Loaded) -> None:
    res = find(dimse, PatientRootQueryRetrieveInformationModelFind,
               identifier("PATIENT", PatientID="P2", PatientName="", NumberOfPatientRelatedStudies="",
                          NumberOfPatientRelatedInstances=""))
    assert len(res) == 1 and str(res[0].PatientName) == "Müller^Hans"
    assert res[0].SpecificCharacterSet == "ISO_IR 192"
    assert res[0].NumberOfPatientRelatedStudies == 1 and res[0].NumberOfPatientRelatedInstances == 2
    res = find(dimse, PatientRootQueryRetrieveInformationModelFind,
               identifier("STUDY", PatientID="P1", StudyInstanceUID="", RetrieveAETitle=""))
    assert len(res) == 2 and {r.RetrieveAETitle for r in res} == {"DICOMVAULT"}
    assert "SpecificCharacterSet" not in res[0]


def test_find_bad_identifier_gets_failure_status(dimse: Running) -> None:
    ae = AE(ae_title="FINDSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title="DICOMVAULT")
    bad_ones = (
        identifier("PATIENT", PatientID=""),  # no PATIENT level in Study Root
        identifier("FRAME", StudyInstanceUID=""),  # unknown level
        identifier("STUDY", StudyDate="2020-13-45"),  # not a date range
        identifier("STUDY", StudyInstanceUID="1.2.abc"),  # not a UID
    )
    for bad in bad_ones:
        [(status, _)] = list(assoc.send_c_find(bad, StudyRootQueryRetrieveInformationModelFind))
        assert status.Status == 0xA900 and status.ErrorComment, bad
    assert assoc.is_established
    assoc.release()


def test_findscu_every_level(dimse: Running, loaded: Loaded, tmp_path: Path) -> None:
    a, b = loaded.studies["A"], loaded.studies["B"]
    patients = findscu(dimse, tmp_path, "-P", "QueryRetrieveLevel=PATIENT", "PatientName=Doe*", "PatientID",
                       "NumberOfPatientRelatedStudies")
    assert [(p.PatientID, p.NumberOfPatientRelatedStudies) for p in patients] == [("P1", 2)]
    studies = findscu(dimse, tmp_path, "-S", "QueryRetrieveLevel=STUDY", "PatientName=Doe^Jane",
                      "StudyInstanceUID", "NumberOfStudyRelatedInstances", "ModalitiesInStudy")
    assert {s.StudyInstanceUID: (s.NumberOfStudyRelatedInstances, s.ModalitiesInStudy) for s in studies} == {
        a: (3, "CT"), b: (2, "MR")}
    assert len(findscu(dimse, tmp_path, "-S", "QueryRetrieveLevel=STUDY", "StudyDate=20200101-20201231",
                       "StudyInstanceUID")) == 1
    assert len(findscu(dimse, tmp_path, "-S", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={a}\\{b}")) == 2
    assert len(findscu(dimse, tmp_path, "-S", "QueryRetrieveLevel=STUDY", "PatientName=D?e^J*",
                       "StudyInstanceUID")) == 2
    series = findscu(dimse, tmp_path, "-S", "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={b}",
                     "SeriesInstanceUID", "Modality", "NumberOfSeriesRelatedInstances")
    assert [(s.Modality, s.NumberOfSeriesRelatedInstances) for s in series] == [("MR", 2)]
    images = findscu(dimse, tmp_path, "-P", "QueryRetrieveLevel=IMAGE", "PatientID=P1", f"StudyInstanceUID={a}",
                     f"SeriesInstanceUID={loaded.series['A']}", "SOPInstanceUID", "InstanceNumber")
    assert sorted(int(i.InstanceNumber) for i in images) == [1, 2, 3]
    assert {i.SOPInstanceUID for i in images} <= set(loaded.objects)
    assert findscu(dimse, tmp_path, "-S", "QueryRetrieveLevel=STUDY", "PatientName=Nobody*") == []


def test_find_cancel_stops_the_responses(dimse: Running, tmp_path: Path) -> None:
    study = generate_uid()
    for i in range(200):
        dimse.archive.ingest.ingest(io.BytesIO(make_ct(study=study, rows=2, columns=2, InstanceNumber=i)))
    out = tmp_path / "cancel"
    out.mkdir()
    r = run(["findscu", "-S", "--cancel", "1", "-X", "-od", str(out), "-k", "QueryRetrieveLevel=IMAGE",
             "-k", f"StudyInstanceUID={study}", "-k", "SOPInstanceUID", "-aec", "DICOMVAULT", "127.0.0.1",
             str(dimse.port)])
    assert r.returncode == 0, r.stderr
    got = len(list(out.glob("rsp*.dcm")))
    assert 1 <= got <= 2 * 32, got  # the cancel lands within a burst of responses
