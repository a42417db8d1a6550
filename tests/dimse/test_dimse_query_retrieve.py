"""C-FIND, C-GET and C-MOVE with dcmtk (findscu, getscu, movescu) and pynetdicom as peers."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless, generate_uid
from pynetdicom import AE, build_role
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicomvault.services.part10 import dataset_offset
from tests.dimse.conftest import Receiver, Running, identifier
from tests.helpers import make_ct

ENV = {**os.environ, "TCP_NODELAY": "1"}
STUDY_A, STUDY_B = generate_uid(), generate_uid()


def load(running: Running) -> dict[str, bytes]:
    """Two patients, three studies; returns SOP Instance UID → stored Part 10 bytes."""
    objs: dict[str, bytes] = {}
    specs = [
        (STUDY_A, "P1", "Doe^Jane", "20200105", "CT", 3),
        (STUDY_B, "P1", "Doe^Jane", "20210610", "MR", 2),
        (generate_uid(), "P2", "Müller^Hans", "20220101", "CT", 2),
    ]
    for study, pid, name, date, mod, n in specs:
        series = generate_uid()
        for i in range(n):
            data = make_ct(study=study, series=series, PatientID=pid, PatientName=name, StudyDate=date,
                           Modality=mod, InstanceNumber=i + 1, seed=i, AccessionNumber=f"ACC-{pid}-{date}")
            res = running.archive.ingest.ingest(io.BytesIO(data))
            objs[res.sop_instance_uid] = data
    return objs


def find(running: Running, model: object, ds: Dataset) -> list[Dataset]:
    ae = AE(ae_title="FINDSCU")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", running.port, ae_title="DICOMVAULT")
    out = []
    for status, ident in assoc.send_c_find(ds, model):
        assert status.Status in (0x0000, 0xFF00), hex(status.Status)
        if status.Status == 0xFF00:
            out.append(ident)
    assoc.release()
    return out


def test_find_matching_kinds(dimse: Running) -> None:
    load(dimse)
    m = StudyRootQueryRetrieveInformationModelFind
    res = find(dimse, m, identifier("STUDY", StudyInstanceUID="", PatientName="DOE*", NumberOfStudyRelatedInstances="",
                                    ModalitiesInStudy="", StudyDate=""))
    assert {r.StudyInstanceUID for r in res} == {STUDY_A, STUDY_B}
    by_uid = {r.StudyInstanceUID: r for r in res}
    assert by_uid[STUDY_A].NumberOfStudyRelatedInstances == 3 and by_uid[STUDY_A].ModalitiesInStudy == "CT"
    assert set(res[0].keys()) >= {0x00080052, 0x0020000D, 0x00100010, 0x00201208}
    assert "AccessionNumber" not in res[0], "only requested keys are returned"
    assert len(find(dimse, m, identifier("STUDY", StudyInstanceUID="", StudyDate="20210101-20221231"))) == 2
    assert len(find(dimse, m, identifier("STUDY", StudyInstanceUID="", PatientName="m?ller*"))) == 1
    assert len(find(dimse, m, identifier("STUDY", StudyInstanceUID=f"{STUDY_A}\\{STUDY_B}"))) == 2
    assert len(find(dimse, m, identifier("STUDY", StudyInstanceUID="", ModalitiesInStudy="MR"))) == 1
    series = find(dimse, m, identifier("SERIES", StudyInstanceUID=STUDY_A, SeriesInstanceUID="",
                                        NumberOfSeriesRelatedInstances=""))
    assert len(series) == 1 and series[0].NumberOfSeriesRelatedInstances == 3
    images = find(dimse, m, identifier("IMAGE", StudyInstanceUID=STUDY_A, SOPInstanceUID="", InstanceNumber="2"))
    assert len(images) == 1 and images[0].InstanceNumber == 2


def test_patient_root_patient_level_and_non_ascii(dimse: Running) -> None:
    load(dimse)
    res = find(dimse, PatientRootQueryRetrieveInformationModelFind,
               identifier("PATIENT", PatientID="P2", PatientName="", NumberOfPatientRelatedStudies=""))
    assert len(res) == 1 and str(res[0].PatientName) == "Müller^Hans"
    assert res[0].SpecificCharacterSet == "ISO_IR 192" and res[0].NumberOfPatientRelatedStudies == 1


def test_find_bad_identifier_gets_failure_status(dimse: Running) -> None:
    ae = AE(ae_title="FINDSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title="DICOMVAULT")
    for bad in (identifier("PATIENT", PatientID=""), identifier("STUDY", StudyDate="2020-13-45")):
        [(status, _)] = list(assoc.send_c_find(bad, StudyRootQueryRetrieveInformationModelFind))
        assert status.Status == 0xA900 and status.ErrorComment
    assert assoc.is_established
    assoc.release()


def test_findscu_interoperates(dimse: Running) -> None:
    load(dimse)
    r = subprocess.run(["findscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=Doe*",
                        "-k", "StudyInstanceUID", "-aec", "DICOMVAULT", "127.0.0.1", str(dimse.port)],
                       env=ENV, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert STUDY_A in out and STUDY_B in out


def test_getscu_returns_exact_bytes(dimse: Running, tmp_path: Path) -> None:
    objs = load(dimse)
    out = tmp_path / "get"
    out.mkdir()
    r = subprocess.run(["getscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY_A}",
                        "-od", str(out), "-aec", "DICOMVAULT", "127.0.0.1", str(dimse.port)],
                       env=ENV, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    files = list(out.iterdir())
    assert len(files) == 3
    for f in files:
        got = pydicom.dcmread(f)
        original = objs[str(got.SOPInstanceUID)]
        assert got.PixelData == pydicom.dcmread(io.BytesIO(original)).PixelData


def test_pynetdicom_get_is_byte_identical_and_transcodes(dimse: Running) -> None:
    objs = load(dimse)
    # one JPEG 2000 object that the requestor will not accept compressed
    ds = pydicom.dcmread(io.BytesIO(make_ct(study=STUDY_A, rows=32, columns=32)))
    ds.compress(JPEG2000Lossless)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    j2k = dimse.archive.ingest.ingest(io.BytesIO(buf.getvalue()))
    received: dict[str, tuple[str, bytes]] = {}

    def on_store(event: object) -> int:
        e = event  # pynetdicom Event
        received[str(e.request.AffectedSOPInstanceUID)] = (str(e.context.transfer_syntax),  # type: ignore[attr-defined]
                                                           e.request.DataSet.getvalue())  # type: ignore[attr-defined]
        return 0x0000

    from pynetdicom import evt

    ae = AE(ae_title="GETSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1"])
    role = build_role(CTImageStorage, scp_role=True)
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title="DICOMVAULT", ext_neg=[role],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    final = None
    for status, _ in assoc.send_c_get(identifier("STUDY", StudyInstanceUID=STUDY_A),
                                      StudyRootQueryRetrieveInformationModelGet):
        final = status
    assoc.release()
    assert final is not None and final.Status == 0x0000
    assert final.NumberOfCompletedSuboperations == 4
    for uid, data in objs.items():
        if uid in received:
            assert received[uid][1] == data[dataset_offset(data[:4096]):], "stored bytes sent unchanged"
    assert j2k.sop_instance_uid in received, (j2k.sop_instance_uid, list(received), ds.SOPInstanceUID)
    ts, body = received[j2k.sop_instance_uid]
    assert ts == "1.2.840.10008.1.2.1"
    assert len(body) > 32 * 32 * 2  # decoded pixels


def test_movescu_to_configured_destination(dimse: Running, receiver: Receiver) -> None:
    objs = load(dimse)
    r = subprocess.run(["movescu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY_B}",
                        "-aem", receiver.aet, "-aec", "DICOMVAULT", "127.0.0.1", str(dimse.port)],
                       env=ENV, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert len(receiver.received) == 2
    for uid, (_, body) in receiver.received.items():
        data = objs[uid]
        assert body == data[dataset_offset(data[:4096]):]


@pytest.mark.parametrize("level,key", [("PATIENT", "PatientID"), ("SERIES", "SeriesInstanceUID")])
def test_move_other_levels_and_counts(dimse: Running, receiver: Receiver, level: str, key: str) -> None:
    load(dimse)
    if level == "PATIENT":
        ident, expected = identifier("PATIENT", PatientID="P1"), 5
        from pynetdicom.sop_class import PatientRootQueryRetrieveInformationModelMove as model  # type: ignore
    else:
        [s] = find(dimse, StudyRootQueryRetrieveInformationModelFind,
                   identifier("SERIES", StudyInstanceUID=STUDY_A, SeriesInstanceUID=""))
        ident, expected, model = identifier("SERIES", SeriesInstanceUID=s.SeriesInstanceUID), 3, \
            StudyRootQueryRetrieveInformationModelMove
    ae = AE(ae_title="MOVESCU")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title="DICOMVAULT")
    statuses = [s for s, _ in assoc.send_c_move(ident, receiver.aet, model)]
    assoc.release()
    assert statuses[-1].Status == 0x0000 and statuses[-1].NumberOfCompletedSuboperations == expected
    assert len(receiver.received) == expected


def test_move_to_unknown_destination(dimse: Running) -> None:
    load(dimse)
    ae = AE(ae_title="MOVESCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title="DICOMVAULT")
    statuses = [s for s, _ in assoc.send_c_move(identifier("STUDY", StudyInstanceUID=STUDY_A), "NOWHERE",
                                                StudyRootQueryRetrieveInformationModelMove)]
    assoc.release()
    assert statuses[-1].Status == 0xA801
