"""C-GET and C-MOVE with dcmtk getscu/movescu and pynetdicom: the stored bytes come back unchanged, transcoded
only for a peer that cannot take the stored syntax; counts and final statuses; unknown destinations refused."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicomvault.dimse import scu
from tests.conftest import free_port
from tests.dimse.conftest import (
    Loaded,
    Receiver,
    Running,
    dataset_bytes,
    identifier,
    load,
    received_bytes,
    run,
    start,
)
from tests.helpers import make_ct


@pytest.fixture
def loaded(dimse: Running) -> Loaded:
    return load(dimse.archive)


def ingest_j2k(running: Running, study: str) -> str:
    ds = pydicom.dcmread(io.BytesIO(make_ct(study=study, rows=32, columns=32)))
    ds.compress(JPEG2000Lossless)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return running.archive.ingest.ingest(io.BytesIO(buf.getvalue())).sop_instance_uid


def c_get(running: Running, ident: Dataset, model: Any, contexts: list[tuple[str, list[str]]]
          ) -> tuple[Dataset, dict[str, tuple[str, bytes]]]:
    """A pynetdicom C-GET accepting ``contexts`` (SOP class, syntaxes); returns the final status and what came."""
    received: dict[str, tuple[str, bytes]] = {}

    def on_store(event: Any) -> int:
        received[str(event.request.AffectedSOPInstanceUID)] = (str(event.context.transfer_syntax),
                                                               received_bytes(event))
        return 0x0000

    ae = AE(ae_title="GETSCU")
    ae.add_requested_context(model)
    roles = []
    for sop_class, syntaxes in contexts:
        ae.add_requested_context(sop_class, syntaxes)
        roles.append(build_role(sop_class, scp_role=True))
    assoc = ae.associate("127.0.0.1", running.port, ae_title="DICOMVAULT", ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    statuses = [status for status, _ in assoc.send_c_get(ident, model)]
    assoc.release()
    return statuses[-1], received


def test_getscu_returns_exact_bytes(dimse: Running, loaded: Loaded, tmp_path: Path) -> None:
    for n, (root, keys, expected) in enumerate([
        ("-S", ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={loaded.studies['A']}"], 3),
        ("-P", ["QueryRetrieveLevel=PATIENT", "PatientID=P1"], 5),
        ("-S", ["QueryRetrieveLevel=SERIES", f"StudyInstanceUID={loaded.studies['C']}",
                f"SeriesInstanceUID={loaded.series['C']}"], 2),
    ]):
        out = tmp_path / f"get{n}"
        out.mkdir()
        args = ["getscu", root, "+B", "-od", str(out), "-aec", "DICOMVAULT"]
        for key in keys:
            args += ["-k", key]
        r = run([*args, "127.0.0.1", str(dimse.port)])
        assert r.returncode == 0, r.stderr
        files = list(out.iterdir())
        assert len(files) == expected, keys
        for f in files:  # +B: written to disk exactly as received
            got = f.read_bytes()
            uid = str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
            assert dataset_bytes(got) == dataset_bytes(loaded.objects[uid])


def test_get_image_level_uid_list(dimse: Running, loaded: Loaded) -> None:
    uids = sorted(loaded.objects)[:3]
    ident = identifier("IMAGE", SOPInstanceUID="\\".join(uids))
    final, received = c_get(dimse, ident, StudyRootQueryRetrieveInformationModelGet,
                            [(CTImageStorage, [ExplicitVRLittleEndian])])
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 3
    assert set(received) == set(uids)


def test_get_sends_stored_bytes_and_transcodes_for_a_peer_without_the_syntax(dimse: Running, loaded: Loaded) -> None:
    study = loaded.studies["A"]
    j2k = ingest_j2k(dimse, study)
    final, received = c_get(dimse, identifier("STUDY", StudyInstanceUID=study),
                            StudyRootQueryRetrieveInformationModelGet, [(CTImageStorage, [ExplicitVRLittleEndian])])
    assert final.Status == 0x0000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (4, 0)
    for uid, data in loaded.objects.items():
        if uid in received:
            assert received[uid] == (ExplicitVRLittleEndian, dataset_bytes(data)), "stored bytes sent unchanged"
    ts, body = received[j2k]
    assert ts == ExplicitVRLittleEndian
    decoded = pydicom.dcmread(io.BytesIO(body), force=True)
    decoded.file_meta = pydicom.dataset.FileMetaDataset()
    decoded.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    assert decoded.SOPInstanceUID == j2k and len(decoded.PixelData) == 32 * 32 * 2

    # the same instance to a peer that accepts JPEG 2000: the stored bytes
    final, received = c_get(dimse, identifier("IMAGE", StudyInstanceUID=study, SOPInstanceUID=j2k),
                            StudyRootQueryRetrieveInformationModelGet, [(CTImageStorage, [JPEG2000Lossless])])
    assert final.Status == 0x0000
    [(uid, (ts, body))] = received.items()
    [record] = dimse.archive.retrieve.locate(sop_uids=[j2k])
    assert ts == JPEG2000Lossless and body == dataset_bytes(b"".join(dimse.archive.retrieve.iter_bytes(record)))


def test_get_counts_failed_sub_operations(dimse: Running, loaded: Loaded) -> None:
    """A peer that accepted no context for a stored SOP class: that sub-operation fails, the rest go on."""
    study = loaded.studies["A"]
    sc = pydicom.dcmread(io.BytesIO(make_ct(study=study, SOPClassUID="1.2.840.10008.5.1.4.1.1.7")))
    sc.file_meta.MediaStorageSOPClassUID = sc.SOPClassUID
    buf = io.BytesIO()
    sc.save_as(buf, enforce_file_format=True)
    other = dimse.archive.ingest.ingest(io.BytesIO(buf.getvalue())).sop_instance_uid
    ae = AE(ae_title="GETSCU")
    model = StudyRootQueryRetrieveInformationModelGet
    ae.add_requested_context(model)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title="DICOMVAULT",
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, lambda e: 0x0000)])
    responses = list(assoc.send_c_get(identifier("STUDY", StudyInstanceUID=study), model))
    assoc.release()
    final, ident = responses[-1]
    assert final.Status == 0xB000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (3, 1)
    assert ident.FailedSOPInstanceUIDList == other


def test_movescu_to_itself_exact_bytes(tmp_path: Path) -> None:
    """The classic dcmtk set-up: movescu is also the storage SCP the archive moves to (+P, +B bit-preserving)."""
    port = free_port()
    running = start(tmp_path, move_destinations={"MOVESCU": f"127.0.0.1:{port}"})
    try:
        loaded = load(running.archive)
        out = tmp_path / "moved"
        out.mkdir()
        # (movescu 3.6.7 writes into its working directory in bit-preserving mode, whatever -od says)
        r = run(["movescu", "-v", "-S", "-aet", "MOVESCU", "+P", str(port), "+B", "-od", str(out),
                 "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={loaded.studies['B']}",
                 "-aec", "DICOMVAULT", "127.0.0.1", str(running.port)], cwd=out)
        assert r.returncode == 0, r.stderr
        files = list(out.iterdir())
        assert len(files) == 2, r.stdout + r.stderr
        for f in files:
            uid = str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
            assert dataset_bytes(f.read_bytes()) == dataset_bytes(loaded.objects[uid])
    finally:
        running.server.stop()
        running.archive.close()


def c_move(running: Running, ident: Dataset, destination: str, model: Any) -> list[tuple[Dataset, Any]]:
    ae = AE(ae_title="MOVESCU")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", running.port, ae_title="DICOMVAULT")
    responses = list(assoc.send_c_move(ident, destination, model))
    assoc.release()
    return responses


@pytest.mark.parametrize("level", ["PATIENT", "STUDY", "SERIES", "IMAGE", "NAME"])
def test_move_every_level_with_counts(dimse: Running, loaded: Loaded, receiver: Receiver, level: str) -> None:
    study, series = loaded.studies["A"], loaded.series["A"]
    sop = next(uid for uid, data in loaded.objects.items()
               if pydicom.dcmread(io.BytesIO(data)).SeriesInstanceUID == series)
    model = PatientRootQueryRetrieveInformationModelMove
    ident, expected = {
        "PATIENT": (identifier("PATIENT", PatientID="P1"), 5),
        "STUDY": (identifier("STUDY", PatientID="P1", StudyInstanceUID=study), 3),
        "SERIES": (identifier("SERIES", PatientID="P1", StudyInstanceUID=study, SeriesInstanceUID=series), 3),
        "IMAGE": (identifier("IMAGE", PatientID="P1", StudyInstanceUID=study, SeriesInstanceUID=series,
                             SOPInstanceUID=sop), 1),
        # a key that is not unique: the query engine selects (PS3.4 relational retrieve)
        "NAME": (identifier("STUDY", PatientName="MÜLLER*", StudyInstanceUID=""), 2),
    }[level]
    if level == "NAME":
        model = StudyRootQueryRetrieveInformationModelMove
    responses = c_move(dimse, ident, receiver.aet, model)
    final = responses[-1][0]
    assert final.Status == 0x0000, final
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations,
            final.NumberOfWarningSuboperations) == (expected, 0, 0)
    assert len(receiver.received) == expected
    for uid, (_, body) in receiver.received.items():
        assert body == dataset_bytes(loaded.objects[uid])


def test_move_to_unknown_destination_and_bad_identifier(dimse: Running, loaded: Loaded, receiver: Receiver) -> None:
    model = StudyRootQueryRetrieveInformationModelMove
    responses = c_move(dimse, identifier("STUDY", StudyInstanceUID=loaded.studies["A"]), "NOWHERE", model)
    assert responses[-1][0].Status == 0xA801
    responses = c_move(dimse, identifier("STUDY", StudyDate="yesterday"), receiver.aet, model)
    assert responses[-1][0].Status == 0xA900 and responses[-1][0].ErrorComment
    assert receiver.received == {}
    responses = c_move(dimse, identifier("STUDY", StudyInstanceUID=generate_uid()), receiver.aet, model)
    assert responses[-1][0].Status == 0x0000 and responses[-1][0].NumberOfCompletedSuboperations == 0


def test_move_to_a_configured_destination_that_is_down(tmp_path: Path) -> None:
    """Not 0xA801 (that is for an unknown AE title): every sub-operation failed, 0xA702, the reason in the Error
    Comment, the instances in the Failed SOP Instance UID List; the same with movescu."""
    down = free_port()  # nothing listens there
    running = start(tmp_path, move_destinations={"DOWN": f"127.0.0.1:{down}"})
    try:
        loaded = load(running.archive)
        study_a = loaded.studies["A"]
        expected = {uid for uid, data in loaded.objects.items()
                    if pydicom.dcmread(io.BytesIO(data)).StudyInstanceUID == study_a}
        final, ident = c_move(running, identifier("STUDY", StudyInstanceUID=study_a), "DOWN",
                              StudyRootQueryRetrieveInformationModelMove)[-1]
        assert final.Status == 0xA702
        assert final.ErrorComment == "Destination DOWN: cannot connect"
        assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations,
                final.NumberOfWarningSuboperations) == (0, 3, 0)
        assert set(ident.FailedSOPInstanceUIDList) == expected
        r = run(["movescu", "-d", "-S", "-aem", "DOWN", "-k", "QueryRetrieveLevel=STUDY",
                 "-k", f"StudyInstanceUID={study_a}", "-aec", "DICOMVAULT", "127.0.0.1", str(running.port)])
        out = r.stdout + r.stderr
        assert r.returncode != 0 and "Refused: OutOfResourcesSubOperations" in out, out[-3000:]
        assert "Failed Suboperations          : 3" in out and "[Destination DOWN: cannot connect]" in out
        # an unknown AE title is still "Move Destination Unknown"
        assert c_move(running, identifier("STUDY", StudyInstanceUID=study_a), "NOWHERE",
                      StudyRootQueryRetrieveInformationModelMove)[-1][0].Status == 0xA801
    finally:
        running.server.stop()
        running.archive.close()


@pytest.mark.parametrize("refusal", ["association rejected", "no presentation context accepted"])
def test_move_to_a_destination_that_refuses_us(tmp_path: Path, refusal: str) -> None:
    port = free_port()
    ae = AE(ae_title="PICKY")
    if refusal == "association rejected":
        ae.add_supported_context(CTImageStorage)
        ae.require_calling_aet = ["SOMEONE"]
    else:
        ae.add_supported_context(MRImageStorage)  # study B: CT Image Storage objects (Modality MR)
    picky = ae.start_server(("127.0.0.1", port), block=False)
    running = start(tmp_path, move_destinations={"PICKY": f"127.0.0.1:{port}"})
    try:
        loaded = load(running.archive)
        final, _ = c_move(running, identifier("STUDY", StudyInstanceUID=loaded.studies["B"]), "PICKY",
                          StudyRootQueryRetrieveInformationModelMove)[-1]
        assert (final.Status, final.ErrorComment) == (0xA702, f"Destination PICKY: {refusal}")
        assert final.NumberOfFailedSuboperations == 2
    finally:
        picky.shutdown()
        running.server.stop()
        running.archive.close()


def test_get_patient_root_hierarchical_image(dimse: Running, loaded: Loaded) -> None:
    study, series = loaded.studies["C"], loaded.series["C"]
    sops = [u for u, d in loaded.objects.items() if pydicom.dcmread(io.BytesIO(d)).StudyInstanceUID == study]
    final, received = c_get(dimse, identifier("IMAGE", PatientID="P2", StudyInstanceUID=study,
                                              SeriesInstanceUID=series, SOPInstanceUID="\\".join(sops)),
                            PatientRootQueryRetrieveInformationModelGet, [(CTImageStorage, [ExplicitVRLittleEndian])])
    assert final.Status == 0x0000 and set(received) == set(sops)


def test_send_instances_helper(dimse: Running, loaded: Loaded, receiver: Receiver) -> None:
    """The outbound helper used for forwarding: one association, exact bytes, a report of what happened."""
    j2k = ingest_j2k(dimse, loaded.studies["B"])
    records = dimse.archive.retrieve.locate(study_uid=loaded.studies["B"])
    report = scu.send_instances(dimse.archive, records, aet=receiver.aet, host="127.0.0.1", port=receiver.port)
    assert (report.completed, report.failed, report.warning) == (3, 0, 0)
    for record in records:
        ts, body = receiver.received[record.sop_uid]
        assert ts == record.transfer_syntax_uid
        assert body == dataset_bytes(b"".join(dimse.archive.retrieve.iter_bytes(record)))
    assert receiver.received[j2k][0] == JPEG2000Lossless


#: getscu's option proposing each stored syntax first, and the file stored in it (pydicom's test files)
_STORED_FIRST = [
    ("SC_rgb_jpeg_dcmtk.dcm", "+xy", "1.2.840.10008.1.2.4.50"),  # JPEG Baseline
    ("JPEG2000.dcm", "+xw", "1.2.840.10008.1.2.4.91"),  # JPEG 2000 (lossy)
    ("MR_small_bigendian.dcm", "+xb", "1.2.840.10008.1.2.2"),  # Explicit VR Big Endian
]


@pytest.mark.parametrize(("name", "option", "stored"), _STORED_FIRST)
def test_getscu_gets_the_stored_syntax_it_proposed_first(dimse: Running, tmp_path: Path, name: str, option: str,
                                                        stored: str) -> None:
    """Issue #10: getscu proposing the stored syntax first gets the instance unchanged; with its default proposal
    (uncompressed only) it gets it converted to the syntax accepted; either way every sub-operation completes, the
    final status is Success and the release is answered."""
    path = Path(get_testdata_file(name))
    original = pydicom.dcmread(path)
    dimse.archive.ingest.ingest(io.BytesIO(path.read_bytes()))
    for options, expected in (([option], stored), ([], ExplicitVRLittleEndian)):
        out = tmp_path / f"get{len(options)}"
        out.mkdir()
        r = run(["getscu", "-v", "-S", *options, "-od", str(out), "-aec", "DICOMVAULT",
                 "-k", "QueryRetrieveLevel=IMAGE", "-k", f"StudyInstanceUID={original.StudyInstanceUID}",
                 "-k", f"SOPInstanceUID={original.SOPInstanceUID}", "127.0.0.1", str(dimse.port)])
        log = r.stdout + r.stderr
        assert r.returncode == 0 and "Release Failed" not in log and "Refused" not in log, log
        [received] = out.iterdir()
        got = pydicom.dcmread(received)
        assert got.file_meta.TransferSyntaxUID == expected, options
        if expected == stored:
            assert got.PixelData == original.PixelData
        else:
            assert (got.pixel_array == original.pixel_array).all()


def test_getscu_lossless_j2k_proposal_gets_a_converted_lossy_original(dimse: Running, tmp_path: Path) -> None:
    """+xv accepts JPEG 2000 Lossless only: a JPEG 2000 (lossy) original is converted to it, not refused."""
    path = Path(get_testdata_file("JPEG2000.dcm"))
    original = pydicom.dcmread(path)
    dimse.archive.ingest.ingest(io.BytesIO(path.read_bytes()))
    r = run(["getscu", "-v", "-S", "+xv", "-od", str(tmp_path), "-aec", "DICOMVAULT",
             "-k", "QueryRetrieveLevel=IMAGE", "-k", f"StudyInstanceUID={original.StudyInstanceUID}",
             "-k", f"SOPInstanceUID={original.SOPInstanceUID}", "127.0.0.1", str(dimse.port)])
    log = r.stdout + r.stderr
    assert r.returncode == 0 and "Release Failed" not in log and "Refused" not in log, log
    [received] = [f for f in tmp_path.iterdir() if f.is_file()]
    got = pydicom.dcmread(received)
    assert got.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert (got.pixel_array == original.pixel_array).all()
