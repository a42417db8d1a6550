"""The DIMSE application entity: presentation contexts, handlers, start and stop.

Acceptor contexts: Verification; every storage SOP class pynetdicom knows, in every transfer syntax it knows
(uncompressed, deflated, JPEG family, JPEG-LS, JPEG 2000, HTJ2K, RLE, MPEG…), with the SCP/SCU role selection a
C-GET requestor needs; Patient Root and Study Root FIND, GET and MOVE.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from dicomvault.dimse import handlers
from dicomvault.services.archive import Archive

log = logging.getLogger(__name__)

#: How long pynetdicom's network reactor sleeps when a connection is idle. Its default (1 ms) puts up to a
#: millisecond of latency on every PDU exchange; 0.2 ms costs little CPU and is measurably faster.
REACTOR_IDLE_DELAY = 0.0002


def build_ae(archive: Archive) -> AE:
    s = archive.settings
    ae = AE(ae_title=s.aet)
    ae.maximum_pdu_size = s.max_pdu
    ae.maximum_associations = s.max_associations
    ae.acse_timeout = s.dimse_timeout
    ae.dimse_timeout = s.dimse_timeout
    ae.network_timeout = s.dimse_timeout
    if s.allowed_calling_aets:
        ae.require_calling_aet = list(s.allowed_calling_aets)
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    for cx in AllStoragePresentationContexts:
        # scp_role: we store what peers send; scu_role=True lets a C-GET requestor act as storage SCP.
        if cx.abstract_syntax is not None:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES, scp_role=True, scu_role=True)
    for model in (
        PatientRootQueryRetrieveInformationModelFind,
        PatientRootQueryRetrieveInformationModelGet,
        PatientRootQueryRetrieveInformationModelMove,
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelGet,
        StudyRootQueryRetrieveInformationModelMove,
    ):
        ae.add_supported_context(model, ALL_TRANSFER_SYNTAXES)
    # Outbound C-STORE sub-associations of C-MOVE propose their own contexts (see retrieval.py).
    return ae


def _tune_connection(event: Any) -> None:
    """Disable Nagle on each accepted connection (responses are small) and shorten the idle poll."""
    assoc = event.assoc
    try:
        assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):
        pass
    assoc.dul._run_loop_delay = REACTOR_IDLE_DELAY


class DimseServer:
    """Runs the archive's DIMSE service in background threads (one per association)."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.ae = build_ae(archive)
        self._server: ThreadedAssociationServer | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            return self.archive.settings.dimse_port
        return int(self._server.server_address[1])

    def start(self) -> None:
        s = self.archive.settings
        bind: list[tuple[Any, Any, list[Any]]] = [
            (evt.EVT_C_ECHO, handlers.handle_echo, [self.archive]),
            (evt.EVT_C_STORE, handlers.handle_store, [self.archive]),
            (evt.EVT_C_FIND, handlers.handle_find, [self.archive]),
            (evt.EVT_C_GET, handlers.handle_get, [self.archive]),
            (evt.EVT_C_MOVE, handlers.handle_move, [self.archive]),
        ]
        handlers_: list[Any] = [*bind, (evt.EVT_CONN_OPEN, _tune_connection)]
        self._server = self.ae.start_server((s.host, s.dimse_port), block=False, evt_handlers=handlers_)
        log.info("DIMSE listening on %s:%d as %s", s.host, self.port, s.aet)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
