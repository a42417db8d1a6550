"""The DICOM upper layer's bytes (PS3.8 9.3) that the lean DIMSE paths write and read on a plain blocking socket.

Why here: three loops speak P-DATA-TF directly instead of through pynetdicom's queues and polling threads (issue #2
and issue #12's throughput follow-ups): the archive's own storage SCP (``dimse/fast_store`` + ``dicom/store_link``),
the storage SCP ``dicomvault migrate`` runs for C-MOVE sub-operations (``adapters/remote/store_scp``), and routing's
storage SCU (``adapters/remote/store_sender``). The front end (``dimse``) and the adapters may not import each
other, so the pieces they share live in this byte-level package: PDU and PDV framing, the two C-STORE command sets
of the hot path (encoded element for element as pynetdicom encodes them; tests compare the bytes), socket deadlines
and the A-ABORT that lets the peer read it. Everything rarer (A-ASSOCIATE PDUs, other DIMSE messages) is encoded
and decoded by pynetdicom's own classes by the callers.
"""

from __future__ import annotations

import socket
import struct
import time

from pynetdicom.pdu import A_ABORT_RQ

# PDU types (PS3.8 9.3.1)
ASSOCIATE_RQ = 0x01
ASSOCIATE_AC = 0x02
ASSOCIATE_RJ = 0x03
P_DATA = 0x04
RELEASE_RQ = 0x05
RELEASE_RP = 0x06
ABORT = 0x07
# A-ABORT sources and provider reasons (PS3.8 9.3.8)
SOURCE_USER = 0x00
SOURCE_PROVIDER = 0x02
REASON_NOT_SPECIFIED = 0x00
REASON_UNRECOGNISED_PDU = 0x01
REASON_UNEXPECTED_PDU = 0x02
REASON_INVALID_PARAMETER = 0x06
# PDV message control header bits (PS3.8 E.2)
COMMAND = 0x01
LAST = 0x02
# DIMSE command fields and data set types (PS3.7 E.1)
C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_ECHO_RQ = 0x0030
C_CANCEL_RQ = 0x0FFF
NO_DATASET = 0x0101
#: What pynetdicom writes in CommandDataSetType when a data set follows (PS3.7: anything but 0x0101).
HAS_DATASET = 0x0001

#: How long, and how many bytes, to keep reading after sending an A-ABORT before closing, so that the kernel does
#: not answer the peer's unread data with a RST that could destroy the A-ABORT before the peer reads it.
DRAIN_SECONDS = 0.5
DRAIN_BYTES = 8 * 1024 * 1024

#: PDU header: type, reserved, length (big endian).
HEADER = struct.Struct(">BxI")
#: PDV item header: item length, presentation context ID, message control header.
PDV = struct.Struct(">IBB")
#: P-DATA-TF PDU header followed by the header of its single PDV item.
PDU_PDV = struct.Struct(">BxIIBB")
_ELEMENT = struct.Struct("<HHI")
_US = struct.Struct("<HHIH")


def _ui(element: int, uid: str) -> bytes:
    value = uid.encode("ascii")
    if len(value) % 2:
        value += b"\0"  # UI values are padded with a NUL to even length (PS3.5 6.2)
    return _ELEMENT.pack(0x0000, element, len(value)) + value


def _command(body: bytes) -> bytes:
    return _ELEMENT.pack(0x0000, 0x0000, 4) + struct.pack("<I", len(body)) + body


def store_response_command(message_id: int, sop_class_uid: str, sop_instance_uid: str, code: int) -> bytes:
    """A C-STORE-RSP command set with a Status and no ErrorComment, Implicit VR Little Endian (PS3.7 9.3.1.2,
    E.1), element for element what pynetdicom's ``C_STORE_RSP`` encodes."""
    return _command(b"".join((
        _ui(0x0002, sop_class_uid),
        _US.pack(0x0000, 0x0100, 2, C_STORE_RSP),  # CommandField
        _US.pack(0x0000, 0x0120, 2, message_id & 0xFFFF),  # MessageIDBeingRespondedTo
        _US.pack(0x0000, 0x0800, 2, NO_DATASET),  # CommandDataSetType
        _US.pack(0x0000, 0x0900, 2, code),  # Status
        _ui(0x1000, sop_instance_uid),
    )))


def store_request_command(message_id: int, sop_class_uid: str, sop_instance_uid: str, priority: int = 0) -> bytes:
    """A C-STORE-RQ command set (PS3.7 9.3.1.1) without Move Originator, Implicit VR Little Endian, element for
    element what pynetdicom's ``C_STORE_RQ`` encodes (``priority``: 0 medium, 1 high, 2 low)."""
    return _command(b"".join((
        _ui(0x0002, sop_class_uid),
        _US.pack(0x0000, 0x0100, 2, C_STORE_RQ),  # CommandField
        _US.pack(0x0000, 0x0110, 2, message_id & 0xFFFF),  # MessageID
        _US.pack(0x0000, 0x0700, 2, priority),  # Priority
        _US.pack(0x0000, 0x0800, 2, HAS_DATASET),  # CommandDataSetType
        _ui(0x1000, sop_instance_uid),
    )))


def p_data(context_id: int, control: int, fragment: bytes) -> bytes:
    """One P-DATA-TF PDU carrying ``fragment`` as its single PDV."""
    return PDU_PDV.pack(P_DATA, len(fragment) + 6, len(fragment) + 2, context_id, control) + fragment


def fragments(data: bytes, context_id: int, control: int, peer_max_pdu: int) -> bytes:
    """``data`` (a command set, typically) as P-DATA-TF PDUs of at most ``peer_max_pdu`` bytes (0: one PDU), the
    last fragment flagged ``LAST`` (PS3.8 E.2)."""
    size = peer_max_pdu - 6 if peer_max_pdu > 6 else max(len(data), 1)
    pieces = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    return b"".join(p_data(context_id, control | (LAST if n == len(pieces) - 1 else 0), piece)
                    for n, piece in enumerate(pieces))


def _timeval(seconds: float | None) -> bytes:
    whole = int(seconds or 0)
    return struct.pack("ll", whole, int(((seconds or 0) - whole) * 1_000_000))


def set_socket_timeout(sock: socket.socket, seconds: float | None) -> None:
    """Kernel-side send/receive timeouts on a *blocking* socket. Python's own ``settimeout`` makes the socket
    non-blocking and polls before every call (one extra syscall per read); SO_RCVTIMEO/SO_SNDTIMEO keep the
    plain blocking calls and still end a read from a silent peer. ``None`` or 0 clears."""
    value = _timeval(seconds)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


def set_receive_timeout(sock: socket.socket, seconds: float) -> None:
    """SO_RCVTIMEO only (one syscall): set before each blocking read to what is left of the current deadline,
    so that bytes trickling in never extend it."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(max(seconds, 0.001)))


def abort_pdu(source: int, reason: int) -> bytes:
    pdu = A_ABORT_RQ()
    pdu.source, pdu.reason_diagnostic = source, reason
    return bytes(pdu.encode())


def abort_connection(sock: socket.socket, reason: int, scratch: memoryview | None = None, *,
                     source: int = SOURCE_PROVIDER) -> None:
    """Send an A-ABORT (``source``: service provider by default, ``reason``), let the peer read it, close. Reading
    on for a moment (at most ``DRAIN_BYTES``, discarded into ``scratch``) keeps the kernel from answering the peer's
    unread data with a RST that could destroy the A-ABORT before the peer reads it."""
    buffer = scratch if scratch is not None else memoryview(bytearray(64 * 1024))
    try:
        sock.settimeout(None)
        set_socket_timeout(sock, DRAIN_SECONDS)
        sock.sendall(abort_pdu(source, reason))
        sock.shutdown(socket.SHUT_WR)
        deadline, drained = time.monotonic() + DRAIN_SECONDS, 0
        while time.monotonic() < deadline and drained < DRAIN_BYTES:
            n = sock.recv_into(buffer)
            if n == 0:
                break
            drained += n
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
