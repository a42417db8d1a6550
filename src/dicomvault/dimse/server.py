"""The DIMSE application entity: presentation contexts, handlers, start and stop.

Acceptor contexts: Verification; every storage SOP class pynetdicom knows, in every transfer syntax it knows
(uncompressed, deflated, JPEG family, JPEG-LS, JPEG 2000, HTJ2K, RLE, MPEG…), with the SCP/SCU role selection a
C-GET requestor needs; Patient Root and Study Root FIND, GET and MOVE.

Associations that propose only Verification and storage contexts are served by the lean receiver in
``fast_store``/``store_link`` (same contexts, limits and statuses; measured ~4 ms -> ~1 ms receive overhead per
512 KiB object); everything else by pynetdicom. ``settings.dimse_fast_store = false``: everything by pynetdicom.
Both paths apply the same access policy (``access``); a DICOM TLS port (``tls``) is served by pynetdicom.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any, cast

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from dicomvault.dimse import handlers, tls, tls_server
from dicomvault.dimse.access import DimseAccess
from dicomvault.dimse.fast_store import StorageRoutingServer
from dicomvault.services.archive import Archive

log = logging.getLogger(__name__)

#: How long pynetdicom's network reactor sleeps when a connection is idle. Its default (1 ms) puts up to a
#: millisecond of latency on every PDU exchange; 0.2 ms costs little CPU and is measurably faster.
REACTOR_IDLE_DELAY = 0.0002
#: Spool received data sets to a temporary file as they arrive (memory bounded whatever the object size) instead
#: of keeping each in memory until it is stored. Off: measured ~10 % fewer 512 KB CT images per second with it on
#: (pynetdicom creates, flushes per PDV and deletes a temporary file per object). Both paths keep the exact bytes.
RECEIVE_TO_FILE = False

#: When a peer proposes several syntaxes in one context, pynetdicom accepts the first of *ours* that it proposed.
#: Uncompressed first (a peer never has to compress for us, so never lossily), then lossless, then the rest.
_PREFERRED = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old modalities)
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
)
TRANSFER_SYNTAXES: list[str] = [*_PREFERRED, *(str(ts) for ts in ALL_TRANSFER_SYNTAXES if ts not in _PREFERRED)]

QR_MODELS = (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)


def build_ae(archive: Archive) -> AE:
    """The acceptor AE with every context and the settings' limits and timeouts."""
    s = archive.settings
    ae = AE(ae_title=s.aet)
    ae.maximum_pdu_size = s.max_pdu
    ae.maximum_associations = s.max_associations
    ae.acse_timeout = s.dimse_timeout
    ae.dimse_timeout = s.dimse_timeout
    ae.network_timeout = s.dimse_timeout
    # Calling and called AE titles are checked by the access policy (access.py), on both receive paths.
    uncompressed = TRANSFER_SYNTAXES[:4]  # and deflated: for Verification and Q/R identifiers
    ae.add_supported_context(Verification, uncompressed)
    for cx in AllStoragePresentationContexts:
        # scp_role: we store what peers send; scu_role=True lets a C-GET requestor act as storage SCP.
        if cx.abstract_syntax is not None:
            ae.add_supported_context(cx.abstract_syntax, TRANSFER_SYNTAXES, scp_role=True, scu_role=True)
    for model in QR_MODELS:
        ae.add_supported_context(model, uncompressed)
    # Outbound C-STORE sub-associations of C-MOVE propose their own contexts (see scu.py).
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
        """Raises ``ConfigurationError`` for unsafe or inconsistent access or TLS settings (no port opened yet)."""
        self.archive = archive
        self.ae = build_ae(archive)
        self.access = DimseAccess.from_archive(archive)
        self._tls_context = tls.server_context(archive.settings)
        self._server: StorageRoutingServer | None = None
        self._tls_server: tls_server.TlsAssociationServer | None = None

    @property
    def port(self) -> int:
        """The port listened on (the bound one once started, so settings.dimse_port 0 works too)."""
        if self._server is None:
            return self.archive.settings.dimse_port
        return int(self._server.server_address[1])

    @property
    def tls_port(self) -> int | None:
        """The DICOM TLS port listened on (the bound one once started), None without a TLS listener."""
        if self._tls_server is None:
            return self.archive.settings.dimse_tls_port
        return int(self._tls_server.server_address[1])

    @property
    def lean_associations(self) -> int:
        """Associations served by the lean storage path (``fast_store``) since start; 0 when it is off."""
        fast = self._server.fast if self._server is not None else None
        return fast.served if fast is not None else 0

    def start(self) -> None:
        """Listen on settings.host:dimse_port in background threads (returns at once)."""
        s = self.archive.settings
        # Process-wide pynetdicom switch; every DicomVault storage SCP wants it (see received.py).
        _config.STORE_RECV_CHUNKED_DATASET = RECEIVE_TO_FILE
        bind: list[Any] = [
            (evt.EVT_C_ECHO, handlers.handle_echo, [self.archive]),
            (evt.EVT_C_STORE, handlers.handle_store, [self.archive]),
            (evt.EVT_C_FIND, handlers.handle_find, [self.archive]),
            (evt.EVT_C_GET, handlers.handle_get, [self.archive]),
            (evt.EVT_C_MOVE, handlers.handle_move, [self.archive]),
            (evt.EVT_CONN_OPEN, _tune_connection),
            *self.access.handlers(),
        ]
        # pynetdicom's start_server, with our subclass: storage-only associations take the lean path (fast_store).
        server = cast(StorageRoutingServer, self.ae.make_server(
            (s.host, s.dimse_port), evt_handlers=bind, server_class=StorageRoutingServer))
        if s.dimse_fast_store:
            server.enable_fast_store(self.archive, self.access)
        thread = threading.Thread(target=server.serve_forever, name="DimseAcceptor", daemon=True)
        thread.start()
        self.ae._servers.append(server)
        self._server = server
        log.info("DIMSE listening on %s:%d as %s", s.host, self.port, s.aet)
        if self._tls_context is not None:
            self._tls_server = tls_server.start_listener(self.ae, s, self._tls_context, bind)

    def stop(self) -> None:
        if self._tls_server is not None:
            self._tls_server.shutdown()
            self._tls_server = None
        if self._server is not None:
            self._server.shutdown()
            self._server = None

