"""The DIMSE application entity: presentation contexts, handlers, start and stop.

Acceptor contexts: Verification; every storage SOP class pynetdicom knows, in every transfer syntax it knows
(uncompressed, deflated, JPEG family, JPEG-LS, JPEG 2000, HTJ2K, RLE, MPEG…), with the SCP/SCU role selection a
C-GET requestor needs (in those it proposes the SCP role for, its own syntax order counts: ``get_contexts``);
Patient Root and Study Root FIND, GET and MOVE.

Associations that propose only Verification and storage contexts are served by the lean receiver in
``fast_store``/``store_link`` (same contexts, limits and statuses; measured ~4 ms -> ~1 ms receive overhead per
512 KiB object); everything else by pynetdicom. ``settings.dimse_fast_store = false``: everything by pynetdicom.
Either way every connection passes the gate and the deadlines of ``connections`` (issue #9), both paths apply the
same access policy (``access``), and ``stop`` is graceful: no new connection, idle ones closed at once, messages in
flight given ``dimse_shutdown_grace``. A DICOM TLS port (``tls``, ``dimse_tls_port``) is one more listener behind
the same gate, served by pynetdicom after a handshake bounded by ARTIM in the connection's own thread.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
from typing import Any, cast

from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from dicomvault.dicom.commitment import PUSH_MODEL
from dicomvault.dimse import commitment, get_contexts, handlers, quiet, tls
from dicomvault.dimse.access import DimseAccess
from dicomvault.dimse.connections import ConnectionGate, Limits, per_process
from dicomvault.dimse.fast_store import StorageRoutingServer
from dicomvault.dimse.move import ArchiveAE
from dicomvault.dimse.pynetdicom_guard import on_message, serving
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


def build_ae(archive: Archive, processes: int = 1) -> ArchiveAE:
    """The acceptor AE with every context and the settings' limits and timeouts (``max_associations``: this
    process's share when ``processes`` serve one port, see ``connections.per_process``).

    pynetdicom's timers (see ``pynetdicom_guard`` for what they do): ``acse_timeout`` is ARTIM (waiting for the
    A-ASSOCIATE-RQ, the AC of a C-MOVE sub-association, the peer's close after a reject or release);
    ``dimse_timeout`` bounds the wait for a peer's DIMSE reply (C-GET and C-MOVE sub-operations);
    ``network_timeout`` stays on for the associations we request (C-MOVE) and is switched off for the ones we
    accept, whose idle timeout is ours; ``connection_timeout`` bounds a TCP connect to a C-MOVE destination."""
    s = archive.settings
    ae = ArchiveAE(ae_title=s.aet)
    ae.maximum_pdu_size = s.max_pdu
    ae.maximum_associations = per_process(s.max_associations, processes)
    ae.acse_timeout = s.dimse_artim_timeout
    ae.dimse_timeout = s.dimse_timeout
    ae.network_timeout = s.dimse_timeout
    ae.connection_timeout = s.dimse_artim_timeout
    # Calling and called AE titles are checked by the access policy (access.py), on both receive paths.
    uncompressed = TRANSFER_SYNTAXES[:4]  # and deflated: for Verification and Q/R identifiers
    ae.add_supported_context(Verification, uncompressed)
    for cx in AllStoragePresentationContexts:
        # scp_role: we store what peers send; scu_role=True lets a C-GET requestor act as storage SCP.
        if cx.abstract_syntax is not None:
            ae.add_supported_context(cx.abstract_syntax, TRANSFER_SYNTAXES, scp_role=True, scu_role=True)
    for model in QR_MODELS:
        ae.add_supported_context(model, uncompressed)
    # Storage commitment: modalities ask us (we are SCP); routing destinations report to us on an association they
    # open, proposing the SCP role for themselves (``commitment``)
    ae.add_supported_context(PUSH_MODEL, uncompressed, scu_role=True, scp_role=True)
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
    """Runs the archive's DIMSE service in background threads (one per connection)."""

    def __init__(self, archive: Archive, *, processes: int = 1) -> None:
        """Raises ``ConfigurationError`` for unsafe or inconsistent access or TLS settings (no port opened yet).

        ``processes``: how many processes serve the same port (``dimse_workers``); the connection and association
        caps of this one are its share of the settings' totals."""
        self.archive = archive
        if archive.routing is not None:
            archive.routing.check_destinations()  # a route to an unknown peer refuses the start-up
        self.ae = build_ae(archive, processes)
        self.access = DimseAccess.from_archive(archive)
        self._tls_context = tls.server_context(archive.settings)
        #: every connection of this server, on every listener, is admitted or refused here
        self.gate = ConnectionGate(Limits.from_settings(archive.settings, processes))
        self._listeners: list[StorageRoutingServer] = []
        self._stop_lock = threading.Lock()

    @property
    def _server(self) -> StorageRoutingServer | None:
        """The plain listener (the first one)."""
        return self._listeners[0] if self._listeners else None

    @property
    def port(self) -> int:
        """The port listened on (the bound one once started, so settings.dimse_port 0 works too)."""
        if self._server is None:
            return self.archive.settings.dimse_port
        return int(self._server.server_address[1])

    @property
    def tls_port(self) -> int | None:
        """The DICOM TLS port listened on (the bound one once started), None without a TLS listener."""
        listener = next((x for x in self._listeners if x.ssl_context is not None), None)
        if listener is None:
            return self.archive.settings.dimse_tls_port
        return int(listener.server_address[1])

    @property
    def lean_associations(self) -> int:
        """Associations served by the lean storage path (``fast_store``) since start; 0 when it is off."""
        return sum(listener.fast.served for listener in self._listeners if listener.fast is not None)

    @property
    def listening_socket(self) -> socket.socket:
        """The plain listener's bound, listening socket (handed to DIMSE worker processes); only once started."""
        if self._server is None or self._server.socket is None:
            raise RuntimeError("the DIMSE server is not listening")
        return self._server.socket

    def start(self, listening: socket.socket | None = None) -> None:
        """Listen on settings.host:dimse_port in background threads (returns at once).

        ``listening``: accept on this already listening socket instead (a DIMSE worker process, given the serve
        process's plain listener); the DICOM TLS listener, if any, stays in the serve process alone."""
        s = self.archive.settings
        # Process-wide pynetdicom switch; every DicomVault storage SCP wants it (see received.py).
        _config.STORE_RECV_CHUNKED_DATASET = RECEIVE_TO_FILE
        quiet.install()
        if listening is not None:
            self.listen(s.host, s.dimse_port, listening=listening)
            log.info("DIMSE worker process %d accepting on %s:%d as %s", os.getpid(), s.host, self.port, s.aet)
            return
        self.listen(s.host, s.dimse_port)
        log.info("DIMSE listening on %s:%d as %s", s.host, self.port, s.aet)
        if self._tls_context is not None:
            self.listen(s.host, s.dimse_tls_port or 0, self._tls_context)
            log.info("DICOM TLS listening on %s:%d", s.host, self.tls_port)

    def listen(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None, *,
               listening: socket.socket | None = None) -> StorageRoutingServer:
        """One more listener (e.g. DICOM TLS on its own port) behind the same connection gate, handlers and
        timers; ``stop`` stops them all. The TLS handshake happens in each connection's thread, under ARTIM.
        ``listening``: accept on that socket (already bound and listening) instead of binding host:port."""
        bind: list[Any] = [
            (evt.EVT_C_ECHO, serving(handlers.handle_echo), [self.archive]),
            (evt.EVT_C_STORE, serving(handlers.handle_store), [self.archive]),
            (evt.EVT_C_FIND, serving(handlers.handle_find), [self.archive]),
            (evt.EVT_C_GET, serving(handlers.handle_get), [self.archive]),
            (evt.EVT_C_MOVE, serving(handlers.handle_move), [self.archive]),
            (evt.EVT_N_ACTION, serving(commitment.handle_n_action), [self.archive]),
            (evt.EVT_N_EVENT_REPORT, serving(commitment.handle_n_event_report), [self.archive]),
            (evt.EVT_CONN_OPEN, _tune_connection),
            (evt.EVT_DIMSE_RECV, on_message),
            (evt.EVT_REQUESTED, get_contexts.prefer_requestor_order),  # C-GET: the requestor's syntax order
            *self.access.handlers(),
        ]
        # pynetdicom's start_server, with our subclass: the connection gate, then storage-only associations take
        # the lean path (fast_store; plain connections only).
        address = listening.getsockname() if listening is not None else (host, port)
        server = cast(StorageRoutingServer, self.ae.make_server(
            address, evt_handlers=bind, server_class=StorageRoutingServer, gate=self.gate,
            ssl_context=ssl_context, listening=listening))
        if self.archive.settings.dimse_fast_store and ssl_context is None:
            server.enable_fast_store(self.archive, self.access)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="DimseAcceptor",
                                  daemon=True)
        thread.start()
        self.ae._servers.append(server)
        self._listeners.append(server)
        return server

    def stop(self, grace: float | None = None) -> None:
        """Graceful stop: accept nothing more, close negotiating and idle connections at once, let messages in
        flight (a C-STORE being received or stored, a C-FIND or retrieve being answered) finish within ``grace``
        seconds (default ``dimse_shutdown_grace``), then abort what is left. Idempotent; a second caller waits for
        the first one's stop to finish."""
        with self._stop_lock:
            listeners, self._listeners = self._listeners, []
            if not listeners:
                return
            for listener in listeners:
                listener.shutdown()  # the accept loop ends (within its 0.1 s poll); the listening socket is closed
            self.gate.stop(grace)
