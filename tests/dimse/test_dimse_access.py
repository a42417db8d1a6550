"""DIMSE access control (dimse/access.py, services/peer_access.py) against real requestors: the called AE title
(defect 13), known peers tied to addresses with store / query / retrieve permissions, anonymous DIMSE, and DICOM
User Identity Negotiation with API tokens and OIDC JWTs, on the lean storage path and on pynetdicom's path alike.

A-ASSOCIATE-RJ triples (result, source, diagnostic): (1, 1, 7) called AE title not recognised, (1, 1, 3) calling AE
title not recognised, (1, 2, 1) user identity refused (PS3.7 D.3.3.7), (2, 1, 1) the check could not be made.
A refused operation: status 0x0124."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from dicomvault.bootstrap import build_archive
from dicomvault.dimse.server import DimseServer
from dicomvault.domain.errors import ConfigurationError, Unavailable
from dicomvault.settings import Settings
from tests.conftest import free_port
from tests.dicomweb.test_dw_auth import Issuer
from tests.dimse.conftest import Receiver, Running, identifier, run, start
from tests.dimse.dimse_peer import LEAN, PYNETDICOM, associate, identity
from tests.helpers import make_ct

CALLED_UNKNOWN = (1, 1, 7)
CALLING_UNKNOWN = (1, 1, 3)
IDENTITY_REFUSED = (1, 2, 1)
TRANSIENT = (2, 1, 1)
NOT_AUTHORIZED = 0x0124


def _stop(running: Running) -> None:
    running.server.stop()
    running.archive.close()


@pytest.fixture
def restricted(tmp_path: Path, receiver: Receiver) -> Iterator[Running]:
    """CT1 may store, from 127.0.0.2 only; VIEWER may query and retrieve, from 127.0.0.1; LEGACY (the old allow-list)
    may do everything from anywhere; RECEIVER is a C-MOVE destination that may do nothing itself."""
    running = start(tmp_path, move_destinations={receiver.aet: f"127.0.0.1:{receiver.port}"},
                    allowed_calling_aets=["LEGACY"],
                    dimse_peers={"CT1": {"hosts": ["127.0.0.2"], "permissions": ["store"]},
                                 "VIEWER": {"hosts": ["127.0.0.0/30"], "permissions": ["query", "retrieve"]},
                                 receiver.aet: {}})
    yield running
    _stop(running)


def _requestor(aet: str, *, get: bool = False) -> AE:
    ae = AE(ae_title=aet)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    if get:
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    return ae


def _associate(ae: AE, port: int, source: str = "127.0.0.1", **kwargs: Any) -> Association:
    roles = [build_role(CTImageStorage, scp_role=True)] if kwargs.pop("get", False) else []
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMVAULT", bind_address=(source, 0),
                         ext_neg=roles + kwargs.pop("ext_neg", []), evt_handlers=kwargs.pop("evt_handlers", None))
    assert assoc.is_established
    return assoc


def _find(assoc: Association, study: str) -> list[int]:
    return [int(st.Status) for st, _ in assoc.send_c_find(identifier("STUDY", StudyInstanceUID=study),
                                                         StudyRootQueryRetrieveInformationModelFind) if st]


def _store(assoc: Association, **kw: Any) -> int:
    return int(assoc.send_c_store(pydicom.dcmread(io.BytesIO(make_ct(**kw)))).Status)


# -- called AE title (defect 13) ----------------------------------------------------------------------------


def test_wrong_called_aet_is_refused_on_both_paths(tmp_path: Path) -> None:
    running = start(tmp_path)
    try:
        r = run(["echoscu", "-aec", "WRONGAE", "127.0.0.1", str(running.port)])
        assert r.returncode != 0 and "Called AE Title Not Recognized" in r.stdout + r.stderr, r.stdout + r.stderr
        r = run(["findscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-aec", "WRONGAE", "127.0.0.1", str(running.port)])
        assert r.returncode != 0 and "Called AE Title Not Recognized" in r.stdout + r.stderr, r.stdout + r.stderr
        for syntaxes in (LEAN, PYNETDICOM):
            assert associate(running.port, "ANY", called="WRONGAE", abstract_syntaxes=syntaxes).rejected == \
                CALLED_UNKNOWN
            assert associate(running.port, "ANY", abstract_syntaxes=syntaxes).accepted
        assert run(["echoscu", "-aec", "DICOMVAULT", "127.0.0.1", str(running.port)]).returncode == 0
        assert running.server.lean_associations >= 2  # the lean path answered its share
    finally:
        _stop(running)


def test_called_aet_check_can_be_turned_off(tmp_path: Path) -> None:
    running = start(tmp_path, dimse_check_called_aet=False)
    try:
        assert run(["echoscu", "-aec", "WRONGAE", "127.0.0.1", str(running.port)]).returncode == 0
        assert associate(running.port, "ANY", called="GARBAGE", abstract_syntaxes=PYNETDICOM).accepted
    finally:
        _stop(running)


# -- known peers: addresses and permissions -----------------------------------------------------------------


def test_peer_is_tied_to_its_addresses_on_both_paths(restricted: Running) -> None:
    port = restricted.port
    for syntaxes in (LEAN, PYNETDICOM):
        assert associate(port, "CT1", source="127.0.0.1", abstract_syntaxes=syntaxes).rejected == CALLING_UNKNOWN
        assert associate(port, "CT1", source="127.0.0.2", abstract_syntaxes=syntaxes).accepted
        assert associate(port, "VIEWER", source="127.0.0.3", abstract_syntaxes=syntaxes).accepted  # in its /30
        assert associate(port, "VIEWER", source="127.0.0.4", abstract_syntaxes=syntaxes).rejected == \
            CALLING_UNKNOWN
        assert associate(port, "STRANGER", abstract_syntaxes=syntaxes).rejected == CALLING_UNKNOWN
        assert associate(port, "LEGACY", source="127.0.0.9", abstract_syntaxes=syntaxes).accepted
    # dcmtk sends from 127.0.0.1: CT1 is refused there, an unknown AE title anywhere
    r = run(["echoscu", "-aet", "CT1", "-aec", "DICOMVAULT", "127.0.0.1", str(port)])
    assert r.returncode != 0 and "Calling AE Title Not Recognized" in r.stdout + r.stderr


def test_store_permission_on_both_paths(restricted: Running, tmp_path: Path) -> None:
    archive = restricted.archive
    # VIEWER may not store. Lean path (storescu proposes storage only): the C-STORE is refused with 0x0124 and
    # nothing is stored; the association itself was accepted (C-ECHO works for any admitted peer).
    path = tmp_path / "ct.dcm"
    path.write_bytes(make_ct())
    r = run(["storescu", "-v", "-aet", "VIEWER", "-aec", "DICOMVAULT", "127.0.0.1", str(restricted.port), str(path)])
    assert r.returncode != 0 and "Status: 0x124" in r.stdout + r.stderr, r.stdout + r.stderr  # dcmtk 3.6.7's words
    assert run(["echoscu", "-aet", "VIEWER", "-aec", "DICOMVAULT", "127.0.0.1", str(restricted.port)]).returncode == 0
    assert restricted.server.lean_associations >= 2
    # pynetdicom's path (a Q/R context in the same association): the same status, with the reason.
    assoc = _associate(_requestor("VIEWER"), restricted.port)
    rsp = assoc.send_c_store(pydicom.dcmread(io.BytesIO(make_ct())))
    assert rsp.Status == NOT_AUTHORIZED and "store" in rsp.ErrorComment
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    assert archive.index.stats().instances == 0
    # CT1 may store, on both paths.
    ct1 = AE(ae_title="CT1")
    ct1.add_requested_context(CTImageStorage)
    lean = _associate(ct1, restricted.port, source="127.0.0.2")
    assert _store(lean) == 0x0000
    lean.release()
    mixed = _associate(_requestor("CT1"), restricted.port, source="127.0.0.2")
    assert _store(mixed) == 0x0000
    mixed.release()
    assert archive.index.stats().instances == 2


def test_query_and_retrieve_permissions(restricted: Running, receiver: Receiver) -> None:
    study = generate_uid()
    restricted.archive.ingest.ingest(io.BytesIO(make_ct(study=study)))
    # CT1 may store only: C-FIND, C-GET and C-MOVE are refused with 0x0124; no sub-association is opened.
    ct1 = _associate(_requestor("CT1", get=True), restricted.port, source="127.0.0.2", get=True)
    assert _find(ct1, study) == [NOT_AUTHORIZED]
    [(st, _)] = list(ct1.send_c_get(identifier("STUDY", StudyInstanceUID=study),
                                    StudyRootQueryRetrieveInformationModelGet))
    assert st.Status == NOT_AUTHORIZED and "retrieve" in st.ErrorComment
    [(st, _)] = list(ct1.send_c_move(identifier("STUDY", StudyInstanceUID=study), receiver.aet,
                                     StudyRootQueryRetrieveInformationModelMove))
    assert st.Status == NOT_AUTHORIZED
    ct1.release()
    assert receiver.received == {}
    # VIEWER may query and retrieve.
    got: list[str] = []

    def on_store(event: Any) -> int:
        got.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    viewer = _associate(_requestor("VIEWER", get=True), restricted.port, get=True,
                        evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert _find(viewer, study) == [0xFF00, 0x0000]
    statuses = [int(st.Status) for st, _ in viewer.send_c_get(identifier("STUDY", StudyInstanceUID=study),
                                                              StudyRootQueryRetrieveInformationModelGet)]
    assert statuses[-1] == 0x0000 and len(got) == 1
    move = viewer.send_c_move(identifier("STUDY", StudyInstanceUID=study), receiver.aet,
                              StudyRootQueryRetrieveInformationModelMove)
    statuses = [int(st.Status) for st, _ in move]
    assert statuses[-1] == 0x0000 and len(receiver.received) == 1
    viewer.release()
    # dcmtk: findscu as CT1 cannot run from 127.0.0.1 at all; as VIEWER it can.
    r = run(["findscu", "-S", "-aet", "VIEWER", "-aec", "DICOMVAULT", "-k", "QueryRetrieveLevel=STUDY",
             "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(restricted.port)])
    assert r.returncode == 0, r.stdout + r.stderr


def test_anonymous_dimse_with_limited_permissions(tmp_path: Path) -> None:
    running = start(tmp_path, dimse_allow_anonymous=True, dimse_anonymous_permissions=["store"],
                    dimse_peers={"VIEWER": {"permissions": ["query"]}})
    try:
        assoc = _associate(_requestor("ANYMODALITY"), running.port)
        assert _store(assoc) == 0x0000
        assert _find(assoc, generate_uid()) == [NOT_AUTHORIZED]
        assoc.release()
        viewer = _associate(_requestor("VIEWER"), running.port)  # a known peer gets its rule, not anonymous's
        assert _find(viewer, generate_uid()) == [0x0000]
        rsp = viewer.send_c_store(pydicom.dcmread(io.BytesIO(make_ct())))
        assert rsp.Status == NOT_AUTHORIZED
        viewer.release()
    finally:
        _stop(running)


# -- user identity negotiation --------------------------------------------------------------------------------


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    i = Issuer()
    yield i
    i.close()


def test_user_identity_with_api_tokens(restricted: Running) -> None:
    tokens = restricted.archive.tokens
    assert tokens is not None
    _, reader = tokens.create("pacs-reader", ["read"])
    _, writer = tokens.create("modality-ct2", ["write"])
    port = restricted.port
    # An unknown AE title with a valid token is admitted, with the token's scopes; a positive response is sent.
    for syntaxes in (LEAN, PYNETDICOM):  # with a user identity both go through pynetdicom
        answer = associate(port, "WS1", abstract_syntaxes=syntaxes,
                           user=identity(2, b"pacs-reader", reader.encode()))
        assert answer.accepted and answer.identity_response
        assert associate(port, "WS1", abstract_syntaxes=syntaxes,
                         user=identity(2, b"pacs-reader", b"dv_not-a-token")).rejected == IDENTITY_REFUSED
    # Username only (type 1) cannot be verified: ignored, so WS1 is still an unknown AE title.
    assert associate(port, "WS1", user=identity(1, b"pacs-reader")).rejected == CALLING_UNKNOWN
    # An invalid credential refuses even a known peer.
    assert associate(port, "LEGACY", user=identity(2, b"x", b"dv_wrong")).rejected == IDENTITY_REFUSED
    # read → query + retrieve, not store
    ws1 = _associate(_requestor("WS1"), port, ext_neg=[identity(2, b"anything", reader.encode())])
    assert _find(ws1, generate_uid()) == [0x0000]
    assert _store(ws1) == NOT_AUTHORIZED
    ws1.release()
    # A known peer's permissions and its identity's add up: CT1 (store) + read token → store and query.
    ct1 = _associate(_requestor("CT1"), port, source="127.0.0.2", ext_neg=[identity(2, b"ct1", reader.encode())])
    assert _store(ct1) == 0x0000 and _find(ct1, generate_uid()) == [0x0000]
    ct1.release()
    # dcmtk storescu with --user/--password (write token): stored through pynetdicom's path.
    revoked_later = writer
    r = run(["storescu", "-aet", "CT2", "-aec", "DICOMVAULT", "--user", "modality-ct2", "--password", writer,
             "--pos-response", "127.0.0.1", str(port), str(_ct_file(restricted))])
    assert r.returncode == 0 and "Refused" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert restricted.archive.index.stats().instances == 2  # CT1's and CT2's; WS1's was refused
    tokens.revoke("modality-ct2")
    assert associate(port, "CT2", user=identity(2, b"modality-ct2", revoked_later.encode())).rejected == \
        IDENTITY_REFUSED


def _ct_file(running: Running) -> Path:
    path = running.settings.data_dir / "to-send.dcm"
    path.write_bytes(make_ct())
    return path


def test_user_identity_with_oidc_jwt(tmp_path: Path, issuer: Issuer) -> None:
    running = start(tmp_path, dimse_peers={"CT1": {"permissions": ["store"]}}, oidc_issuer=issuer.url,
                    oidc_audience="dicomvault")
    try:
        reader = issuer.token(scope="openid dicomvault.read")
        answer = associate(running.port, "WS1", user=identity(5, reader.encode()))  # type 5: JWT
        assert answer.accepted and answer.identity_response
        # the same JWT as the passcode of username + passcode
        assert associate(running.port, "WS1", user=identity(2, b"alice", reader.encode())).accepted
        ws1 = _associate(_requestor("WS1"), running.port, ext_neg=[identity(5, reader.encode())])
        assert _find(ws1, generate_uid()) == [0x0000] and _store(ws1) == NOT_AUTHORIZED
        ws1.release()
        for bad in (issuer.token(scope="dicomvault.read", aud="someone-else"),  # another application's token
                    issuer.token(scope="dicomvault.read", exp=1),  # expired
                    reader[:-4] + "AAAA"):  # signature does not verify
            assert associate(running.port, "WS1", user=identity(5, bad.encode())).rejected == IDENTITY_REFUSED
        jwt_file = tmp_path / "token.jwt"
        jwt_file.write_text(issuer.token(scope="dicomvault.write"))
        r = run(["storescu", "-aet", "WS2", "-aec", "DICOMVAULT", "--user", "alice", "--jwt", str(jwt_file),
                 "127.0.0.1", str(running.port), str(_ct_file(running))])
        assert r.returncode == 0 and "Refused" not in r.stdout + r.stderr, r.stdout + r.stderr
        assert running.archive.index.stats().instances == 1  # WS2's (write JWT); WS1's (read) was refused
    finally:
        _stop(running)


# -- start-up -----------------------------------------------------------------------------------------------


def _server(tmp_path: Path, **overrides: Any) -> DimseServer:
    archive = build_archive(Settings.load(data_dir=tmp_path / "v", dimse_port=free_port(), **overrides))
    try:
        return DimseServer(archive)
    finally:
        archive.close()


def test_public_address_needs_restricted_calling_aets(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="non-loopback"):
        _server(tmp_path, host="0.0.0.0")
    _server(tmp_path, host="0.0.0.0", allowed_calling_aets=["PACS"])
    _server(tmp_path, host="10.1.2.3", dimse_peers={"CT1": {"permissions": ["store"]}})
    _server(tmp_path, host="0.0.0.0", dimse_allow_anonymous=True)


def test_invalid_peer_settings_are_refused_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        Settings.load(data_dir=tmp_path, dimse_peers={"CT1": {"hosts": ["ct1.example"]}})
    with pytest.raises(ValueError, match="permissions"):
        Settings.load(data_dir=tmp_path, dimse_peers={"CT1": {"permissions": ["delete"]}})
    with pytest.raises(ValueError, match="host"):
        Settings.load(data_dir=tmp_path, dimse_peers={"CT1": {"host": "10.1.2.3"}})  # misspelt key
    with pytest.raises(ValueError, match="AE title"):
        Settings.load(data_dir=tmp_path, dimse_peers={"A-TITLE-LONGER-THAN-16": {}})
    with pytest.raises(ConfigurationError, match="both"):
        _server(tmp_path, allowed_calling_aets=["CT1"], dimse_peers={"CT1": {"permissions": ["store"]}})
    with pytest.raises(ConfigurationError, match="dimse_tls_client_ca"):
        _server(tmp_path, dimse_peers={"CT1": {"tls_names": ["ct1.example"]}})


def test_access_check_fails_closed(restricted: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    """A check that cannot be made (here: the index that holds the API tokens is down) refuses the association,
    transiently, on both paths, and the archive keeps serving everyone else."""
    tokens = restricted.archive.tokens
    assert tokens is not None
    _, secret = tokens.create("pacs-reader", ["read"])

    def index_down(*_args: object) -> None:
        raise Unavailable("index database unavailable")

    monkeypatch.setattr(tokens.store, "by_hash", index_down)
    assert associate(restricted.port, "WS1", user=identity(2, b"u", secret.encode())).rejected == TRANSIENT
    monkeypatch.setattr(restricted.server.access.policy.directory, "peer", index_down)
    for syntaxes in (LEAN, PYNETDICOM):
        assert associate(restricted.port, "LEGACY", abstract_syntaxes=syntaxes).rejected == TRANSIENT
    monkeypatch.undo()
    for syntaxes in (LEAN, PYNETDICOM):
        assert associate(restricted.port, "LEGACY", abstract_syntaxes=syntaxes).accepted
