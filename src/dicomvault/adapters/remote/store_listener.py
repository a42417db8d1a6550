"""The storage SCP of ``dicomvault migrate --via move`` on the lean receive path (``ports.migration.StoreReceiver``).

Why: through pynetdicom's acceptor (``store_scp``) each 512 KiB C-STORE sub-operation cost ~4 ms before the
archive saw a byte (two polling threads per association, 4 KiB reads, every fragment copied through PDU →
primitive → queue → message), which kept the migration at 0.12× of what the same Orthanc sends to dcmtk's
storescp. The archive's own DIMSE server serves storage associations with ``dicom/store_link`` (large reads into
one buffer, PDVs split in place); this SCP does the same: each connection's A-ASSOCIATE-RQ is read under a
deadline (bounded in size), negotiated as pynetdicom would (``dicom/acceptor``, against the same contexts as
``store_scp``: every storage class in every syntax, compressed first), and the association is served by
``StoreLink`` in the connection's thread. Each complete data set goes to the migration's sink, unchanged; the
answer waits for the sink (its bytes/s budget slows the peer down, as before).

What the DIMSE server adds and this SCP does not need: no access policy (any calling AE title, as before: the port
is opened for the migration only), no TLS, no DIMSE worker processes. Bounded as the server is: at most
``MAX_ASSOCIATIONS`` at once (more are rejected, transient), the request within ``timeout`` of the connection
(ARTIM), the next message within ``timeout`` of the last answer, each PDU within ``timeout`` of its first byte.
``stop`` ends idle associations at once and waits (up to ``timeout``) for a C-STORE being stored.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.dataset import Dataset
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE

from dicomvault.adapters.remote.received import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, SUCCESS
from dicomvault.adapters.remote.store_scp import SHUTDOWN_POLL, supported_contexts
from dicomvault.dicom import acceptor, pdu
from dicomvault.dicom.store_link import StoreLink, status_dataset
from dicomvault.ports.migration import Received, Sink

log = logging.getLogger(__name__)

#: Associations served at once (the peer's C-MOVE sub-operations use one or a few).
MAX_ASSOCIATIONS = 64
#: The largest A-ASSOCIATE-RQ read (as the DIMSE server: 128 contexts × every syntax fit well within).
MAX_REQUEST = 256 * 1024


class _Phase(enum.Enum):
    IDLE = "idle"
    RECEIVING = "receiving"
    BUSY = "busy"
    CLOSING = "closing"


@dataclass(frozen=True)
class _Limits:
    idle: float
    pdu: float


class _Connection:
    """``dicom.store_link.LinkConnection`` for one association: its phase and deadlines (every timer is
    ``timeout``), and the stop."""

    def __init__(self, sock: socket.socket, calling: str, timeout: float) -> None:
        self.sock = sock
        self.calling = calling
        self.limits = _Limits(idle=timeout, pdu=timeout)
        self.stop_requested = False
        self.phase = _Phase.IDLE
        self.since = self.last_pdu = time.monotonic()

    @property
    def is_closing(self) -> bool:
        return self.phase == _Phase.CLOSING

    def established(self, calling: str) -> None:
        self.calling = calling or self.calling
        self.phase, self.since = _Phase.IDLE, time.monotonic()

    def closing(self) -> None:
        if self.phase != _Phase.CLOSING:
            self.phase, self.since = _Phase.CLOSING, time.monotonic()

    def pdu_received(self) -> None:
        self.last_pdu = time.monotonic()
        if self.phase == _Phase.IDLE:
            self.phase = _Phase.RECEIVING

    def idle(self) -> None:
        if self.phase != _Phase.IDLE:
            self.phase, self.since = _Phase.IDLE, time.monotonic()

    @contextlib.contextmanager
    def _busy(self) -> Iterator[None]:
        self.phase = _Phase.BUSY
        try:
            yield
        finally:
            self.idle()

    def busy(self) -> AbstractContextManager[None]:
        return self._busy()

    def wait_deadline(self) -> float | None:
        if self.phase == _Phase.IDLE:
            return self.since + self.limits.idle
        if self.phase == _Phase.RECEIVING:
            return self.last_pdu + self.limits.pdu
        if self.phase == _Phase.CLOSING:
            return self.since + self.limits.idle
        return None

    def overdue(self) -> str | None:
        if self.stop_requested and self.phase not in (_Phase.RECEIVING, _Phase.BUSY):
            return "migration storage SCP stopping"
        deadline = self.wait_deadline()
        if deadline is not None and time.monotonic() >= deadline:
            return self.expiry_reason()
        return None

    def expiry_reason(self) -> str:
        if self.phase == _Phase.IDLE:
            return f"idle for {self.limits.idle:g} s"
        if self.phase == _Phase.RECEIVING:
            return f"message incomplete: no PDU for {self.limits.pdu:g} s"
        return "peer did not close the connection"


def _read(sock: socket.socket, size: int, deadline: float) -> bytes:
    data = bytearray()
    while len(data) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(size - len(data))
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


def read_request(sock: socket.socket, timeout: float) -> A_ASSOCIATE | None:
    """The connection's A-ASSOCIATE-RQ within ``timeout`` (at most ``MAX_REQUEST`` bytes), or None (the caller
    closes the connection; garbage is answered with an A-ABORT first)."""
    deadline = time.monotonic() + timeout
    header = _read(sock, 6, deadline)
    if len(header) < 6 or header[0] != pdu.ASSOCIATE_RQ:
        return None
    _, length = pdu.HEADER.unpack(header)
    if not 68 <= length <= MAX_REQUEST:
        pdu.abort_connection(sock, pdu.REASON_INVALID_PARAMETER)
        return None
    body = _read(sock, length, deadline)
    if len(body) < length:
        return None
    try:
        request = A_ASSOCIATE_RQ()
        request.decode(header + body)
        primitive = request.to_primitive()
    except Exception:  # not a request we can answer
        log.debug("undecodable A-ASSOCIATE-RQ", exc_info=True)
        pdu.abort_connection(sock, pdu.REASON_INVALID_PARAMETER)
        return None
    sock.settimeout(None)  # StoreLink keeps its own deadlines on the blocking socket
    return primitive


class LeanStoreScp:
    """A storage SCP on ``host:port`` with AE title ``aet``, handing each object to the sink given to ``start``
    (implements ``ports.migration.StoreReceiver``)."""

    def __init__(self, aet: str, host: str, port: int, *, timeout: float = 30.0, max_pdu: int = 0) -> None:
        self.aet, self.host, self.port = aet, host, port
        self.timeout = timeout
        self.max_pdu = max_pdu
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()
        #: associations served since start (tests and diagnostics)
        self.served = 0

    def start(self, sink: Sink) -> None:
        listener = socket.create_server((self.host, self.port), backlog=128)
        listener.settimeout(SHUTDOWN_POLL)
        self._stopping.clear()
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener, sink), daemon=True,
                                        name="migration-store-scp")
        self._thread.start()
        log.info("migration storage SCP %s listening on %s:%d", self.aet, self.host, self.port)

    def stop(self) -> None:
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(self.timeout)
        with self._lock:
            connections, threads = list(self._connections), list(self._threads)
        for conn in connections:
            conn.stop_requested = True
            if conn.phase in (_Phase.IDLE, _Phase.CLOSING):
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(conn.sock, socket.SHUT_RD)  # wakes its read: it ends at once
        deadline = time.monotonic() + self.timeout
        for t in threads:
            t.join(max(deadline - time.monotonic(), 0.0))

    # -- the accept loop and each connection ---------------------------------------------------------------

    def _accept(self, listener: socket.socket, sink: Sink) -> None:
        with listener:
            while not self._stopping.is_set():
                try:
                    sock, address = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self._stopping.is_set():
                        return
                    time.sleep(SHUTDOWN_POLL)  # e.g. out of file descriptors: try again shortly
                    continue
                sock.settimeout(None)
                thread = threading.Thread(target=self._serve, args=(sock, address, sink), daemon=True,
                                          name=f"migration-store-scp-{address[0]}")
                with self._lock:
                    self._threads.add(thread)
                thread.start()

    def _serve(self, sock: socket.socket, address: tuple[str, int], sink: Sink) -> None:
        try:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            request = read_request(sock, self.timeout)
            if request is None:
                log.info("migration storage SCP: connection from %s closed without an association", address[0])
                return
            calling = str(request.calling_ae_title).strip()
            conn = _Connection(sock, calling, self.timeout)
            with self._lock:
                full = len(self._connections) >= MAX_ASSOCIATIONS
                if not full:
                    self._connections.add(conn)
                    self.served += 1
            if full:
                log.info("migration storage SCP: association from %s rejected: %d associations active", calling,
                         MAX_ASSOCIATIONS)
                with contextlib.suppress(OSError):
                    sock.sendall(acceptor.reject(acceptor.REJECT_LOCAL_LIMIT))
                return
            try:
                accepted, ac = acceptor.accept(request, supported_contexts(), max_pdu=self.max_pdu,
                                               implementation_uid=PYNETDICOM_IMPLEMENTATION_UID,
                                               implementation_version=PYNETDICOM_IMPLEMENTATION_VERSION)
                link = StoreLink(conn, accepted, self.max_pdu, int(request.maximum_length_received or 0),
                                 _store_into(sink, calling), None)
                link.run(ac)  # never raises; closes the socket
            finally:
                with self._lock:
                    self._connections.discard(conn)
        except Exception as exc:
            log.error("migration storage SCP: connection from %s failed: %s", address[0], type(exc).__name__)
            log.debug("detail", exc_info=True)
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            with self._lock:
                self._threads.discard(threading.current_thread())


def _store_into(sink: Sink, calling: str) -> Callable[..., Dataset]:
    def store(dataset: AbstractContextManager[tuple[BinaryIO, int, int]], sop_class: str, sop_instance: str,
              transfer_syntax: str) -> Dataset:
        """One complete data set to the sink; the C-STORE status (as ``received.store_event`` answers)."""
        try:
            with dataset as (stream, start, length):
                stream.seek(start)
                problem = sink(Received(stream=stream, size=length, part10=False, sop_class_uid=sop_class,
                                        sop_instance_uid=sop_instance, transfer_syntax=transfer_syntax,
                                        calling=calling))
        except Exception as exc:  # the sink should not raise; the peer gets a status whatever happens
            log.error("storing a pulled instance failed: %s", type(exc).__name__)
            log.debug("detail", exc_info=True)
            return status_dataset(OUT_OF_RESOURCES)
        return status_dataset(SUCCESS if problem is None else CANNOT_UNDERSTAND)

    return store
