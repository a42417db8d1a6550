"""Routing's lean C-STORE sender (``adapters/remote/store_sender.py`` through ``PynetdicomStore``): byte-identical
delivery to pynetdicom, dcmtk's storescp and Orthanc, whatever the peer's maximum PDU (unlimited, small, default);
the command set as pynetdicom encodes it; a peer that aborts, one that never answers, one that rejects."""

from __future__ import annotations

import contextlib
import io
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian, RLELossless
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ

from benchmarks.common import wait_port
from dicomvault.adapters.remote.dimse_store import PynetdicomStore
from dicomvault.dicom import pdu
from dicomvault.domain.errors import Unavailable
from dicomvault.domain.peers import RemotePeer
from dicomvault.ports.forwarding import Outbound
from tests.conftest import free_port
from tests.dimse.conftest import ENV
from tests.helpers import make_ct
from tests.orthanc_peer import ORTHANC, legacy_pacs

UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")


class Files:
    """``OutboundFiles`` over Part 10 files on disk: as stored when the peer accepts it, else (uncompressed only)
    converted by pydicom, like routing's ``_Files``; ``datasets`` holds the data set bytes each must arrive as."""

    def __init__(self, paths: dict[str, Path], datasets: dict[str, bytes]) -> None:
        self.paths, self.datasets = paths, datasets

    def choose(self, item: Outbound, accepted: set[str]) -> str | None:
        if item.transfer_syntax_uid in accepted:
            return item.transfer_syntax_uid
        if item.transfer_syntax_uid in UNCOMPRESSED:
            return next((ts for ts in UNCOMPRESSED if ts in accepted), None)
        return None

    @contextlib.contextmanager
    def file(self, item: Outbound, transfer_syntax: str) -> Iterator[Path]:
        path = self.paths[item.sop_uid]
        if transfer_syntax == item.transfer_syntax_uid:
            yield path
            return
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = transfer_syntax
        converted = path.with_suffix(".converted")
        ds.save_as(converted, enforce_file_format=True)
        raw = converted.read_bytes()
        self.datasets[item.sop_uid] = raw[_dataset_start(raw):]
        yield converted


def _corpus(folder: Path, count: int = 4) -> tuple[list[Outbound], Files, dict[str, bytes]]:
    """CT objects of odd sizes (one larger than several PDUs), one RLE-compressed and one implicit VR; the data
    set bytes each must arrive as."""
    folder.mkdir(parents=True, exist_ok=True)
    items, paths, datasets = [], {}, {}
    for i in range(count):
        data = make_ct(seed=i, rows=64 + 7 * i, columns=64 + 3 * i)
        ds = pydicom.dcmread(io.BytesIO(data))
        if i == 1:
            ds.compress(RLELossless)
        if i == 2:
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        raw = buf.getvalue()
        uid = str(ds.SOPInstanceUID)
        path = folder / f"{uid}.dcm"
        path.write_bytes(raw)
        start = _dataset_start(raw)
        items.append(Outbound(str(ds.SOPClassUID), uid, str(ds.file_meta.TransferSyntaxUID)))
        paths[uid] = path
        datasets[uid] = raw[start:]
    return items, Files(paths, datasets), datasets


def _dataset_start(raw: bytes) -> int:
    return 144 + int.from_bytes(raw[140:144], "little")


@contextlib.contextmanager
def pynetdicom_scp(max_pdu: int = 16382, on_store: Any = None) -> Iterator[tuple[RemotePeer, dict[str, bytes]]]:
    """A pynetdicom storage SCP keeping the raw data set bytes of every C-STORE."""
    received: dict[str, bytes] = {}

    def handler(event: evt.Event) -> int:
        if on_store is not None:
            code = on_store(event, len(received))
            if code is not None:
                return int(code)
        received[str(event.request.AffectedSOPInstanceUID)] = event.request.DataSet.getvalue()
        return 0x0000

    ae = AE(ae_title="DEST")
    ae.maximum_pdu_size = max_pdu
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, handler)])
    try:
        yield RemotePeer(aet="DEST", host="127.0.0.1", port=port), received
    finally:
        server.shutdown()


@pytest.mark.parametrize("max_pdu", [0, 4096, 16382, 1 << 20])
def test_byte_identical_whatever_the_peers_max_pdu(tmp_path: Path, max_pdu: int) -> None:
    items, files, datasets = _corpus(tmp_path / "src")
    with pynetdicom_scp(max_pdu) as (peer, received):
        report = PynetdicomStore("DICOMVAULT", timeout=10).send(peer, items, files)
    assert report.failed == {}
    assert set(report.sent) == set(datasets)
    assert received == datasets


def test_the_request_command_set_is_pynetdicoms() -> None:
    primitive = C_STORE()
    primitive.MessageID = 65535
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    primitive.AffectedSOPInstanceUID = "1.2.3.4.5"
    primitive.Priority = 0x0000
    primitive.DataSet = io.BytesIO(b"\0\0")
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    expected = encode(message.command_set, True, True)
    assert pdu.store_request_command(65535, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5") == expected


def test_failure_statuses_and_warnings_are_reported_per_instance(tmp_path: Path) -> None:
    items, files, _ = _corpus(tmp_path / "src", 3)

    def refuse_second(event: evt.Event, done: int) -> int | None:
        return 0xA700 if str(event.request.AffectedSOPInstanceUID) == items[1].sop_uid else None

    with pynetdicom_scp(on_store=refuse_second) as (peer, received):
        report = PynetdicomStore("DICOMVAULT", timeout=10).send(peer, items, files)
    assert set(report.sent) == {items[0].sop_uid, items[2].sop_uid}
    assert report.failed[items[1].sop_uid].startswith("C-STORE status 0xA700")
    assert set(received) == set(report.sent)


def test_a_peer_that_aborts_ends_the_association_and_leaves_the_rest_unsent(tmp_path: Path) -> None:
    items, files, _ = _corpus(tmp_path / "src", 4)

    def abort_second(event: evt.Event, done: int) -> int | None:
        if done == 1:
            event.assoc.abort()
        return None

    with pynetdicom_scp(on_store=abort_second) as (peer, _):
        report = PynetdicomStore("DICOMVAULT", timeout=10).send(peer, items, files)
    assert set(report.sent) == {items[0].sop_uid}
    assert list(report.failed) == [items[1].sop_uid]
    # the last two are neither sent nor failed: the routing service retries them on a new association


def _silent_acceptor(stop: threading.Event) -> tuple[int, threading.Thread]:
    """Accepts every proposed context, then reads and never answers (a hung peer)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            head = conn.recv(6, socket.MSG_WAITALL)
            body = conn.recv(pdu.HEADER.unpack(head)[1], socket.MSG_WAITALL)
            rq = A_ASSOCIATE_RQ()
            rq.decode(head + body)
            primitive = rq.to_primitive()
            for cx in primitive.presentation_context_definition_list:
                cx.result = 0x00
                cx.transfer_syntax = [cx.transfer_syntax[0]]
            primitive.presentation_context_definition_results_list = \
                primitive.presentation_context_definition_list
            primitive.result, primitive.result_source = 0x00, 0x01
            ac = A_ASSOCIATE_AC()
            ac.from_primitive(primitive)
            conn.sendall(ac.encode())
            conn.settimeout(0.2)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    if not conn.recv(1 << 16):
                        break
        listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread


def test_a_peer_that_never_answers_is_given_up_after_the_timeout(tmp_path: Path) -> None:
    items, files, _ = _corpus(tmp_path / "src", 2)
    stop = threading.Event()
    port, thread = _silent_acceptor(stop)
    try:
        report = PynetdicomStore("DICOMVAULT", timeout=0.5).send(RemotePeer(aet="HUNG", host="127.0.0.1", port=port),
                                                                 items, files)
    finally:
        stop.set()
        thread.join(5)
    assert report.sent == {}
    assert list(report.failed) == [items[0].sop_uid]
    assert "no response" in report.failed[items[0].sop_uid]


def test_a_rejected_or_refused_association_is_unavailable(tmp_path: Path) -> None:
    items, files, _ = _corpus(tmp_path / "src", 1)
    ae = AE(ae_title="PICKY")
    ae.require_called_aet = True
    ae.add_supported_context(items[0].sop_class_uid, ALL_TRANSFER_SYNTAXES)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    try:
        with pytest.raises(Unavailable, match="rejected"):
            PynetdicomStore("DICOMVAULT", timeout=5).send(RemotePeer(aet="WRONG", host="127.0.0.1", port=port),
                                                          items, files)
    finally:
        server.shutdown()
    with pytest.raises(Unavailable, match="not established"):
        PynetdicomStore("DICOMVAULT", timeout=5).send(RemotePeer(aet="GONE", host="127.0.0.1", port=free_port()),
                                                      items, files)


def test_no_accepted_syntax_for_a_class_fails_that_instance_only(tmp_path: Path) -> None:
    items, files, datasets = _corpus(tmp_path / "src", 3)
    ae = AE(ae_title="DEST")
    received: dict[str, bytes] = {}

    def handler(event: evt.Event) -> int:
        received[str(event.request.AffectedSOPInstanceUID)] = event.request.DataSet.getvalue()
        return 0

    ae.add_supported_context(items[0].sop_class_uid, [ImplicitVRLittleEndian, "1.2.840.10008.1.2.1"])
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, handler)])
    try:
        report = PynetdicomStore("DICOMVAULT", timeout=5).send(RemotePeer(aet="DEST", host="127.0.0.1", port=port),
                                                               items, files)
    finally:
        server.shutdown()
    assert "accepted no usable transfer syntax" in report.failed[items[1].sop_uid]  # RLE: not accepted
    assert set(report.sent) == {items[0].sop_uid, items[2].sop_uid}
    assert received == {uid: datasets[uid] for uid in report.sent}


@pytest.mark.skipif(shutil.which("storescp") is None, reason="dcmtk's storescp is not installed")
@pytest.mark.parametrize("max_pdu", ["4096", "16384", "131072"])
def test_byte_identical_to_dcmtk_storescp(tmp_path: Path, max_pdu: str) -> None:
    items, files, datasets = _corpus(tmp_path / "src")
    out = tmp_path / "storescp"
    out.mkdir()
    port = free_port()
    proc = subprocess.Popen(["storescp", "-aet", "STORESCP", "+xa", "-pdu", max_pdu, "-od", str(out), str(port)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        report = PynetdicomStore("DICOMVAULT", timeout=10).send(
            RemotePeer(aet="STORESCP", host="127.0.0.1", port=port), items, files)
    finally:
        proc.terminate()
        proc.wait(10)
    assert report.failed == {}
    written = {}
    for path in out.iterdir():
        raw = path.read_bytes()
        written[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = raw[_dataset_start(raw):]
    assert written == datasets


@pytest.mark.skipif(not Path(ORTHANC).exists(), reason="Orthanc is not installed")
def test_byte_identical_to_orthanc(tmp_path: Path) -> None:
    items, files, datasets = _corpus(tmp_path / "src")
    with legacy_pacs() as pacs:
        report = PynetdicomStore("DICOMVAULT", timeout=10).send(
            RemotePeer(aet=pacs.aet, host="127.0.0.1", port=pacs.dimse_port), items, files)
        assert report.failed == {}
        stored = {}
        with httpx.Client(timeout=30) as c:
            for orthanc_id in c.get(f"{pacs.http}/instances").json():
                raw = c.get(f"{pacs.http}/instances/{orthanc_id}/file").content
                uid = str(pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True).SOPInstanceUID)
                stored[uid] = raw[_dataset_start(raw):]
    assert stored == datasets


def test_pynetdicoms_sender_is_kept_for_dimse_fast_store_false(tmp_path: Path) -> None:
    items, files, datasets = _corpus(tmp_path / "src")

    def refuse_last(event: evt.Event, done: int) -> int | None:
        return 0xA700 if str(event.request.AffectedSOPInstanceUID) == items[-1].sop_uid else None

    with pynetdicom_scp(on_store=refuse_last) as (peer, received):
        report = PynetdicomStore("DICOMVAULT", timeout=10, lean=False).send(peer, items, files)
    assert set(report.sent) == {i.sop_uid for i in items[:-1]}
    assert report.failed[items[-1].sop_uid].startswith("C-STORE status 0xA700")
    assert received == {uid: datasets[uid] for uid in report.sent}
