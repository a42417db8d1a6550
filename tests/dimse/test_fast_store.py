"""The lean storage path (dimse/fast_store.py, store_link.py): real peers, routing, settings, and raw-socket faults.

Every fault must end in an A-ABORT (or a reject) and a closed socket, store nothing half-received, and leave the
server serving, with no thread left behind and no patient data logged above DEBUG.
"""

from __future__ import annotations

import io
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.dimse_messages import C_CANCEL_RQ, C_ECHO_RQ, C_FIND_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_CANCEL, C_ECHO, C_FIND, C_STORE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from dicomvault.dicom import store_link
from tests.dimse.conftest import Running, dataset_bytes, identifier, load, run, start, stored_bytes
from tests.dimse.raw_peer import CT, Raw
from tests.helpers import make_ct


@pytest.fixture
def lean(tmp_path: Path) -> Iterator[Running]:
    running = start(tmp_path, dimse_timeout=3.0)
    yield running
    running.server.stop()
    running.archive.close()


def _ct_bytes(**kw: object) -> bytes:
    return dataset_bytes(make_ct(rows=128, columns=128, **kw))  # ~32 KiB data set, explicit VR LE


# -- real peers -------------------------------------------------------------------------------------------------


def test_echoscu_takes_the_lean_path(lean: Running) -> None:
    r = run(["echoscu", "-aec", "DICOMVAULT", "127.0.0.1", str(lean.port)])
    assert r.returncode == 0, r.stderr
    assert lean.server.lean_associations == 1


def test_pynetdicom_scu_several_transfer_syntaxes(lean: Running) -> None:
    """One context per syntax: each object is stored in the syntax it was sent in (big endian and compressed
    syntaxes: the storescu corpus test in test_dimse_store.py, which now runs on this path)."""
    syntaxes = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian]
    ae = AE(ae_title="MULTI")
    for ts in syntaxes:
        ae.add_requested_context(CTImageStorage, [ts])
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", lean.port, ae_title="DICOMVAULT")
    assert assoc.is_established
    sent: dict[str, str] = {}
    for ts in syntaxes:
        ds = pydicom.dcmread(io.BytesIO(make_ct(rows=64, columns=64)))
        ds.file_meta.TransferSyntaxUID = ts
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)  # encoded in ``ts``, so pynetdicom sends it as is
        ds = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
        st = assoc.send_c_store(ds)
        assert st.Status == 0x0000, (ts, st)
        sent[str(ds.SOPInstanceUID)] = str(ts)
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    assert lean.server.lean_associations == 1
    for uid, ts in sent.items():
        kept = pydicom.dcmread(io.BytesIO(stored_bytes(lean.archive, uid)))
        assert kept.file_meta.TransferSyntaxUID == ts
        assert kept.file_meta.SourceApplicationEntityTitle == "MULTI"
        assert kept.SOPInstanceUID == uid


def test_storage_plus_find_goes_to_pynetdicom(lean: Running) -> None:
    loaded = load(lean.archive)
    ae = AE(ae_title="MIXED")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", lean.port, ae_title="DICOMVAULT")
    assert assoc.is_established
    answers = [ident for st, ident in assoc.send_c_find(identifier("STUDY", StudyInstanceUID=""),
                                                       StudyRootQueryRetrieveInformationModelFind)
               if st and st.Status == 0xFF00]
    assert sorted(str(a.StudyInstanceUID) for a in answers) == sorted(loaded.studies.values())
    assert assoc.send_c_store(pydicom.dcmread(io.BytesIO(make_ct()))).Status == 0x0000
    assoc.release()
    assert lean.server.lean_associations == 0


def test_calling_aet_allow_list(tmp_path: Path) -> None:
    running = start(tmp_path, allowed_calling_aets=["GOOD"])
    try:
        # A hand-driven requestor sees the exact A-ASSOCIATE-RJ: rejected-permanent, service-user, calling AE
        # not recognised. (pynetdicom as requestor is not used for this half: under heavy CPU load it sometimes
        # reports an abort instead of a reject that arrives within microseconds of its request.)
        with Raw(running.port, aet="BAD") as raw:
            rj = raw.associate(expect=0x03)
            assert tuple(rj[1:4]) == (0x01, 0x01, 0x03)
            raw.sock.settimeout(0.3)
            with pytest.raises(TimeoutError):  # the server leaves the close to us (PS3.8 Sta13)
                raw.sock.recv(1)
        ae = AE(ae_title="GOOD")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", running.port, ae_title="DICOMVAULT")
        assert assoc.is_established
        assert assoc.send_c_store(pydicom.dcmread(io.BytesIO(make_ct()))).Status == 0
        assoc.release()
        assert running.server.lean_associations == 1
    finally:
        running.server.stop()
        running.archive.close()


def test_max_associations_counts_lean_associations(tmp_path: Path) -> None:
    """The second association is refused with the transient "local limit exceeded" reject.

    It is read by a hand-driven requestor: pynetdicom 3.0.4's requestor reports an abort, not a reject, when the
    A-ASSOCIATE-RJ arrives before its own thread has checked that the TCP connection is up (its DUL thread
    processes the reject, closes the socket and clears ``_is_connected``, which the requestor thread then reads as
    "could not connect"); the lean path answers within ~0.1 ms, so under load that window was hit now and then.
    The test also used to take 60 s to fail: the first association was never released and the server's stop
    joined its thread until the peer's network timeout."""
    running = start(tmp_path, max_associations=1)
    ae = AE(ae_title="ONE")
    ae.add_requested_context(CTImageStorage)
    first = ae.associate("127.0.0.1", running.port, ae_title="DICOMVAULT")
    try:
        assert first.is_established
        with Raw(running.port, aet="TWO") as raw:
            rj = raw.associate(expect=0x03)
            assert tuple(rj[1:4]) == (0x02, 0x03, 0x02)
    finally:
        first.release()
        running.server.stop()
        running.archive.close()


@pytest.mark.parametrize(("ours", "flags"), [
    (16384, ["--max-pdu", "131072", "--max-send-pdu", "131072"]),  # the peer could send more than we take
    (4 * 1024 * 1024, ["--max-pdu", "4096", "--max-send-pdu", "4096"]),  # the peer takes and sends less
], ids=["peer-larger", "peer-smaller"])
def test_storescu_pdu_sizes(tmp_path: Path, ours: int, flags: list[str]) -> None:
    running = start(tmp_path, max_pdu=ours)
    try:
        files = []
        for i in range(3):
            path = tmp_path / f"ct{i}.dcm"
            path.write_bytes(make_ct(rows=256, columns=256, seed=i))
            files.append(path)
        r = run(["storescu", *flags, "-aec", "DICOMVAULT", "127.0.0.1", str(running.port), *map(str, files)])
        assert r.returncode == 0 and "E:" not in r.stderr, r.stderr[-2000:]
        assert running.server.lean_associations == 1
        for path in files:
            uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            assert dataset_bytes(stored_bytes(running.archive, uid)) == dataset_bytes(path.read_bytes())
    finally:
        running.server.stop()
        running.archive.close()


def test_setting_off_serves_everything_through_pynetdicom(tmp_path: Path) -> None:
    running = start(tmp_path, dimse_fast_store=False)
    try:
        r = run(["echoscu", "-aec", "DICOMVAULT", "127.0.0.1", str(running.port)])
        assert r.returncode == 0, r.stderr
        ae = AE(ae_title="OFF")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", running.port, ae_title="DICOMVAULT")
        assert assoc.send_c_store(pydicom.dcmread(io.BytesIO(make_ct()))).Status == 0
        assoc.release()
        assert running.server.lean_associations == 0
        assert running.archive.index.stats().instances == 1
    finally:
        running.server.stop()
        running.archive.close()


def test_large_object_is_spooled_and_kept_exactly(lean: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_link, "SPOOL_THRESHOLD", 64 * 1024)
    data = make_ct(rows=512, columns=512)  # 512 KiB of pixels: spooled
    uid = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
    with Raw(lean.port) as raw:
        assert raw.store(dataset_bytes(data), uid, fragment=100_000) == 0x0000
        raw.release()
    assert dataset_bytes(stored_bytes(lean.archive, uid)) == dataset_bytes(data)
    assert not list((lean.settings.data_dir / "dimse-spool").iterdir())  # the spool file is gone


# -- raw-socket faults ------------------------------------------------------------------------------------------


def _still_serving(running: Running) -> None:
    r = run(["echoscu", "-aec", "DICOMVAULT", "127.0.0.1", str(running.port)])
    assert r.returncode == 0, r.stderr


def _fault_store_command(raw: Raw) -> bytes:
    return raw.store_command(generate_uid())


FAULTS = {
    "garbage": lambda raw: b"\xde\xad\xbe\xef" * 64,
    "unknown-pdu-type": lambda raw: b"\x0a\x00\x00\x00\x00\x04\x00\x00\x00\x00",
    "unexpected-associate-rq": lambda raw: b"\x01\x00\x00\x00\x00\x04\x00\x00\x00\x00",
    "pdu-over-our-max": lambda raw: struct.pack(">BxI", 0x04, 5 * 1024 * 1024) + b"\0" * 1024,
    "unaccepted-context": lambda raw: raw.store_command(generate_uid(), context_id=5),
    "pdv-outside-pdu": lambda raw: struct.pack(">BxI", 0x04, 8) + struct.pack(">IBB", 100, 1, 3) + b"\0\0",
    "data-before-command": lambda raw: raw.data_pdus(b"\x08\x00" * 8, 100),
    "find-on-storage-context": lambda raw: raw.message(C_FIND_RQ(), _find_primitive()),
    "undecodable-command": lambda raw: struct.pack(">BxI", 0x04, 14) + struct.pack(">IBB", 10, 1, 3) + b"\xff" * 8,
}


def _find_primitive() -> C_FIND:
    rq = C_FIND()
    rq.MessageID = 1
    rq.AffectedSOPClassUID = CT
    rq.Priority = 2
    rq.Identifier = io.BytesIO(b"")
    return rq


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_protocol_fault_ends_in_abort(lean: Running, fault: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with Raw(lean.port) as raw:
        raw.associate()
        raw.sock.sendall(FAULTS[fault](raw))
        assert raw.closed_after_abort()
    _still_serving(lean)
    assert lean.archive.index.stats().instances == 0


@pytest.mark.parametrize("ending", ["vanish", "abort", "truncated-pdu", "release"])
def test_peer_ends_mid_object_nothing_stored(lean: Running, ending: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    data = _ct_bytes(PatientName="Secret^Patient")
    with Raw(lean.port) as raw:
        raw.associate()
        pdus = raw.data_pdus(data, 8000)  # PDUs of 6 + 4 + 2 + 8000 bytes: send whole ones, half the object
        raw.sock.sendall(_fault_store_command(raw) + pdus[: (len(pdus) // 2) // 8012 * 8012])
        if ending == "abort":
            raw.sock.sendall(b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00")
        elif ending == "truncated-pdu":
            raw.sock.sendall(struct.pack(">BxI", 0x04, 5000) + b"\0" * 100)
        elif ending == "release":
            raw.sock.sendall(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")
            assert raw.read_pdu()[0] == 0x06
        time.sleep(0.2)
    _still_serving(lean)
    assert lean.archive.index.stats().instances == 0
    assert "Secret" not in caplog.text


def test_silent_peer_is_closed_after_the_timeout(tmp_path: Path) -> None:
    running = start(tmp_path, dimse_artim_timeout=1.0, dimse_idle_timeout=1.0)
    try:
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as silent:
            started = time.monotonic()
            assert silent.recv(16) == b""  # closed by the server (ARTIM), nothing sent
            assert time.monotonic() - started < 5
        with Raw(running.port) as raw:  # associated, then silent: A-ABORT after the network timeout
            raw.associate()
            assert raw.closed_after_abort()
        _still_serving(running)
    finally:
        running.server.stop()
        running.archive.close()


def test_garbage_instead_of_associate_request_goes_to_pynetdicom(lean: Running) -> None:
    with socket.create_connection(("127.0.0.1", lean.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(2)
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass
    _still_serving(lean)
    assert lean.server.lean_associations == 1  # only the echo


def test_cancel_is_ignored_and_echo_answered(lean: Running) -> None:
    with Raw(lean.port) as raw:
        raw.associate()
        cancel = C_CANCEL()
        cancel.MessageIDBeingRespondedTo = 1
        raw.sock.sendall(raw.message(C_CANCEL_RQ(), cancel))
        echo = C_ECHO()
        echo.MessageID = 7
        echo.AffectedSOPClassUID = Verification
        raw.sock.sendall(raw.message(C_ECHO_RQ(), echo, context_id=3))
        pdu_type, body = raw.read_pdu()
        assert pdu_type == 0x04
        cmd = pydicom.filereader.read_dataset(io.BytesIO(body[6:]), True, True)
        assert (cmd.CommandField, cmd.MessageIDBeingRespondedTo, cmd.Status) == (0x8030, 7, 0)
        raw.release()


def test_no_thread_left_behind(lean: Running) -> None:
    _still_serving(lean)
    time.sleep(0.3)
    before = threading.active_count()
    for fault in sorted(FAULTS):
        with Raw(lean.port) as raw:
            raw.associate()
            raw.sock.sendall(FAULTS[fault](raw))
            assert raw.closed_after_abort()
    for _ in range(3):
        _still_serving(lean)
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before


@pytest.mark.parametrize("code", [0x0000, 0xB006, 0xC001])
def test_fast_response_encoding_is_pynetdicoms(code: int) -> None:
    for sop_class, sop_instance in ((CT, "1.2.3.4"), (CT, generate_uid()), ("1.2.840.10008.5.1.4.1.1.7", "1.23")):
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo = 65535
        rsp.AffectedSOPClassUID = sop_class
        rsp.AffectedSOPInstanceUID = sop_instance
        rsp.Status = code
        msg = C_STORE_RSP()
        msg.primitive_to_message(rsp)
        [p_data] = list(msg.encode_msg(1, 16384))
        [(_, pdv)] = p_data.presentation_data_value_list
        assert store_link.store_response_command(65535, sop_class, sop_instance, code) == pdv[1:]
