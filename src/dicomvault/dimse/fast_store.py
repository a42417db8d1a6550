"""Storage-only associations on a lean receive path; everything else through pynetdicom, unchanged.

Issue #2: pynetdicom's acceptor costs ~4 ms per 512 KiB C-STORE even with a handler that does nothing (two polling
threads per association, 4 KiB reads, several copies per fragment), which caps C-STORE throughput well below
Orthanc's. ``StorageRoutingServer`` is pynetdicom's ``ThreadedAssociationServer`` with one change: in the
connection's own thread it peeks (MSG_PEEK, nothing consumed) at the A-ASSOCIATE-RQ. If every proposed abstract
syntax is Verification or a storage SOP class, and the request carries no extended negotiation we would have to
answer differently from pynetdicom, this module negotiates the association itself with pynetdicom's building
blocks (``pdu`` to decode/encode, ``presentation.negotiate_as_acceptor`` against the AE's own supported contexts,
so accepted contexts and transfer syntax preference are identical) and hands the socket to ``store_link.StoreLink``
in the same thread. Anything else (Q/R contexts, TLS, requests we cannot parse) is served by pynetdicom exactly as
before, the peeked bytes still unread.

Unchanged behaviour on the lean path: the access policy (``access.DimseAccess``: same A-ASSOCIATE-RJ, same 0x0124
for a C-STORE the peer may not make), ``max_associations``
(counted across both paths), TCP_NODELAY, the ACSE/network timeout, the max PDU we advertise, the peer's max PDU
for what we send, asynchronous operations not negotiated (window 1/1), the C-STORE statuses (one shared function,
``handlers.store_received``). ``settings.dimse_fast_store = false`` turns the routing off.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, BinaryIO

from pydicom.dataset import Dataset
from pynetdicom import AllStoragePresentationContexts
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    AsynchronousOperationsWindowNegotiation,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import negotiate_as_acceptor
from pynetdicom.transport import ThreadedAssociationServer

from dicomvault.dimse import handlers
from dicomvault.dimse.access import DimseAccess, rejection
from dicomvault.dimse.store_link import StoreLink, set_socket_timeout
from dicomvault.services.archive import Archive
from dicomvault.services.peer_access import Rejected

log = logging.getLogger(__name__)

VERIFICATION = "1.2.840.10008.1.1"
#: Abstract syntaxes the lean path serves: Verification and every storage SOP class (the contexts ``build_ae``
#: supports for them; private or unknown classes go to pynetdicom, which rejects their contexts as before).
STORAGE_ONLY: frozenset[str] = frozenset(
    {VERIFICATION, *(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts if cx.abstract_syntax)}
)
#: An A-ASSOCIATE-RQ proposing 128 contexts with all our syntaxes is ~70 KB; a larger one goes to pynetdicom.
MAX_PEEK = 256 * 1024
#: User information items we answer exactly as pynetdicom does with DicomVault's handlers: maximum length,
#: implementation UID/version, role selection, and async operations (no handler: no reply, i.e. window 1/1).
#: Anything else (user identity, SOP class (common) extended negotiation) is left to pynetdicom.
_PLAIN_ITEMS = (MaximumLengthNotification, ImplementationClassUIDNotification, ImplementationVersionNameNotification,
                SCP_SCU_RoleSelectionNegotiation, AsynchronousOperationsWindowNegotiation)
#: Seconds a rejected requestor gets to close the connection after reading the A-ASSOCIATE-RJ (ARTIM-like).
REJECT_LINGER = 10.0
# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 9.3.4, as pynetdicom's acse sends them
REJECT_LOCAL_LIMIT = (0x02, 0x03, 0x02)


def peek_request(sock: socket.socket, timeout: float | None) -> bytes | None:
    """The whole A-ASSOCIATE-RQ PDU, read with MSG_PEEK (left in the socket for pynetdicom), or ``b""`` when
    the connection sent nothing before the ACSE timeout (ARTIM) or closed, or None when the first bytes are not
    an A-ASSOCIATE-RQ we would serve (pynetdicom gets the connection and answers as it always did)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    needed = 6
    try:
        while True:
            # MSG_WAITALL on a blocking socket waits in the kernel until ``needed`` bytes are queued, bounded by
            # SO_RCVTIMEO; a peer that sends less and stays open keeps us here only until the deadline.
            remaining = None if deadline is None else max(0.001, deadline - time.monotonic())
            set_socket_timeout(sock, remaining)
            data = sock.recv(needed, socket.MSG_PEEK | socket.MSG_WAITALL)
            if len(data) >= 6 and needed == 6:
                if data[0] != 0x01:
                    return None
                needed = 6 + int.from_bytes(data[2:6], "big")
                if needed > MAX_PEEK:
                    return None
                continue
            if len(data) >= needed:
                return data[:needed]
            if not data or (deadline is not None and time.monotonic() >= deadline):
                return b"" if needed == 6 else None
    except (BlockingIOError, TimeoutError):
        return b"" if needed == 6 else None
    except OSError:
        return b""
    finally:
        try:
            set_socket_timeout(sock, None)  # pynetdicom expects the plain blocking socket it accepted
        except OSError:
            pass


def parse_request(data: bytes) -> A_ASSOCIATE | None:
    """The A-ASSOCIATE primitive if ``data`` is a storage-only request the lean path answers like pynetdicom."""
    try:
        pdu = A_ASSOCIATE_RQ()
        pdu.decode(data)
        request = pdu.to_primitive()
    except Exception:
        return None
    contexts = request.presentation_context_definition_list
    if not contexts or any(str(cx.abstract_syntax) not in STORAGE_ONLY for cx in contexts):
        return None
    if any(not isinstance(item, _PLAIN_ITEMS) for item in request.user_information):
        return None
    return request


class FastStore:
    """The lean path's configuration and bookkeeping, shared by every connection of one server."""

    def __init__(self, archive: Archive, server: ThreadedAssociationServer, access: DimseAccess) -> None:
        s = archive.settings
        self.archive = archive
        self.server = server
        self.ae = server.ae
        self.timeout = s.dimse_timeout
        self.max_pdu = s.max_pdu
        self.access = access
        self.max_associations = s.max_associations
        self.spool_dir: Path | None = Path(s.data_dir) / "dimse-spool"
        self._lock = threading.Lock()
        self._links: set[StoreLink] = set()
        #: Associations the lean path has accepted since start (tests and diagnostics).
        self.served = 0

    @property
    def active(self) -> int:
        return len(self._links)

    def serve(self, sock: socket.socket, address: Any) -> bool:
        """Serve the connection if it is storage-only; False to hand it, unread, to pynetdicom."""
        data = peek_request(sock, self.timeout)
        if data == b"":
            log.info("Connection from %s sent no A-ASSOCIATE-RQ before the timeout; closed", address[0])
            sock.close()
            return True
        request = parse_request(data) if data else None
        if data is None or request is None:
            return False
        # The A-ASSOCIATE-RQ is ours now: consume it.
        sock.recv(len(data), socket.MSG_WAITALL)
        calling = str(request.calling_ae_title).strip()
        grant = self.access.admit(request, address[0], sock)
        if isinstance(grant, Rejected):
            return self._reject(sock, rejection(grant))
        link, accept = self._establish(sock, request, calling)
        link.store = self.access.guard_store(link.store, grant)
        with self._lock:
            busy = self.active + sum(1 for a in self.ae.active_associations if a.is_acceptor)
            full = busy >= self.max_associations
            if not full:
                self._links.add(link)
                self.served += 1
        if full:
            log.info("Rejecting association from %s: %d associations active", address[0], busy)
            return self._reject(sock, REJECT_LOCAL_LIMIT)
        try:
            log.debug("Association from %s (%s) served by the lean storage path", calling, address[0])
            link.run(accept)
        finally:
            with self._lock:
                self._links.discard(link)
        return True

    def _reject(self, sock: socket.socket, rsd: tuple[int, int, int]) -> bool:
        primitive = A_ASSOCIATE()
        primitive.result, primitive.result_source, primitive.diagnostic = rsd
        pdu = A_ASSOCIATE_RJ()
        pdu.from_primitive(primitive)
        try:
            set_socket_timeout(sock, self.timeout)
            sock.sendall(pdu.encode())
            # PS3.8 Sta13: the requestor closes the connection once it has read the reject; wait for that (as
            # pynetdicom's acceptor does, bounded like its ARTIM timer). Closing or half-closing first lets a
            # requestor see the connection end before it has processed the reject, and report an abort instead.
            set_socket_timeout(sock, min(self.timeout, REJECT_LINGER))
            while sock.recv(1024):
                pass
        except OSError:
            pass
        sock.close()
        return True

    def _establish(self, sock: socket.socket, request: A_ASSOCIATE, calling: str) -> tuple[StoreLink, bytes]:
        """Negotiate exactly as pynetdicom's acceptor would and send the A-ASSOCIATE-AC after the link is built
        (so an accepted association always has its receiver)."""
        rq_roles = {
            item.sop_class_uid: (item.scu_role, item.scp_role)
            for item in request.user_information
            if isinstance(item, SCP_SCU_RoleSelectionNegotiation) and item.sop_class_uid is not None
        }
        result, ac_roles = negotiate_as_acceptor(
            request.presentation_context_definition_list, self.server.contexts, rq_roles
        )
        accepted = {
            int(cx.context_id): (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
            for cx in result
            if cx.result == 0x00 and cx.context_id is not None
        }
        max_length = MaximumLengthNotification()
        max_length.maximum_length_received = self.max_pdu
        impl_uid = ImplementationClassUIDNotification()
        impl_uid.implementation_class_uid = self.ae.implementation_class_uid
        user_info: list[Any] = [max_length, impl_uid]
        if self.ae.implementation_version_name:
            version = ImplementationVersionNameNotification()
            version.implementation_version_name = self.ae.implementation_version_name
            user_info.append(version)
        user_info.extend(ac_roles)
        primitive = A_ASSOCIATE()
        primitive.application_context_name = request.application_context_name
        primitive.calling_ae_title = request.calling_ae_title
        primitive.called_ae_title = request.called_ae_title
        primitive.result = 0x00
        primitive.result_source = 0x01
        primitive.presentation_context_definition_results_list = (
            [cx for cx in result if cx.result == 0x00] + [cx for cx in result if cx.result != 0x00]
        )
        primitive.user_information = user_info
        ac = A_ASSOCIATE_AC()
        ac.from_primitive(primitive)
        archive = self.archive

        def store(dataset: AbstractContextManager[tuple[BinaryIO, int, int]], sop_class: str, sop_instance: str,
                  transfer_syntax: str) -> Dataset:
            return handlers.store_received(archive, dataset, sop_class, sop_instance, transfer_syntax, calling)

        peer_max = int(request.maximum_length_received or 0)
        link = StoreLink(sock, accepted, self.max_pdu, peer_max, store, self.timeout, self._spool_dir(), calling)
        return link, ac.encode()

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

    def close_all(self) -> None:
        """Shut every lean association's socket down (server stop): each thread sees the end and exits."""
        with self._lock:
            links = list(self._links)
        for link in links:
            try:
                link.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class StorageRoutingServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, routing storage-only associations to the lean path (see the module doc)."""

    fast: FastStore | None = None

    def enable_fast_store(self, archive: Archive, access: DimseAccess) -> None:
        self.fast = FastStore(archive, self, access)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Runs in the connection's own thread (ThreadingMixIn); the accept loop is never blocked by a peek."""
        fast = self.fast
        if fast is not None and isinstance(request, socket.socket) and type(request) is socket.socket:
            try:
                request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if fast.serve(request, client_address):
                    return
            except Exception as exc:
                log.error("Lean storage path failed on a new connection: %s", type(exc).__name__)
                log.debug("Lean storage path failure detail", exc_info=True)
                request.close()
                return
        super().process_request_thread(request, client_address)

    def shutdown(self) -> None:
        super().shutdown()
        if self.fast is not None:
            self.fast.close_all()
