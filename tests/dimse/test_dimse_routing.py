"""Routing to real peers (issue #12 items 3 and 4): dcmtk's storescp and Orthanc as destinations, on store and on
stable study; a destination down for a while is retried and receives each instance once; storage commitment
requested from Orthanc confirms the deliveries (Orthanc reports on an association of its own to the archive's
DIMSE server)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from benchmarks.common import orthanc, wait_port
from dicomvault.bootstrap import build_archive
from dicomvault.dimse.server import DimseServer
from dicomvault.domain.peers import Permission, RemotePeer
from dicomvault.domain.routing import DeliveryState
from dicomvault.settings import Settings
from tests.conftest import free_port
from tests.dimse.conftest import ENV, Running
from tests.helpers import make_ct
from tests.routing_support import route_worker, wait_for

pytestmark = pytest.mark.skipif(shutil.which("storescp") is None, reason="dcmtk's storescp is not installed")


class StoreScp:
    """dcmtk's storescp writing every received object to a file of its own (``+uf``), so a second delivery of
    the same instance shows as a second file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        self.proc = subprocess.Popen(["storescp", "-aet", "STORESCP", "+xa", "+uf", "-od", str(self.folder),
                                      str(self.port)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def received(self) -> Counter[str]:
        return Counter(str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                       for p in self.folder.iterdir() if p.is_file() and p.stat().st_size)


@contextmanager
def storescp(tmp_path: Path, *, started: bool = True) -> Iterator[StoreScp]:
    scp = StoreScp(tmp_path / "storescp")
    if started:
        scp.start()
    try:
        yield scp
    finally:
        scp.stop()


#: The modalities that store (storescu's calling AE titles): known peers once any peer is registered.
MODALITIES = tuple(RemotePeer(aet=aet, permissions=frozenset({Permission.STORE})) for aet in ("CT1", "CT2"))


@contextmanager
def routing_server(tmp_path: Path, *routes: dict[str, object], peers: tuple[RemotePeer, ...] = (),
                   dimse_port: int | None = None) -> Iterator[Running]:
    """The archive's DIMSE server with these routes (peers registered before it starts) and a route worker."""
    settings = Settings.load(data_dir=tmp_path / "vault", dimse_port=dimse_port or free_port(), route=list(routes))
    archive = build_archive(settings)
    assert archive.peers is not None
    for peer in (*peers, *MODALITIES):
        archive.peers.add(peer)
    server = DimseServer(archive)
    server.start()
    running = Running(archive, server, settings)
    try:
        with route_worker(archive, backoff=0.2):
            yield running
    finally:
        server.stop()
        archive.close()


def _states(running: Running, dest: str) -> dict[str, DeliveryState]:
    assert running.archive.routing is not None
    return {d.sop_uid: d.state for d in running.archive.routing.ledger.deliveries(dest)}


def _storescu(port: int, files: list[Path], calling: str = "CT1") -> None:
    result = subprocess.run(["storescu", "-aet", calling, "-aec", "DICOMVAULT", "127.0.0.1", str(port),
                             *map(str, files)], env=ENV, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def _files(folder: Path, study: str, count: int, **attrs: object) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i in range(count):
        data = make_ct(study=study, seed=i, **attrs)
        uid = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
        (folder / f"{uid}.dcm").write_bytes(data)
        out[uid] = folder / f"{uid}.dcm"
    return out


def test_route_on_store_to_storescp_down_for_a_while_delivers_once(tmp_path: Path) -> None:
    with storescp(tmp_path, started=False) as scp:
        peer = RemotePeer(aet="STORESCP", host="127.0.0.1", port=scp.port)
        with routing_server(tmp_path, {"name": "CT from CT1", "to": "STORESCP", "when": {"source": "CT1"}},
                            peers=(peer,)) as running:
            study = generate_uid()
            files = _files(tmp_path / "in", study, 4)
            _storescu(running.port, list(files.values()))
            _storescu(running.port, list(_files(tmp_path / "other", study, 1).values()), calling="CT2")

            def retried() -> bool:
                rows = running.archive.routing.ledger.deliveries("STORESCP") if running.archive.routing else []
                return len(rows) == 4 and all(r.attempts >= 2 and r.state == DeliveryState.QUEUED for r in rows)

            wait_for(retried, what="failed attempts while storescp is down")
            scp.start()
            wait_for(lambda: _states(running, "STORESCP") == dict.fromkeys(files, DeliveryState.CONFIRMED),
                     timeout=30, what="delivery once storescp is up")
            _storescu(running.port, list(files.values()))  # re-sent by the modality: not forwarded again
            assert running.archive.routing is not None
            running.archive.routing.flush()
            assert scp.received() == dict.fromkeys(files, 1)
            for path in files.values():  # bit for bit: the data set as stored (storescp adds its own meta)
                original = pydicom.dcmread(path)
                copy = next(p for p in scp.folder.iterdir()
                            if pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID == original.SOPInstanceUID)
                assert pydicom.dcmread(copy).PixelData == original.PixelData


@pytest.fixture
def orthanc_peer(tmp_path: Path) -> Iterator[tuple[object, int]]:
    """Orthanc knowing the archive (for its storage commitment reports) at a port reserved for it."""
    archive_port = free_port()
    with orthanc(extra={"DicomModalities": {"dv": ["DICOMVAULT", "127.0.0.1", archive_port]},
                        "StableAge": 1}) as server:
        yield server, archive_port


def _orthanc_instances(server: object) -> set[str]:
    http = server.http  # type: ignore[attr-defined]
    with urllib.request.urlopen(f"{http}/instances?expand", timeout=10) as r:
        return {i["MainDicomTags"]["SOPInstanceUID"] for i in json.load(r)}


def test_route_on_stable_study_to_orthanc_with_storage_commitment(tmp_path: Path,
                                                                  orthanc_peer: tuple[object, int]) -> None:
    server, archive_port = orthanc_peer
    peer = RemotePeer(aet="ORTHANC", host="127.0.0.1", port=server.dimse_port)  # type: ignore[attr-defined]
    with routing_server(tmp_path, {"name": "stable CT to Orthanc", "on": "stable", "stable_seconds": 1,
                                   "to": "ORTHANC", "commitment": True, "when": {"modality": "CT"}},
                        peers=(peer,), dimse_port=archive_port) as running:
        routing = running.archive.routing
        assert routing is not None
        study = generate_uid()
        files = _files(tmp_path / "in", study, 3)
        _storescu(running.port, list(files.values()))
        routing.flush()
        assert set(_states(running, "ORTHANC").values()) == {DeliveryState.WAITING}
        wait_for(lambda: routing.scan()["released"] == 1, timeout=10, what="the study stable")
        wait_for(lambda: _states(running, "ORTHANC") == dict.fromkeys(files, DeliveryState.CONFIRMED),
                 timeout=30, what="Orthanc's storage commitment report")
        assert _orthanc_instances(server) == set(files)
        [status] = routing.status()
        assert status.counts == {"confirmed": 3}


def test_route_via_dicomweb_to_orthanc(tmp_path: Path) -> None:
    if not os.path.exists("/usr/share/orthanc/plugins/libOrthancDicomWeb.so"):
        pytest.skip("Orthanc's DICOMweb plugin is not installed")
    with orthanc(dicomweb=True) as server:
        peer = RemotePeer(aet="ORTHANCWEB", dicomweb_url=f"{server.http}/dicom-web")
        with routing_server(tmp_path, {"name": "web", "to": "ORTHANCWEB", "via": "dicomweb"},
                            peers=(peer,)) as running:
            files = _files(tmp_path / "in", generate_uid(), 2)
            _storescu(running.port, list(files.values()))
            wait_for(lambda: _states(running, "ORTHANCWEB") == dict.fromkeys(files, DeliveryState.CONFIRMED),
                     timeout=30, what="STOW-RS to Orthanc")
            assert _orthanc_instances(server) == set(files)
