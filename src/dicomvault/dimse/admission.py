"""The first PDU of every DIMSE connection, read under the ARTIM deadline before any association code sees it.

Why here and not in pynetdicom: pynetdicom reads the A-ASSOCIATE-RQ with a blocking ``recv`` loop into a growing
buffer, trusting the length field (a header announcing 0xFFFFFFFF bytes made it buffer 32 MiB before any check),
with no deadline (a request that stops half-way held the connection until the peer left), and logs a page of
errors with tracebacks for a connection that is not DICOM at all. Reading the request here, for both receive
paths and both listeners (plain and TLS), bounds all of that in one place:

* the whole A-ASSOCIATE-RQ must arrive within ARTIM (``dimse_artim_timeout``) of the accept; trickling bytes do
  not extend it (the deadline is absolute);
* its length must be at most ``MAX_REQUEST``; a longer one is answered with an A-ABORT (invalid PDU parameter)
  without reading it;
* anything that is not an A-ASSOCIATE-RQ (random bytes, an HTTP request, a TLS ClientHello on the plain port, a
  request that does not decode) costs one WARNING line naming what it looked like (``Connection.warn``:
  rate-limited under a flood);
* a TCP connect that closes without sending anything (a load balancer's health check) is logged at DEBUG only.

The request is consumed; whoever serves the association gets its bytes (the lean path decodes them again cheaply,
pynetdicom reads them from ``pynetdicom_guard``'s buffer as if they came from the socket).
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import time
from dataclasses import dataclass

from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE

from dicomvault.dicom.pdu import REASON_INVALID_PARAMETER, abort_connection
from dicomvault.dimse.connections import Connection

log = logging.getLogger(__name__)

#: The largest A-ASSOCIATE-RQ accepted. Measured: 128 presentation contexts, each proposing every transfer syntax
#: the archive knows, encode to ~70 KB; dcmtk's storescu proposing every storage class ~20 KB; a user identity
#: item carries at most 64 KiB. 256 KiB leaves room for all of that and bounds what one connection can make us hold.
MAX_REQUEST = 256 * 1024
#: PS3.8 9.3.2: protocol version, reserved, called and calling AE titles, reserved — the fixed part of the body.
MIN_REQUEST_BODY = 68
ASSOCIATE_RQ = 0x01
_HEADER = struct.Struct(">BxI")
_HTTP = (b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN", b"PRI ")

def looks_like(first: bytes) -> str:
    """What the first bytes of a connection that is not a DICOM association look like (for the log line)."""
    if first[:1] == b"\x16" and first[1:2] == b"\x03":
        return "a TLS handshake (a TLS client on the plain DIMSE port?)"
    if first[:4] in _HTTP:
        return "an HTTP request"
    if first[:1] in (b"\x02", b"\x03", b"\x04", b"\x05", b"\x06", b"\x07"):
        return f"a DICOM PDU of type 0x{first[0]:02X} where an A-ASSOCIATE-RQ was due"
    return "bytes that are not a DICOM PDU"


@dataclass
class Request:
    """A complete A-ASSOCIATE-RQ: the PDU's bytes as received and the primitive decoded from them."""

    raw: bytes
    primitive: A_ASSOCIATE


def _read(sock: socket.socket, size: int, deadline: float) -> bytes:
    """Up to ``size`` bytes, fewer if the peer closes or the deadline passes (Python-level timeouts, so the same
    code serves a plain and a TLS socket; this runs once per connection). The buffer grows with what arrives."""
    out = bytearray()
    try:
        while len(out) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(size - len(out))
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
    except (OSError, ValueError):  # reset, or the socket was cut by a stop
        pass
    return bytes(out)


def tls_handshake(conn: Connection, context: ssl.SSLContext) -> bool:
    """Wrap the accepted socket and complete the TLS handshake within ARTIM, in the connection's own thread (never
    in the accept loop, where a client that connects and stays silent would stop every other accept)."""
    try:
        tls = context.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
        conn.sock = tls
        tls.settimeout(max(0.001, conn.artim_deadline - time.monotonic()))
        tls.do_handshake()
        tls.settimeout(None)
        return True
    except (OSError, ValueError) as exc:
        if isinstance(exc, TimeoutError):
            log.info("DIMSE TLS connection from %s: no TLS handshake within %g s (ARTIM); closed",
                     conn.peer, conn.limits.artim)
        elif isinstance(exc, (ssl.SSLEOFError, ConnectionError)) or conn.stop_requested:
            log.debug("DIMSE TLS connection from %s closed during the TLS handshake", conn.peer)  # a health check
        else:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            conn.warn("DIMSE TLS connection from %s closed: TLS handshake failed (%s)", conn.peer, reason)
        return False


def read_request(conn: Connection) -> Request | None:
    """The connection's A-ASSOCIATE-RQ, or None once the connection has been dealt with (logged; the caller
    closes it). Never reads more than ``MAX_REQUEST`` bytes, never waits past the ARTIM deadline."""
    sock, deadline = conn.sock, conn.artim_deadline
    header = _read(sock, 6, deadline)
    if conn.stop_requested:
        log.debug("DIMSE connection from %s closed: server stopping", conn.peer)
        return None
    if not header:
        if time.monotonic() >= deadline:
            log.info("DIMSE connection from %s sent nothing within %g s (ARTIM); closed", conn.peer, conn.limits.artim)
        else:
            log.debug("DIMSE connection from %s closed without sending anything", conn.peer)
        return None
    if header[0] != ASSOCIATE_RQ:
        conn.warn("DIMSE connection from %s closed: it sent %s", conn.peer, looks_like(header))
        return None
    if len(header) < 6:
        _incomplete(conn, len(header), None)
        return None
    (length,) = struct.unpack(">I", header[2:6])
    if length > MAX_REQUEST or length < MIN_REQUEST_BODY:
        conn.warn("DIMSE connection from %s aborted: A-ASSOCIATE-RQ announces %d bytes (accepted: %d to %d)",
                  conn.peer, length, MIN_REQUEST_BODY, MAX_REQUEST)
        abort_connection(sock, REASON_INVALID_PARAMETER)
        return None
    body = _read(sock, length, deadline)
    if len(body) < length:
        if not conn.stop_requested:
            _incomplete(conn, 6 + len(body), 6 + length)
        return None
    raw = header + body
    try:
        pdu = A_ASSOCIATE_RQ()
        pdu.decode(raw)
        primitive = pdu.to_primitive()
    except Exception as exc:  # any decoder failure: the bytes are not a request we can answer
        conn.warn("DIMSE connection from %s aborted: undecodable A-ASSOCIATE-RQ (%s)", conn.peer,
                  type(exc).__name__)
        log.debug("A-ASSOCIATE-RQ decoding failure", exc_info=True)
        abort_connection(sock, REASON_INVALID_PARAMETER)
        return None
    conn.calling = str(primitive.calling_ae_title).strip()
    try:
        sock.settimeout(None)  # back to the plain blocking socket both receive paths expect
    except OSError:
        return None
    return Request(raw, primitive)


def _incomplete(conn: Connection, got: int, wanted: int | None) -> None:
    if time.monotonic() >= conn.artim_deadline:
        log.info("DIMSE connection from %s closed: A-ASSOCIATE-RQ incomplete after %g s (ARTIM; %d of %s bytes)",
                 conn.peer, conn.limits.artim, got, wanted if wanted is not None else "6+")
    else:
        log.info("DIMSE connection from %s closed by the peer in the middle of its A-ASSOCIATE-RQ", conn.peer)
