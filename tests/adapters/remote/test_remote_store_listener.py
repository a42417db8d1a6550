"""The migration's storage SCP on the lean receive path (``adapters/remote/store_listener.py``): objects from dcmtk's
storescu and pynetdicom reach the sink byte for byte; the sink's verdict becomes the C-STORE status; C-ECHO; the
association cap, garbage, an idle peer and ``stop`` are bounded. (Migration from Orthanc through it:
tests/services/test_services_migration.py.)"""

from __future__ import annotations

import contextlib
import io
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ImplicitVRLittleEndian, RLELossless
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from dicomvault.adapters.remote import store_listener
from dicomvault.adapters.remote.store_listener import LeanStoreScp
from dicomvault.ports.migration import Received
from tests.conftest import free_port
from tests.dimse.conftest import ENV, dataset_bytes, storescu_config
from tests.helpers import make_ct


class Kept:
    """A sink keeping (SOP Instance UID → data set bytes, syntax, calling AE), answering ``verdict``."""

    def __init__(self, verdict: str | None = None, fail: bool = False) -> None:
        self.objects: dict[str, tuple[bytes, str, str]] = {}
        self.verdict, self.fail = verdict, fail
        self.lock = threading.Lock()

    def __call__(self, received: Received) -> str | None:
        if self.fail:
            raise RuntimeError("the index is down")
        data = received.stream.read()
        assert len(data) == received.size and not received.part10
        with self.lock:
            self.objects[received.sop_instance_uid] = (data, received.transfer_syntax, received.calling)
        return self.verdict


@contextlib.contextmanager
def listening(sink: Kept, *, timeout: float = 10.0) -> Iterator[LeanStoreScp]:
    scp = LeanStoreScp("MIGRATE", "127.0.0.1", free_port(), timeout=timeout, max_pdu=1 << 20)
    scp.start(sink)
    try:
        yield scp
    finally:
        scp.stop()


def _associate(port: int, *, max_pdu: int = 16382, contexts: tuple[str, ...] = (CTImageStorage,)) -> object:
    ae = AE(ae_title="ORTHANC")
    ae.maximum_pdu_size = max_pdu
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for uid in contexts:
        ae.add_requested_context(uid, ALL_TRANSFER_SYNTAXES[:4])
    return ae.associate("127.0.0.1", port, ae_title="MIGRATE")


@pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk's storescu is not installed")
def test_storescu_objects_reach_the_sink_byte_for_byte(tmp_path: Path) -> None:
    # generated objects (dcmtk re-encodes some of pydicom's test files: trailing padding, group lengths)
    files = [Path(str(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")))]
    for n, syntax in enumerate((None, RLELossless, ImplicitVRLittleEndian)):
        ds = pydicom.dcmread(io.BytesIO(make_ct(seed=n, rows=512 if syntax is None else 64, columns=512)))
        if syntax == RLELossless:
            ds.compress(RLELossless)
        elif syntax is not None:
            ds.file_meta.TransferSyntaxUID = syntax
        files.append(tmp_path / f"{n}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    sink = Kept()
    cfg = storescu_config(tmp_path, files)  # each file in its own syntax, in a context of its own
    with listening(sink) as scp:
        result = subprocess.run(["storescu", "-aet", "ORTHANC", "-nh", "-xf", str(cfg), "Exact", "-aec", "MIGRATE",
                                 "127.0.0.1", str(scp.port), *map(str, files)], env=ENV, capture_output=True,
                                text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for path in files:
        raw = path.read_bytes()
        ds = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True)
        data, syntax, calling = sink.objects[str(ds.SOPInstanceUID)]
        assert data == dataset_bytes(raw)
        assert syntax == str(ds.file_meta.TransferSyntaxUID) and calling == "ORTHANC"


@pytest.mark.parametrize("max_pdu", [0, 4096])
def test_pynetdicom_statuses_follow_the_sink(max_pdu: int) -> None:
    ct = pydicom.dcmread(io.BytesIO(make_ct(rows=64, columns=64)))
    for sink, expected in ((Kept(), 0x0000), (Kept("not stored: invalid"), 0xC000), (Kept(fail=True), 0xA700)):
        with listening(sink) as scp:
            assoc = _associate(scp.port, max_pdu=max_pdu, contexts=(CTImageStorage, Verification))
            assert assoc.is_established  # type: ignore[attr-defined]
            assert assoc.send_c_echo().Status == 0  # type: ignore[attr-defined]
            assert assoc.send_c_store(ct).Status == expected  # type: ignore[attr-defined]
            assoc.release()  # type: ignore[attr-defined]
        assert scp.served == 1


def test_associations_over_the_cap_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_listener, "MAX_ASSOCIATIONS", 1)
    with listening(Kept()) as scp:
        first = _associate(scp.port)
        assert first.is_established  # type: ignore[attr-defined]
        second = _associate(scp.port)
        assert second.is_rejected  # type: ignore[attr-defined]
        first.release()  # type: ignore[attr-defined]


def test_garbage_an_idle_peer_and_stop_are_bounded() -> None:
    with listening(Kept(), timeout=0.5) as scp:
        with socket.create_connection(("127.0.0.1", scp.port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            with contextlib.suppress(ConnectionResetError):  # closed (with our bytes unread: a reset)
                assert sock.recv(1024) == b""  # without an answer
        idle = _associate(scp.port)
        assert idle.is_established  # type: ignore[attr-defined]
        idle.join(5)  # type: ignore[attr-defined]  # the SCP aborts it after 0.5 s without a message
        assert idle.is_aborted  # type: ignore[attr-defined]
    with listening(Kept(), timeout=30) as scp:
        waiting = _associate(scp.port)
        assert waiting.is_established  # type: ignore[attr-defined]
        scp.stop()  # the idle association ends at once, well before its 30 s
        waiting.join(5)  # type: ignore[attr-defined]
        assert waiting.is_aborted  # type: ignore[attr-defined]
