"""Accepting DIMSE connections: the connection gate, the A-ASSOCIATE-RQ, then the lean path or pynetdicom.

Issue #2: pynetdicom's acceptor costs ~4 ms per 512 KiB C-STORE even with a handler that does nothing (two polling
threads per association, 4 KiB reads, several copies per fragment), which caps C-STORE throughput well below
Orthanc's. ``StorageRoutingServer`` is pynetdicom's ``ThreadedAssociationServer`` with the accept path replaced:

1. in the accept loop, ``connections.ConnectionGate`` admits the connection or closes it at once (caps in total and
   per peer address), before any thread exists (issue #9);
2. in the connection's own thread: the TLS handshake when the listener has an ``ssl_context`` (never in the accept
   loop), then ``admission.read_request`` reads the A-ASSOCIATE-RQ under the ARTIM deadline, bounded in size;
3. if every proposed abstract syntax is Verification or a storage SOP class, and the request carries no extended
   negotiation we would have to answer differently from pynetdicom, this module negotiates the association itself
   with pynetdicom's building blocks (``presentation.negotiate_as_acceptor`` against the AE's own supported
   contexts, so accepted contexts and transfer syntax preference are identical) and hands the socket to
   ``dicom/store_link.StoreLink`` in the same thread. Anything else (Q/R contexts, user identity, TLS) is served by
   pynetdicom through ``pynetdicom_guard``, which gives it the request's bytes and keeps its deadlines.

Unchanged behaviour on the lean path: the access policy (``access.DimseAccess``: same A-ASSOCIATE-RJ, same 0x0124
for a C-STORE the peer may not make), ``max_associations``
(counted across both paths), TCP_NODELAY, the max PDU we advertise, the peer's max PDU for what we send,
asynchronous operations not negotiated (window 1/1), the C-STORE statuses (one shared function,
``handlers.store_received``). ``settings.dimse_fast_store = false`` sends every association to pynetdicom; steps 1
and 2 apply either way.
"""

from __future__ import annotations

import logging
import socket
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, BinaryIO

from pydicom.dataset import Dataset
from pynetdicom import AllStoragePresentationContexts
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    AsynchronousOperationsWindowNegotiation,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.transport import ThreadedAssociationServer

from dicomvault.dicom import acceptor
from dicomvault.dicom.pdu import set_socket_timeout
from dicomvault.dicom.store_link import StoreLink
from dicomvault.dimse import admission, handlers
from dicomvault.dimse.access import DimseAccess, rejection
from dicomvault.dimse.connections import Connection, ConnectionGate
from dicomvault.dimse.pynetdicom_guard import GuardedRequestHandler
from dicomvault.services.archive import Archive
from dicomvault.services.peer_access import Rejected

log = logging.getLogger(__name__)

VERIFICATION = "1.2.840.10008.1.1"
#: Abstract syntaxes the lean path serves: Verification and every storage SOP class (the contexts ``build_ae``
#: supports for them; private or unknown classes go to pynetdicom, which rejects their contexts as before).
STORAGE_ONLY: frozenset[str] = frozenset(
    {VERIFICATION, *(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts if cx.abstract_syntax)}
)
#: User information items we answer exactly as pynetdicom does with DicomVault's handlers: maximum length,
#: implementation UID/version, role selection, and async operations (no handler: no reply, i.e. window 1/1).
#: Anything else (user identity, SOP class (common) extended negotiation) is left to pynetdicom.
_PLAIN_ITEMS = (MaximumLengthNotification, ImplementationClassUIDNotification, ImplementationVersionNameNotification,
                SCP_SCU_RoleSelectionNegotiation, AsynchronousOperationsWindowNegotiation)
REJECT_LOCAL_LIMIT = acceptor.REJECT_LOCAL_LIMIT


def is_storage_only(request: A_ASSOCIATE) -> bool:
    """Whether the lean path answers ``request`` exactly as pynetdicom would: only Verification and storage
    contexts, only plain user information items."""
    contexts = request.presentation_context_definition_list
    if not contexts or any(str(cx.abstract_syntax) not in STORAGE_ONLY for cx in contexts):
        return False
    return all(isinstance(item, _PLAIN_ITEMS) for item in request.user_information)


class FastStore:
    """The lean path's configuration and bookkeeping, shared by every connection of one server."""

    def __init__(self, archive: Archive, server: ThreadedAssociationServer, access: DimseAccess) -> None:
        s = archive.settings
        self.archive = archive
        self.server = server
        self.ae = server.ae
        self.max_pdu = s.max_pdu
        self.access = access
        #: this process's share of ``max_associations`` (``build_ae``; divided among ``dimse_workers`` processes)
        self.max_associations = self.ae.maximum_associations
        self.spool_dir: Path | None = Path(s.data_dir) / "dimse-spool"
        self._lock = threading.Lock()
        self._links: set[StoreLink] = set()
        #: Associations the lean path has accepted since start (tests and diagnostics).
        self.served = 0

    @property
    def active(self) -> int:
        return len(self._links)

    def serve(self, conn: Connection, request: A_ASSOCIATE) -> None:
        """Answer the (already read) storage-only ``request`` and serve the association until it ends."""
        calling = conn.calling
        grant = self.access.admit(request, conn.peer, conn.sock)
        if isinstance(grant, Rejected):
            self._reject(conn, rejection(grant))
            return
        link, accept = self._establish(conn, request)
        link.store = self.access.guard_store(link.store, grant)
        with self._lock:
            busy = self.active + sum(1 for a in self.ae.active_associations if a.is_acceptor)
            full = busy >= self.max_associations
            if not full:
                self._links.add(link)
                self.served += 1
        if full:
            log.info("Rejecting association from %s: %d associations active", conn.peer, busy)
            self._reject(conn, REJECT_LOCAL_LIMIT)
            return
        try:
            log.debug("Association from %s (%s) served by the lean storage path", calling, conn.peer)
            link.run(accept)
        finally:
            with self._lock:
                self._links.discard(link)

    def _reject(self, conn: Connection, rsd: tuple[int, int, int]) -> None:
        sock = conn.sock
        conn.closing()
        try:
            set_socket_timeout(sock, conn.limits.pdu)
            sock.sendall(acceptor.reject(rsd))
            # PS3.8 Sta13: the requestor closes the connection once it has read the reject; wait for that (as
            # pynetdicom's acceptor does, bounded by ARTIM; a stop wakes the read). Closing or half-closing first
            # lets a requestor see the connection end before it has processed the reject, and report an abort.
            set_socket_timeout(sock, conn.limits.artim)
            while not conn.stop_requested and sock.recv(1024):
                pass
        except OSError:
            pass

    def _establish(self, conn: Connection, request: A_ASSOCIATE) -> tuple[StoreLink, bytes]:
        """Negotiate exactly as pynetdicom's acceptor would and send the A-ASSOCIATE-AC after the link is built
        (so an accepted association always has its receiver)."""
        accepted, ac = acceptor.accept(request, self.server.contexts, max_pdu=self.max_pdu,
                                       implementation_uid=self.ae.implementation_class_uid,
                                       implementation_version=self.ae.implementation_version_name)
        archive, calling = self.archive, conn.calling

        def store(dataset: AbstractContextManager[tuple[BinaryIO, int, int]], sop_class: str, sop_instance: str,
                  transfer_syntax: str) -> Dataset:
            return handlers.store_received(archive, dataset, sop_class, sop_instance, transfer_syntax, calling)

        peer_max = int(request.maximum_length_received or 0)
        link = StoreLink(conn, accepted, self.max_pdu, peer_max, store, self._spool_dir())
        return link, ac

    def _spool_dir(self) -> Path | None:
        """Where objects above the spool threshold are assembled: the archive's data dir (same disk as the
        blobs it becomes), else the system temporary folder."""
        if self.spool_dir is None:
            return None
        try:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
        except OSError:
            self.spool_dir = None
        return self.spool_dir


class StorageRoutingServer(ThreadedAssociationServer):
    """pynetdicom's threaded server behind the connection gate, routing storage-only associations to the lean
    path (see the module doc). Connection threads are daemons and never joined: a stop goes through the gate."""

    fast: FastStore | None = None
    block_on_close = False
    daemon_threads = True
    #: listen() backlog. socketserver's default is 5: under a burst of connections (a flood, or every modality
    #: of a department reconnecting after a restart) the kernel then drops SYNs and clients wait 1, 3, 7 s to
    #: retry; the gate decides in microseconds, so a deep queue costs nothing.
    request_queue_size = 128

    def __init__(self, *args: Any, gate: ConnectionGate, listening: socket.socket | None = None,
                 **kwargs: Any) -> None:
        """``listening``: an already bound and listening socket to accept on instead of binding the address (a DIMSE
        worker process, given the serve process's socket: ``cli.dimse_workers``)."""
        self.gate = gate
        self._inherited = listening
        super().__init__(*args, **kwargs)
        # Non-blocking accept: when several processes accept on one socket, every one of them wakes up for a new
        # connection and all but one find nothing to accept; a blocking (or, as pynetdicom sets it, 60 s timeout)
        # accept would then hold the accept loop, and a stop, until the next connection arrives.
        assert self.socket is not None
        self.socket.settimeout(0.0)

    def server_bind(self) -> None:
        if self._inherited is None:
            super().server_bind()
            return
        assert self.socket is not None
        self.socket.close()  # the unbound socket socketserver created; the inherited one replaces it
        self.socket = self._inherited
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        if self._inherited is None:  # an inherited socket is listening already (with the serve process's backlog)
            super().server_activate()

    def server_close(self) -> None:
        """Close this process's handle of the listening socket, nothing more. pynetdicom's version shuts the socket
        down first, which on Linux ends listening for every process holding it: one DIMSE worker process stopping
        would stop the others' accepts. (Alone, closing the last handle ends listening just the same.)"""
        if self.socket is not None:
            self.socket.close()

    def enable_fast_store(self, archive: Archive, access: DimseAccess) -> None:
        self.fast = FastStore(archive, self, access)

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept, nothing more: pynetdicom's version completes the TLS handshake here, in the accept loop, where
        one client that connects and says nothing stops every other accept. It happens in ``_serve`` instead."""
        assert self.socket is not None
        sock, address = self.socket.accept()  # BlockingIOError when another process took it: serve_forever goes on
        sock.settimeout(None)  # the blocking socket both receive paths expect, whatever the listener's mode
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        """In the accept loop: admit (or close at once) before starting a thread for the connection."""
        conn = self.gate.admit(request, client_address)
        if conn is None:
            return
        thread = threading.Thread(target=self._serve, args=(conn, client_address), daemon=True,
                                  name=f"DimseConnection-{conn.peer}")
        thread.start()

    def _serve(self, conn: Connection, address: Any) -> None:
        """The connection's thread, from the first byte to the close; the gate counts it until then."""
        try:
            if self.ssl_context is not None:
                if not admission.tls_handshake(conn, self.ssl_context):
                    return
            else:
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            request = admission.read_request(conn)
            if request is None:
                return
            fast = self.fast
            if fast is not None and type(conn.sock) is socket.socket and is_storage_only(request.primitive):
                fast.serve(conn, request.primitive)
            else:
                GuardedRequestHandler(conn.sock, address, self, conn, request.raw)
        except Exception as exc:
            log.error("DIMSE connection from %s failed: %s", conn.peer, type(exc).__name__)
            log.debug("DIMSE connection failure detail", exc_info=True)
        finally:
            self.gate.release(conn)
