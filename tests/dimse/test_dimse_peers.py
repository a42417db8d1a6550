"""Registered peers (issue #12 item 1) govern DIMSE on a running server without a restart: a peer added to the
index becomes a C-MOVE destination and gets its permissions on both the lean storage path and pynetdicom's; once
any peer is known, unknown calling AE titles are refused; removing it takes effect within a second."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

from dicomvault.domain.peers import Permission, RemotePeer
from dicomvault.services.peers import CACHE_SECONDS
from tests.dimse.conftest import Receiver, Running, identifier, start
from tests.dimse.dimse_peer import LEAN, PYNETDICOM, associate
from tests.helpers import make_ct

CALLING_UNKNOWN = (1, 1, 3)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Running]:
    running = start(tmp_path)
    yield running
    running.server.stop()
    running.archive.close()


def _settle() -> None:
    time.sleep(CACHE_SECONDS + 0.2)  # registry reads are cached for a second per process


def test_a_registered_peer_is_a_move_destination_and_governs_access(server: Running, receiver: Receiver) -> None:
    peers = server.archive.peers
    assert peers is not None
    study = generate_uid()
    server.archive.ingest.ingest(io.BytesIO(make_ct(study=study)))
    assert associate(server.port, "ANYONE", abstract_syntaxes=LEAN).accepted, "loopback, no peers: open"

    peers.add(RemotePeer(aet="VIEWER", permissions=frozenset({Permission.QUERY, Permission.RETRIEVE})))
    peers.add(RemotePeer(aet=receiver.aet, host="127.0.0.1", port=receiver.port, move_destination=True))
    _settle()
    for syntaxes in (LEAN, PYNETDICOM):
        assert associate(server.port, "ANYONE", abstract_syntaxes=syntaxes).rejected == CALLING_UNKNOWN
        assert associate(server.port, "VIEWER", abstract_syntaxes=syntaxes).accepted

    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", server.port, ae_title="DICOMVAULT")
    assert assoc.is_established
    statuses = [int(st.Status) for st, _ in assoc.send_c_move(identifier("STUDY", StudyInstanceUID=study),
                                                              receiver.aet, StudyRootQueryRetrieveInformationModelMove)]
    assoc.release()
    assert statuses[-1] == 0x0000 and len(receiver.received) == 1

    peers.remove("VIEWER")
    peers.remove(receiver.aet)
    _settle()
    assert associate(server.port, "VIEWER", abstract_syntaxes=LEAN).accepted, "no peers left: loopback is open again"
