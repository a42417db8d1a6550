"""Deadlines and size bounds for the associations pynetdicom serves (Q/R, user identity, TLS, or all of them when
``dimse_fast_store`` is off).

What pynetdicom 3.0.4 does by itself (read in its ``dul``, ``transport`` and ``association`` modules): its DUL
thread polls the socket with ``select`` and, once a byte is there, reads a whole PDU with blocking ``recv`` calls
into a growing buffer, trusting the length field and with no timeout at all (the accepted socket is blocking);
its ``network_timeout`` is an idle timer restarted by every PDU received and checked only between two requests,
so it aborts an association right after a C-MOVE that outlasted it, yet never ends one whose peer stopped half-way
through a PDU (both threads then wait forever); ``acse_timeout`` bounds only the wait for the A-ASSOCIATE-RQ.

``GuardedAssociationSocket`` is pynetdicom's ``AssociationSocket`` with the three methods its DUL thread calls
replaced, so every decision is taken in that thread and needs no lock:

* ``recv``: first serves the A-ASSOCIATE-RQ already read by ``admission``, then reads each PDU against a deadline
  (``dimse_timeout`` from its first byte; ARTIM from the accept before the association is established), in large
  reads into a buffer of the announced size — which must be within the maximum PDU length we announced (P-DATA)
  or ``admission.MAX_REQUEST`` (association PDUs); a PDU over its bound, or of an unknown type, ends the
  association with an A-ABORT before its body is read;
* ``send``: each PDU must be sent within ``dimse_timeout`` (a peer that stops reading cannot hold us);
* ``ready`` (polled by the DUL between PDUs): ends the connection when ``connections.Connection.overdue`` says so
  — ARTIM, the idle timeout between DIMSE messages (never while a request is being served), the gap between two
  PDUs of one message, a stop.

pynetdicom's own idle timer is switched off for these associations (``network_timeout = None``). Which phase an
association is in comes from two hooks bound by ``server.py``: ``serving`` around every request handler, and
``on_message`` for each complete DIMSE message.
"""

from __future__ import annotations

import functools
import inspect
import logging
import select
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.fsm import TRANSITION_TABLE, StateMachine
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket, RequestHandler

from dicomvault.dimse.admission import MAX_REQUEST
from dicomvault.dimse.connections import Connection, Phase

log = logging.getLogger(__name__)

#: Largest single read: a PDU body is read in pieces of at most this size (pynetdicom reads 4 KiB at a time).
READ_CHUNK = 1024 * 1024
#: An idle association's DUL thread waits for the peer up to this long per poll, once idle for ``IDLE_SETTLE``.
IDLE_WAIT = 0.02
IDLE_SETTLE = 0.1
#: A-RELEASE-RQ/RP and A-ABORT are 4 bytes long; anything much longer is garbage.
MAX_OTHER_PDU = 1024
P_DATA = 0x04
_KNOWN = frozenset(range(0x01, 0x08))
# A-ABORT reasons (PS3.8 9.3.8)
_UNSPECIFIED, _UNRECOGNISED_PDU, _INVALID_PARAMETER = 0x00, 0x01, 0x06


def pdu_problem(pdu_type: int, length: int, max_pdu: int) -> tuple[str, int] | None:
    """Why a PDU header cannot be accepted, with the A-ABORT reason to send; None if it can."""
    if pdu_type not in _KNOWN:
        return f"unrecognised PDU type 0x{pdu_type:02X}", _UNRECOGNISED_PDU
    limit = (max_pdu or 1 << 32) if pdu_type == P_DATA else MAX_REQUEST if pdu_type <= 0x03 else MAX_OTHER_PDU
    if length > limit:
        return f"PDU type 0x{pdu_type:02X} of {length} bytes exceeds {limit}", _INVALID_PARAMETER
    return None


class GuardedAssociationSocket(AssociationSocket):
    """See the module doc. Built by ``adopt`` from the socket pynetdicom's request handler created."""

    conn: Connection
    _prefix: bytes
    _at_header: bool
    _pdu_type: int
    _pdu_deadline: float
    _max_pdu: int
    _ended: bool

    @classmethod
    def adopt(cls, sock: AssociationSocket, conn: Connection, prefix: bytes, max_pdu: int) -> GuardedAssociationSocket:
        """Turn pynetdicom's ``AssociationSocket`` into this class in place. Not a new instance: pynetdicom's
        ``RequestHandler`` builds the socket itself, and its constructor queues the DUL's "transport connected"
        event (Evt5), so a second socket object would deliver that event twice."""
        sock.__class__ = cls
        guarded = cast(GuardedAssociationSocket, sock)
        guarded.conn, guarded._prefix, guarded._max_pdu = conn, prefix, max_pdu
        guarded._at_header, guarded._pdu_type, guarded._pdu_deadline = True, 0, 0.0
        guarded._ended = False
        return guarded

    # -- the three methods pynetdicom's DUL thread calls ---------------------------------------------------------

    @property
    def ready(self) -> bool:
        if self._ended:
            return False
        if self._prefix:
            return True
        if self.conn.phase == Phase.IDLE and time.monotonic() - self.conn.idle_since > IDLE_SETTLE:
            self._wait_readable()
        reason = self.conn.overdue()
        if reason is not None:
            self.end(reason, logging.DEBUG if self.conn.stop_requested else logging.INFO)
            return False
        return bool(super().ready)

    def recv(self, nr_bytes: int) -> bytearray:
        """pynetdicom reads each PDU as ``recv(6)`` (the header) then ``recv(length)`` (the body)."""
        if self._ended or self.socket is None:
            return bytearray()
        if not self._at_header:
            self._at_header = True
            body = self._read(nr_bytes)
            if len(body) == nr_bytes and self._pdu_type == P_DATA:
                self.conn.pdu_received()
            return body
        start = time.monotonic()
        self._pdu_deadline = start + self.conn.limits.pdu
        if self.conn.phase == Phase.NEGOTIATING:
            self._pdu_deadline = min(self._pdu_deadline, self.conn.artim_deadline)
        header = self._read(nr_bytes)
        if len(header) < 6:
            reason = self.conn.overdue() if not header else None
            if reason is not None and not self._ended:  # a stop's SHUT_RD woke the read
                self.end(reason, logging.DEBUG)
            return header  # closed or cut: pynetdicom sees the end of the connection
        pdu_type, length = struct.unpack(">BxI", bytes(header[:6]))
        problem = pdu_problem(pdu_type, length, self._max_pdu)
        if problem is not None:
            self.conn.warn("DIMSE association %s aborted: %s", self.conn, problem[0])
            self.end(None, abort_reason=problem[1])
            return bytearray()
        self._pdu_type, self._at_header = pdu_type, False
        return header

    def send(self, bytestream: bytes) -> None:
        if self._ended or self.socket is None:
            return
        kind = bytestream[:1]
        if kind == b"\x02":  # A-ASSOCIATE-AC
            self.conn.established(str(self.assoc.requestor.ae_title).strip())
        elif kind in (b"\x03", b"\x06", b"\x07"):  # A-ASSOCIATE-RJ, A-RELEASE-RP, A-ABORT: Sta13 follows
            self.conn.closing()
        deadline = time.monotonic() + self.conn.limits.pdu
        view = memoryview(bytestream)
        sent = 0
        try:
            while sent < len(view):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                self.socket.settimeout(remaining)
                sent += self.socket.send(view[sent:])
        except (OSError, ValueError) as exc:
            if isinstance(exc, TimeoutError):
                log.info("DIMSE association %s: the peer did not take a PDU within %g s; ending it", self.conn,
                         self.conn.limits.pdu)
            self.event_queue.put("Evt17")  # as pynetdicom's own send: the transport connection is gone
            return
        evt.trigger(self.assoc, evt.EVT_DATA_SENT, {"data": bytestream})

    # -- helpers ------------------------------------------------------------------------------------------------

    def _wait_readable(self) -> None:
        """Block up to ``IDLE_WAIT`` until the peer sends something: the DUL thread otherwise polls every 0.2 ms
        (``server.REACTOR_IDLE_DELAY``), and 64 idle associations were 320,000 wake-ups a second. Only once the
        association has been idle for ``IDLE_SETTLE`` (the last response is long sent: pynetdicom queues it right
        after the handler returns), since nothing else is queued for sending while nothing is being served."""
        sock = self.socket
        if sock is None or (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            return
        try:
            select.select([sock], [], [], IDLE_WAIT)
        except (OSError, ValueError):
            pass

    def _read(self, size: int) -> bytearray:
        """``size`` bytes (the buffered request first), fewer if the peer closes or the PDU deadline passes. The
        buffer grows with what arrives, never to what the header announced: a peer that announces a 4 MiB PDU and
        sends a few bytes costs a few bytes."""
        out = bytearray(self._prefix[:size])
        self._prefix = self._prefix[size:]
        sock = cast(socket.socket, self.socket)
        try:
            while len(out) < size:
                remaining = self._pdu_deadline - time.monotonic()
                if remaining <= 0:
                    self.end(f"PDU incomplete after {self.conn.limits.pdu:g} s (dimse_timeout)"
                             if self.conn.phase != Phase.NEGOTIATING else self.conn.expiry_reason())
                    break
                sock.settimeout(remaining)
                try:
                    chunk = sock.recv(min(size - len(out), READ_CHUNK))
                except TimeoutError:
                    continue
                if not chunk:
                    break
                out += chunk
        except (OSError, ValueError):
            pass  # reset, or cut by a stop: a short read, which pynetdicom treats as the end of the connection
        return out

    def end(self, reason: str | None, level: int = logging.INFO, abort_reason: int = _UNSPECIFIED) -> None:
        """End the connection from the DUL thread: an A-ABORT if the association was established (or the peer
        sent garbage), then cut the connection and stop the DUL so that pynetdicom winds the association down."""
        self._ended = True
        if reason is not None and self.conn.phase != Phase.CLOSING:
            log.log(level, "DIMSE %s %s ended: %s",
                    "connection" if self.conn.phase == Phase.NEGOTIATING else "association", self.conn, reason)
        sock = self.socket
        established = self.conn.phase in (Phase.IDLE, Phase.RECEIVING, Phase.BUSY)
        if sock is not None and (established or abort_reason != _UNSPECIFIED):
            pdu = A_ABORT_RQ()
            pdu.source, pdu.reason_diagnostic = 0x02, abort_reason
            try:
                sock.settimeout(1.0)
                sock.sendall(pdu.encode())
            except (OSError, ValueError):
                pass
        self.conn.interrupt(socket.SHUT_RDWR)
        self.conn.ended.set()
        self.assoc.dul.kill_dul()


#: States in which the connection is already gone or going: Sta1 (idle, no connection) and Sta13 (awaiting the
#: transport close after an A-ABORT or A-RELEASE). PS3.8 Table 9-10 defines no action for the service user's
#: primitives there.
_CLOSING_STATES = frozenset({"Sta1", "Sta13"})


class GuardedStateMachine(StateMachine):
    """pynetdicom's DUL state machine, except that an event with no transition in a closing state is ignored.

    A peer that sends garbage right after its A-ASSOCIATE-RQ makes the DUL abort (Sta13) while the association's
    own thread is still answering the request; the answer (Evt7, A-ASSOCIATE-RP) then meets Sta13, and pynetdicom
    raises ``InvalidEventError`` in its DUL thread: one ERROR line and a traceback on stderr per such connection
    (41 in 300 garbage streams of the abuse campaign), for a connection that is closing anyway. Anything else
    invalid still raises."""

    def do_action(self, event: str) -> None:
        if (event, self.current_state) not in TRANSITION_TABLE and self.current_state in _CLOSING_STATES:
            log.debug("DUL event %s ignored in %s (the connection is closing)", event, self.current_state)
            return
        super().do_action(event)


def connection_of(assoc: Association) -> Connection | None:
    sock = getattr(assoc.dul, "socket", None)
    return sock.conn if isinstance(sock, GuardedAssociationSocket) else None


class GuardedRequestHandler(RequestHandler):
    """pynetdicom's request handler for one admitted connection whose A-ASSOCIATE-RQ ``admission`` has read
    (``prefix``): the association's socket is guarded, and the handler (the connection's thread) lasts as long as
    the association, so the gate counts the connection until it really ends."""

    def __init__(self, request: socket.socket, client_address: Any, server: Any, connection: Connection,
                 prefix: bytes) -> None:
        self.connection = connection
        self.prefix = prefix
        self.assoc: Association | None = None
        super().__init__(request, client_address, server)  # runs handle()

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        assoc.network_timeout = None  # the idle timeout is ours: per DIMSE message, never during a handler
        GuardedAssociationSocket.adopt(cast(AssociationSocket, assoc.dul.socket), self.connection, self.prefix,
                                       self.ae.maximum_pdu_size)
        assoc.dul.state_machine.__class__ = GuardedStateMachine  # in place: the DUL holds this instance
        self.assoc = assoc
        return assoc

    def handle(self) -> None:
        super().handle()  # starts the association's threads and returns
        assoc = self.assoc
        while assoc is not None and assoc.is_alive() and not self.connection.ended.is_set():
            assoc.join(0.1)


def on_message(event: Any) -> None:
    """``EVT_DIMSE_RECV``: a complete DIMSE message arrived (activity for the idle timeout)."""
    conn = connection_of(event.assoc)
    if conn is not None:
        conn.message_received()


def serving(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a pynetdicom request handler so that its association counts as busy while it runs (for a generator
    handler: until it is exhausted or closed): no idle deadline applies, and a stop waits for it."""
    if inspect.isgeneratorfunction(handler):
        @functools.wraps(handler)
        def generator(event: Any, *args: Any) -> Iterator[Any]:
            conn = connection_of(event.assoc)
            if conn is None:
                yield from handler(event, *args)
                return
            with conn.busy():
                yield from handler(event, *args)
        return generator

    @functools.wraps(handler)
    def plain(event: Any, *args: Any) -> Any:
        conn = connection_of(event.assoc)
        if conn is None:
            return handler(event, *args)
        with conn.busy():
            return handler(event, *args)
    return plain
