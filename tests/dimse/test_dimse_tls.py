"""DICOM TLS (dimse/tls.py, dimse/tls_server.py) with dcmtk's TLS tools (echoscu, storescu, findscu) and pynetdicom
over ``ssl``: the TLS listener beside the plain port, mutual TLS with client certificates mapped to peers, the
BCP 195 profile (no TLS 1.1), a bounded handshake, and outbound TLS to a C-MOVE destination and for
``send_instances``."""

from __future__ import annotations

import contextlib
import io
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

from dicomvault.adapters.remote.dimse_store import PynetdicomStore
from dicomvault.dimse import scu
from dicomvault.dimse.tls import outbound_tls
from dicomvault.domain.errors import Unavailable
from dicomvault.domain.peers import RemotePeer
from dicomvault.ports.forwarding import Outbound
from dicomvault.settings import Settings
from tests.conftest import free_port
from tests.dimse.conftest import (
    Receiver,
    Running,
    dataset_bytes,
    identifier,
    received_bytes,
    run,
    start,
    stored_bytes,
)
from tests.dimse.tls_certs import Pair, Pki, make_pki
from tests.helpers import make_ct


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _tls_settings(pki: Pki, **extra: Any) -> dict[str, Any]:
    return {"dimse_tls_port": free_port(), "dimse_tls_cert": pki.server.cert, "dimse_tls_key": pki.server.key,
            **extra}


def _stop(running: Running) -> None:
    running.server.stop()
    running.archive.close()


def _tls(pki: Pki, client: Pair | None = None, *, ca: Path | None = None,
         maximum: ssl.TLSVersion | None = None) -> tuple[ssl.SSLContext, str]:
    """pynetdicom ``tls_args``: verify the archive with ``ca`` (the test CA), present ``client`` if given."""
    context = ssl.create_default_context(cafile=str(ca or pki.ca))
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    if maximum is not None:
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = maximum
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context, "localhost"


def _echo(port: int, aet: str, tls_args: tuple[ssl.SSLContext, str] | None, timeout: float | None = None) -> bool:
    ae = AE(ae_title=aet)
    ae.add_requested_context(Verification)
    ae.connection_timeout = timeout  # TCP connect + TLS handshake
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMVAULT", tls_args=tls_args)
    if not assoc.is_established:
        return False
    ok = assoc.send_c_echo().Status == 0x0000
    assoc.release()
    return ok


def _dcmtk_tls(pki: Pki, client: Pair) -> list[str]:
    return ["+tls", str(client.key), str(client.cert), "+cf", str(pki.ca)]


@pytest.fixture
def tls_server(tmp_path: Path, pki: Pki) -> Iterator[Running]:
    """TLS without client certificates (server authentication only), no peer restrictions (loopback)."""
    running = start(tmp_path, **_tls_settings(pki))
    yield running
    _stop(running)


def test_dcmtk_tls_tools(tls_server: Running, pki: Pki, tmp_path: Path) -> None:
    port = tls_server.server.tls_port
    assert port is not None and port != tls_server.port
    tls = _dcmtk_tls(pki, pki.other)
    r = run(["echoscu", *tls, "-aec", "DICOMVAULT", "127.0.0.1", str(port)])
    assert r.returncode == 0, r.stdout + r.stderr
    study = generate_uid()
    files = []
    for i in range(3):
        files.append(tmp_path / f"ct{i}.dcm")
        files[-1].write_bytes(make_ct(study=study, seed=i, InstanceNumber=i + 1))
    r = run(["storescu", *tls, "-aec", "DICOMVAULT", "127.0.0.1", str(port), *map(str, files)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert tls_server.archive.index.stats().instances == 3
    assert tls_server.server.lean_associations == 0  # TLS associations are served by pynetdicom
    r = run(["findscu", *tls, "-S", "-aec", "DICOMVAULT", "-k", "QueryRetrieveLevel=STUDY",
             "-k", f"StudyInstanceUID={study}", "-k", "NumberOfStudyRelatedInstances", "127.0.0.1", str(port)])
    assert r.returncode == 0 and "NumberOfStudyRelatedInstances" in r.stdout + r.stderr, r.stdout + r.stderr
    # (dcmtk 3.6.7's getscu and movescu have no TLS option: C-GET over TLS is tested with pynetdicom below.)
    # Plain TCP on the TLS port, and TLS on the plain port, do not associate.
    assert not _echo(port, "PLAIN", None)
    assert run(["echoscu", *tls, "-aec", "DICOMVAULT", "127.0.0.1", str(tls_server.port)]).returncode != 0
    assert _echo(tls_server.port, "PLAIN", None)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_profile_refuses_tls_1_1_and_an_unknown_server(tls_server: Running, pki: Pki) -> None:
    port = tls_server.server.tls_port
    assert port is not None
    assert _echo(port, "PY", _tls(pki))
    assert not _echo(port, "OLD", _tls(pki, maximum=ssl.TLSVersion.TLSv1_1))
    assert not _echo(port, "PY", _tls(pki, ca=pki.rogue_ca))  # the client does not trust the archive's issuer
    assert _echo(port, "PY", _tls(pki))  # and the listener still serves


def test_stalled_handshake_is_bounded_and_blocks_nobody(tmp_path: Path, pki: Pki) -> None:
    running = start(tmp_path, dimse_timeout=1.0, **_tls_settings(pki))
    port = running.server.tls_port
    assert port is not None
    silent = socket.create_connection(("127.0.0.1", port))
    trickle = socket.create_connection(("127.0.0.1", port))
    try:
        # Other clients are served while both hang (the handshake is not in the accept loop; with pynetdicom's
        # own server this echo waited for ever).
        assert _echo(port, "PY", _tls(pki), timeout=5)
        # The trickling client keeps sending a byte of a ClientHello every 0.2 s: the deadline covers the whole
        # handshake, so the archive closes it anyway (a per-read timeout never would).
        hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64)
        trickle.settimeout(0.2)
        closed = False
        for byte in hello:
            try:
                trickle.sendall(bytes([byte]))
                closed = trickle.recv(1) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
            if closed:
                break
        assert closed, "the archive kept a trickling handshake open"
        silent.settimeout(10)
        assert silent.recv(1) == b""  # closed by the archive after dimse_timeout
    finally:
        silent.close()
        trickle.close()
        _stop(running)


# -- mutual TLS -----------------------------------------------------------------------------------------------


@pytest.fixture
def mtls(tmp_path: Path, pki: Pki) -> Iterator[Running]:
    running = start(tmp_path, **_tls_settings(pki, dimse_tls_client_ca=pki.ca), dimse_peers={
        "CT1": {"permissions": ["store"], "tls": True},
        "VIEWER": {"permissions": ["query", "retrieve"], "tls_names": ["viewer.example"]},
    })
    yield running
    _stop(running)


def test_mutual_tls_maps_certificates_to_peers(mtls: Running, pki: Pki, tmp_path: Path) -> None:
    port = mtls.server.tls_port
    assert port is not None
    # CT1 with its own certificate: admitted; dcmtk and pynetdicom.
    assert run(["echoscu", *_dcmtk_tls(pki, pki.ct1), "-aet", "CT1", "-aec", "DICOMVAULT", "127.0.0.1",
                str(port)]).returncode == 0
    path = tmp_path / "ct.dcm"
    path.write_bytes(make_ct())
    r = run(["storescu", *_dcmtk_tls(pki, pki.ct1), "-aet", "CT1", "-aec", "DICOMVAULT", "127.0.0.1", str(port),
             str(path)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert mtls.archive.index.stats().instances == 1
    # No client certificate, or one from another CA: the handshake fails.
    assert not _echo(port, "CT1", _tls(pki))
    assert not _echo(port, "CT1", _tls(pki, pki.rogue_ct1))
    r = run(["echoscu", *_dcmtk_tls(pki, pki.rogue_ct1), "-aet", "CT1", "-aec", "DICOMVAULT", "127.0.0.1",
             str(port)])
    assert r.returncode != 0
    # A valid certificate that names someone else: A-ASSOCIATE-RJ, calling AE title not recognised.
    r = run(["echoscu", *_dcmtk_tls(pki, pki.other), "-aet", "CT1", "-aec", "DICOMVAULT", "127.0.0.1", str(port)])
    assert r.returncode != 0 and "Calling AE Title Not Recognized" in r.stdout + r.stderr, r.stdout + r.stderr
    # VIEWER's certificate carries the name in its rule's tls_names (DNS SAN), not its AE title.
    assert _echo(port, "VIEWER", _tls(pki, pki.viewer))
    assert not _echo(port, "VIEWER", _tls(pki, pki.ct1))
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMVAULT", tls_args=_tls(pki, pki.viewer))
    statuses = [st.Status for st, _ in assoc.send_c_find(identifier("STUDY", StudyInstanceUID=""),
                                                         StudyRootQueryRetrieveInformationModelFind)]
    assert statuses[-1] == 0x0000 and statuses.count(0xFF00) == 1
    assoc.release()
    # CT1's rule says tls: the plain port refuses it.
    r = run(["echoscu", "-aet", "CT1", "-aec", "DICOMVAULT", "127.0.0.1", str(mtls.port)])
    assert r.returncode != 0 and "Calling AE Title Not Recognized" in r.stdout + r.stderr


def test_pynetdicom_c_get_over_mutual_tls(mtls: Running, pki: Pki) -> None:
    study = generate_uid()
    mtls.archive.ingest.ingest(io.BytesIO(make_ct(study=study)))
    got: list[str] = []

    def on_store(event: Any) -> int:
        got.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", mtls.server.tls_port or 0, ae_title="DICOMVAULT",
                         tls_args=_tls(pki, pki.viewer), ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    statuses = [st.Status for st, _ in assoc.send_c_get(identifier("STUDY", StudyInstanceUID=study),
                                                        StudyRootQueryRetrieveInformationModelGet)]
    assoc.release()
    assert statuses[-1] == 0x0000 and len(got) == 1


# -- outbound TLS ---------------------------------------------------------------------------------------------


@pytest.fixture
def tls_receiver(pki: Pki) -> Iterator[Receiver]:
    """A pynetdicom storage SCP on TLS that requires a client certificate from the test CA."""
    rec = Receiver("RECEIVER", free_port())
    lock = threading.Lock()

    def on_store(event: evt.Event) -> int:
        with lock:
            rec.received[str(event.request.AffectedSOPInstanceUID)] = (str(event.context.transfer_syntax),
                                                                       received_bytes(event))
        return 0x0000

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(pki.receiver.cert, pki.receiver.key)
    ae = AE(ae_title=rec.aet)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    server = ae.start_server(("127.0.0.1", rec.port), block=False, ssl_context=context,
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
    yield rec
    server.shutdown()


def test_c_move_and_send_to_a_tls_destination(tmp_path: Path, pki: Pki, tls_receiver: Receiver) -> None:
    running = start(tmp_path, move_destinations={"RECEIVER": f"127.0.0.1:{tls_receiver.port}"},
                    dimse_tls_cert=pki.server.cert, dimse_tls_key=pki.server.key,
                    dimse_peers={"RECEIVER": {"tls": True, "tls_ca": str(pki.ca)},
                                 "MOVESCU": {"permissions": ["retrieve"]}})
    try:
        study = generate_uid()
        sops = [running.archive.ingest.ingest(io.BytesIO(make_ct(study=study, seed=i))).sop_instance_uid
                for i in range(2)]
        r = run(["movescu", "-S", "-aec", "DICOMVAULT", "-aem", "RECEIVER", "-k", "QueryRetrieveLevel=STUDY",
                 "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(running.port)])
        assert r.returncode == 0, r.stdout + r.stderr
        assert sorted(tls_receiver.received) == sorted(sops)
        tls_receiver.received.clear()
        records = running.archive.retrieve.locate(study_uid=study)
        report = scu.send_instances(running.archive, records, aet="RECEIVER", host="127.0.0.1",
                                    port=tls_receiver.port)
        assert report.completed == 2 and sorted(tls_receiver.received) == sorted(sops)
        for sop in sops:  # the stored bytes, unchanged
            assert tls_receiver.received[sop][1] == dataset_bytes(stored_bytes(running.archive, sop))
    finally:
        _stop(running)


def test_outbound_tls_verifies_the_destination(tmp_path: Path, pki: Pki, tls_receiver: Receiver) -> None:
    # The destination's certificate is not issued by the CA configured for it: nothing is sent.
    running = start(tmp_path, move_destinations={"RECEIVER": f"127.0.0.1:{tls_receiver.port}"},
                    dimse_tls_cert=pki.server.cert, dimse_tls_key=pki.server.key,
                    dimse_peers={"RECEIVER": {"tls": True, "tls_ca": str(pki.rogue_ca)},
                                 "MOVESCU": {"permissions": ["retrieve"]}})
    try:
        study = generate_uid()
        running.archive.ingest.ingest(io.BytesIO(make_ct(study=study)))
        r = run(["movescu", "-S", "-aec", "DICOMVAULT", "-aem", "RECEIVER", "-k", "QueryRetrieveLevel=STUDY",
                 "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(running.port)])
        assert tls_receiver.received == {}, r.stdout + r.stderr
    finally:
        _stop(running)


@pytest.mark.parametrize("trusted", [True, False])
def test_routing_sends_over_tls_to_a_verified_destination_only(tmp_path: Path, pki: Pki, tls_receiver: Receiver,
                                                               trusted: bool) -> None:
    """Routing's lean C-STORE sender (``adapters/remote/store_sender``) wraps its socket like pynetdicom's
    ``tls_args``: the stored bytes arrive unchanged; a destination whose certificate does not verify is
    unavailable (the delivery job retries)."""
    settings = Settings.load(data_dir=tmp_path / "vault", dimse_tls_cert=pki.server.cert,
                             dimse_tls_key=pki.server.key,
                             dimse_peers={"RECEIVER": {"tls": True,
                                                       "tls_ca": str(pki.ca if trusted else pki.rogue_ca)}})
    path = tmp_path / "ct.dcm"
    ds = pydicom.dcmread(io.BytesIO(make_ct()))
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian  # what the receiver prefers: sent as stored
    ds.save_as(path, enforce_file_format=True)
    item = Outbound(str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.file_meta.TransferSyntaxUID))

    class Files:
        def choose(self, item: Outbound, accepted: set[str]) -> str | None:
            return item.transfer_syntax_uid if item.transfer_syntax_uid in accepted else None

        @contextlib.contextmanager
        def file(self, item: Outbound, transfer_syntax: str) -> Iterator[Path]:
            yield path

    store = PynetdicomStore("DICOMVAULT", timeout=10, tls=lambda aet, host: outbound_tls(settings, aet, host))
    peer = RemotePeer(aet="RECEIVER", host="127.0.0.1", port=tls_receiver.port)
    if not trusted:
        with pytest.raises(Unavailable):
            store.send(peer, [item], Files())
        assert tls_receiver.received == {}
        return
    report = store.send(peer, [item], Files())
    assert list(report.sent) == [item.sop_uid], report.failed
    assert tls_receiver.received[item.sop_uid][1] == dataset_bytes(path.read_bytes())
