"""An established storage-only association served in its own thread with a blocking socket (see
``dimse/fast_store``, the archive's DIMSE server, and ``adapters/remote/store_scp``, the storage SCP of
``dicomvault migrate``, which both hand their storage associations to it; it lives in this byte-level package so
that both may import it: ``LinkConnection`` is what it needs of the connection it serves).

Why not pynetdicom here: its acceptor runs two polling threads per association, reads 4 KiB at a time and copies
every fragment through PDU → primitive → queue → DIMSE message objects; with a handler that does nothing that
costs ~4 ms per 512 KiB image, more than storing it. This loop reads PDUs with large ``recv_into`` calls into one
preallocated buffer, splits P-DATA-TF PDVs in place (PS3.8 9.3.5, E.2) and appends data set fragments once, to
memory or, past ``SPOOL_THRESHOLD``, to an anonymous temporary file. Everything else reuses pynetdicom: command
sets are decoded with its ``dsutils``, responses built by its ``dimse_messages`` and ``pdu`` classes, so they are
encoded exactly as pynetdicom would encode them.

Only what an association of storage and verification contexts may carry is served: C-STORE-RQ, C-ECHO-RQ,
C-CANCEL-RQ (ignored: a C-STORE is answered when complete), A-RELEASE-RQ, A-ABORT. Anything else aborts the
association (PS3.8 9.2, state machine Sta6: unexpected or unrecognised PDU → A-ABORT), discarding the partial
object; nothing is stored unless the whole data set arrived.

Time is bounded by deadlines, never by a per-``recv`` timeout that trickling bytes would renew (issue #9): the
next message must start within ``dimse_idle_timeout`` of the previous one's response, each PDU must be complete
within ``dimse_timeout`` of its first byte, and the next PDU of a message must start within ``dimse_timeout``.
A stop ends an idle association at once (its read is woken by ``connections``) and one in the middle of a
C-STORE after that C-STORE is answered.
"""

from __future__ import annotations

import io
import logging
import socket
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import BinaryIO, Protocol, cast

from pydicom.dataset import Dataset
from pynetdicom.dimse_messages import C_ECHO_RSP, C_STORE_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import decode
from pynetdicom.pdu import A_RELEASE_RP, P_DATA_TF

from dicomvault.dicom.pdu import (
    ABORT,
    C_CANCEL_RQ,
    C_ECHO_RQ,
    C_STORE_RQ,
    DRAIN_SECONDS,  # noqa: F401 - part of this module's interface (tests wait for the drain)
    NO_DATASET,
    P_DATA,
    REASON_INVALID_PARAMETER,
    REASON_NOT_SPECIFIED,
    REASON_UNEXPECTED_PDU,
    REASON_UNRECOGNISED_PDU,
    RELEASE_RP,
    RELEASE_RQ,
    abort_connection,
    set_receive_timeout,
    set_socket_timeout,
    store_response_command,
)
from dicomvault.dicom.pdu import HEADER as _HEADER
from dicomvault.dicom.pdu import PDV as _PDV

log = logging.getLogger(__name__)

#: Data sets up to this size are assembled in memory; larger ones are spooled to a temporary file as they arrive,
#: so memory per association stays bounded (one PDU buffer + at most this much) whatever the object size.
SPOOL_THRESHOLD = 64 * 1024 * 1024
#: A command set is a few hundred bytes; anything this large is not one.
MAX_COMMAND = 64 * 1024
#: Non-P-DATA PDUs in an established association are 4 bytes long; a larger length field is garbage.
MAX_OTHER_PDU = 1024
VERIFICATION = "1.2.840.10008.1.1"
#: PS3.7 C.5.2: a DIMSE operation on a context that does not offer it (C-STORE on Verification).
SOP_CLASS_NOT_SUPPORTED = 0x0122
SUCCESS = 0x0000
#: PS3.4 B.2.3: Error: Cannot Understand.
STORE_CANNOT_UNDERSTAND = 0xC000

#: Stores one complete data set: (data set context, SOP class, SOP instance, transfer syntax) → status Dataset.
StoreFunction = Callable[[AbstractContextManager[tuple[BinaryIO, int, int]], str, str, str], Dataset]


class LinkLimits(Protocol):
    @property
    def idle(self) -> float:
        """Seconds an association may stay without a DIMSE message."""
        ...

    @property
    def pdu(self) -> float:
        """Seconds each PDU may take from its first byte; the most between two PDUs of one message."""
        ...


class LinkConnection(Protocol):
    """What ``StoreLink`` needs of the connection it serves: its socket and calling AE title, its deadlines, and
    the phase changes it reports (``dimse.connections.Connection`` for the DIMSE server; the migration's storage
    SCP has a simpler one)."""

    sock: socket.socket
    calling: str

    @property
    def limits(self) -> LinkLimits: ...

    @property
    def stop_requested(self) -> bool:
        """A stop was asked for: end once nothing is in flight."""
        ...

    @property
    def is_closing(self) -> bool:
        """Released or rejected: waiting for the peer to close."""
        ...

    def established(self, calling: str) -> None: ...

    def closing(self) -> None: ...

    def pdu_received(self) -> None: ...

    def idle(self) -> None: ...

    def busy(self) -> AbstractContextManager[None]: ...

    def wait_deadline(self) -> float | None: ...

    def overdue(self) -> str | None: ...

    def expiry_reason(self) -> str: ...


def status_dataset(code: int, comment: str | None = None) -> Dataset:
    """Status plus, when given, an ErrorComment (``comment`` must already fit LO: ASCII, at most 64 characters)."""
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment
    return ds


def _check_echoed_fields(cmd: Dataset) -> None:
    """The fields a response copies must be encodable: a Message ID that is one unsigned short, UIDs of at most
    64 ASCII characters. Otherwise the command set is garbled (found by the abuse campaign's garbage PDUs: a
    non-ASCII byte in Affected SOP Instance UID, or a Message ID of four bytes, made the response fail after the
    store, logged as an unexpected ERROR)."""
    message_id = cmd.get("MessageID")
    if not isinstance(message_id, int) or not 0 <= message_id <= 0xFFFF:
        raise ValueError("Message ID is not one unsigned short")
    for keyword in ("AffectedSOPClassUID", "AffectedSOPInstanceUID"):
        value = cmd.get(keyword)
        if value is not None and (not isinstance(value, str) or len(value) > 64 or not value.isascii()):
            raise ValueError(f"{keyword} is not a UID")


class Abort(Exception):
    """The association must end with an A-ABORT (provider initiated, ``reason``); ``detail`` is for the log."""

    def __init__(self, reason: int, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class PeerGone(Exception):
    """The peer closed the connection, aborted, or went silent past the timeout: close without answering."""


class DataSetSink:
    """Collects the fragments of one data set: in memory, then in an anonymous temporary file (deleted when
    closed, so an interrupted object leaves nothing behind) once it grows past ``threshold``."""

    def __init__(self, spool_dir: Path | None, threshold: int | None = None) -> None:
        # Fragments as immutable copies (the receive buffer they come from is reused): a data set sent in one
        # PDV is then handed to ingest without another copy (``io.BytesIO`` shares a ``bytes`` object).
        self._chunks: list[bytes] = []
        self._file: BinaryIO | None = None
        self._spool_dir = spool_dir
        self._threshold = SPOOL_THRESHOLD if threshold is None else threshold
        self.size = 0

    def write(self, fragment: memoryview) -> None:
        if self._file is None and self.size + len(fragment) > self._threshold:
            # Kept open across writes and closed by ``close`` (no context manager can span the fragments).
            self._file = cast(BinaryIO, tempfile.TemporaryFile(dir=self._spool_dir, prefix="dimse-"))  # noqa: SIM115
            self._file.writelines(self._chunks)
            self._chunks = []
        if self._file is not None:
            self._file.write(fragment)
        else:
            self._chunks.append(bytes(fragment))
        self.size += len(fragment)

    def dataset(self) -> AbstractContextManager[tuple[BinaryIO, int, int]]:
        """(stream, 0, length) of the complete data set, for ``handlers.store_received``."""
        if self._file is None:
            data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
            return nullcontext((cast(BinaryIO, io.BytesIO(data)), 0, self.size))
        self._file.flush()
        return nullcontext((self._file, 0, self.size))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._chunks = []


class StoreLink:
    """One established association: ``run`` serves it until release, abort, error or timeout, then closes.

    ``contexts`` maps each accepted presentation context ID to (abstract syntax, transfer syntax).
    ``max_pdu`` is the largest P-DATA-TF length we advertised (0: unlimited); ``peer_max_pdu`` the peer's,
    which bounds what we send. ``store`` stores one data set (``handlers.store_received`` bound to the archive
    and the calling AE). ``conn`` carries the deadlines: the next message within the idle timeout, each PDU
    complete within ``dimse_timeout`` of its first byte, the next PDU of a message within ``dimse_timeout``."""

    def __init__(self, conn: LinkConnection, contexts: dict[int, tuple[str, str]], max_pdu: int, peer_max_pdu: int,
                 store: StoreFunction, spool_dir: Path | None) -> None:
        self.conn = conn
        self.sock = conn.sock
        self.contexts = contexts
        self.max_pdu = max_pdu if max_pdu > 0 else 1 << 31
        self.peer_max_pdu = peer_max_pdu
        self.store = store
        self.spool_dir = spool_dir
        self.calling = conn.calling
        # Receive buffer: reads run ahead into it. It starts at up to 1 MiB and grows once to the largest PDU the
        # peer actually sends (at most our maximum), so idle associations stay small.
        self._buf = bytearray(min(self.max_pdu, 1024 * 1024) + 64 * 1024)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        # The message being assembled
        self._command = bytearray()
        self._command_done = False
        self._command_set: Dataset | None = None
        self._context_id = 0
        self._sink: DataSetSink | None = None
        self.stored = 0

    # -- the loop --------------------------------------------------------------------------------------------

    def run(self, accept: bytes) -> None:
        """Send the A-ASSOCIATE-AC (``accept``), then serve PDUs until the association ends. Never raises; always
        closes the socket."""
        try:
            set_socket_timeout(self.sock, self.conn.limits.pdu)  # sends; reads get their own deadline each time
            self._send(accept)
            self.conn.established(self.calling)
            while True:
                pdu_type, body = self._next_pdu()
                if pdu_type == P_DATA:
                    self._p_data(body)
                elif pdu_type == RELEASE_RQ:
                    self.conn.closing()
                    self._send(A_RELEASE_RP().encode())
                    log.debug("Association from %s released after %d objects", self.calling, self.stored)
                    self._close()
                    return
                elif pdu_type == ABORT:
                    raise PeerGone("A-ABORT received")
                elif pdu_type in (0x01, 0x02, 0x03, RELEASE_RP):
                    raise Abort(REASON_UNEXPECTED_PDU, f"unexpected PDU type 0x{pdu_type:02X}")
                else:
                    raise Abort(REASON_UNRECOGNISED_PDU, f"unrecognised PDU type 0x{pdu_type:02X}")
        except Abort as exc:
            log.info("Aborting association from %s: %s", self.calling, exc)
            self._abort(exc.reason)
        except PeerGone as exc:
            log.info("Association from %s ended: %s", self.calling, exc)
            self._close()
        except Exception as exc:
            # OSError on send, a bug: never let the thread die with the socket open. Type only above DEBUG.
            log.error("Association from %s failed: %s", self.calling, type(exc).__name__)
            log.debug("Association failure detail", exc_info=True)
            self._abort(REASON_NOT_SPECIFIED)

    def _next_pdu(self) -> tuple[int, memoryview]:
        """The next complete PDU (type, body), its body a view into the receive buffer valid until the next call."""
        if self._end == self._start:
            self._await_next()
        deadline = time.monotonic() + self.conn.limits.pdu  # the whole PDU, from its first byte
        self._fill(6, deadline)
        pdu_type, length = _HEADER.unpack_from(self._buf, self._start)
        limit = self.max_pdu if pdu_type == P_DATA else MAX_OTHER_PDU
        if length > limit:
            raise Abort(REASON_INVALID_PARAMETER, f"PDU type 0x{pdu_type:02X} of {length} bytes exceeds {limit}")
        if pdu_type not in (P_DATA, RELEASE_RQ, ABORT):
            # Unexpected or unknown: answered with an A-ABORT without waiting for a body that may never come.
            return pdu_type, self._view[0:0]
        self._fill(6 + length, deadline)
        body = self._view[self._start + 6 : self._start + 6 + length]
        self._start += 6 + length
        self.conn.pdu_received()
        return pdu_type, body

    def _await_next(self) -> None:
        """Wait for the first byte of the next PDU: within the idle timeout between messages (after a stop: not at
        all), within ``dimse_timeout`` of the previous PDU inside a message."""
        if not (self._command or self._command_done):
            self.conn.idle()
        reason = self.conn.overdue()
        if reason is not None:
            raise Abort(REASON_NOT_SPECIFIED, reason)
        deadline = self.conn.wait_deadline()
        self._fill(1, deadline if deadline is not None else time.monotonic() + self.conn.limits.idle,
                   waiting=True)

    def _fill(self, needed: int, deadline: float, waiting: bool = False) -> None:
        """Make ``needed`` bytes available from ``_start`` by ``deadline``, reading as much as the socket has (one
        PDU plus the start of the next, typically) into the free end of the buffer. ``waiting``: no byte of the PDU
        has arrived yet (a timeout is the idle or between-PDU one, not a PDU cut short)."""
        if self._end - self._start >= needed:
            return
        if self._start + needed > len(self._buf):
            remaining = self._end - self._start
            if needed > len(self._buf):
                # A PDU larger than the buffer (within our maximum, checked by the caller): grow, keep what we have.
                grown = bytearray(needed + 64 * 1024)
                grown[:remaining] = self._view[self._start : self._end]
                self._view.release()
                self._buf, self._view = grown, memoryview(grown)
            else:
                self._view[:remaining] = self._view[self._start : self._end]
            self._start, self._end = 0, remaining
        while self._end - self._start < needed:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                set_receive_timeout(self.sock, left)
                n = self.sock.recv_into(self._view[self._end :])
            except (BlockingIOError, TimeoutError) as exc:  # SO_RCVTIMEO expired: EAGAIN
                if waiting:
                    raise Abort(REASON_NOT_SPECIFIED, self.conn.expiry_reason()) from exc
                raise Abort(REASON_NOT_SPECIFIED,
                            f"PDU incomplete after {self.conn.limits.pdu:g} s (dimse_timeout)") from exc
            except OSError as exc:
                if self.conn.stop_requested:
                    raise Abort(REASON_NOT_SPECIFIED, "server stopping") from exc
                raise PeerGone(f"connection error ({type(exc).__name__})") from exc
            if n == 0:
                if self.conn.stop_requested and not self.conn.is_closing:
                    raise Abort(REASON_NOT_SPECIFIED, "server stopping")  # our SHUT_RD woke the read
                raise PeerGone("connection closed by peer" + (" mid-object" if self._sink else ""))
            self._end += n

    # -- messages ---------------------------------------------------------------------------------------------

    def _p_data(self, body: memoryview) -> None:
        """Split a P-DATA-TF into its PDVs (PS3.8 9.3.5) and feed each to the message being assembled."""
        offset, size = 0, len(body)
        if size == 0:
            raise Abort(REASON_INVALID_PARAMETER, "empty P-DATA-TF")
        while offset < size:
            if size - offset < 6:
                raise Abort(REASON_INVALID_PARAMETER, "truncated PDV item")
            item_length, context_id, control = _PDV.unpack_from(body, offset)
            if item_length < 2 or offset + 4 + item_length > size:
                raise Abort(REASON_INVALID_PARAMETER, "PDV item length outside its PDU")
            self._pdv(context_id, control, body[offset + 6 : offset + 4 + item_length])
            offset += 4 + item_length

    def _pdv(self, context_id: int, control: int, data: memoryview) -> None:
        """One PDV: bit 0 of the control header = command (else data set), bit 1 = last fragment (PS3.8 E.2)."""
        if context_id not in self.contexts:
            raise Abort(REASON_INVALID_PARAMETER, f"PDV on presentation context {context_id}, not accepted")
        if (self._command or self._command_done) and context_id != self._context_id:
            raise Abort(REASON_INVALID_PARAMETER, "one message's fragments on two presentation contexts")
        self._context_id = context_id
        if control & 0x01:
            if self._command_done:
                raise Abort(REASON_UNEXPECTED_PDU, "command fragment after a complete command set")
            if len(self._command) + len(data) > MAX_COMMAND:
                raise Abort(REASON_INVALID_PARAMETER, "command set too large")
            self._command += data
            if control & 0x02:
                self._command_complete()
            return
        if self._sink is None:
            raise Abort(REASON_UNEXPECTED_PDU, "data set fragment without a command expecting one")
        self._sink.write(data)
        if control & 0x02:
            self._dataset_complete()

    def _command_complete(self) -> None:
        try:
            cmd = decode(io.BytesIO(bytes(self._command)), True, True)
            field = int(cmd.CommandField)
            has_dataset = int(cmd.get("CommandDataSetType", NO_DATASET)) != NO_DATASET
            if field in (C_STORE_RQ, C_ECHO_RQ):
                _check_echoed_fields(cmd)
        except Exception as exc:
            raise Abort(REASON_INVALID_PARAMETER, f"undecodable command set ({type(exc).__name__})") from exc
        self._command_set = cmd
        self._command_done = True
        if field == C_STORE_RQ and has_dataset:
            self._sink = DataSetSink(self.spool_dir)
        elif field == C_STORE_RQ:
            self._answer_store(self._refused(STORE_CANNOT_UNDERSTAND, "C-STORE without a data set"))
        elif field == C_ECHO_RQ and not has_dataset:
            self._answer_echo()
        elif field == C_CANCEL_RQ and not has_dataset:
            self._reset()  # nothing to cancel: a C-STORE is answered once complete
        else:
            raise Abort(REASON_UNEXPECTED_PDU, f"DIMSE command 0x{field:04X} on a storage association")

    def _dataset_complete(self) -> None:
        sink = cast(DataSetSink, self._sink)
        abstract_syntax, transfer_syntax = self.contexts[self._context_id]
        cmd = cast(Dataset, self._command_set)
        try:
            if abstract_syntax == VERIFICATION:
                result = self._refused(SOP_CLASS_NOT_SUPPORTED, "C-STORE on the Verification context")
            else:
                with self.conn.busy():
                    result = self.store(sink.dataset(), str(cmd.get("AffectedSOPClassUID", "")),
                                        str(cmd.get("AffectedSOPInstanceUID", "")), transfer_syntax)
        finally:
            sink.close()
        self.stored += 1
        self._answer_store(result)

    def _refused(self, code: int, reason: str) -> Dataset:
        """A C-STORE refused by the receiver itself (not by ingest): logged like ``handlers.store_received``."""
        log.info("C-STORE from %s refused: status 0x%04X: %s", self.calling, code, reason)
        return status_dataset(code, reason)

    def _answer_store(self, result: Dataset) -> None:
        cmd = cast(Dataset, self._command_set)
        if len(result) == 1:
            # Status only (every success): the hot path, encoded directly (pynetdicom's message classes cost
            # ~0.9 ms per response); tests check the bytes equal pynetdicom's encoding.
            command = store_response_command(int(cmd.get("MessageID", 1)), str(cmd.get("AffectedSOPClassUID", "")),
                                             str(cmd.get("AffectedSOPInstanceUID", "")), int(result.Status))
            if not 0 < self.peer_max_pdu < len(command) + 6:  # else: the peer wants fragments; pynetdicom's path
                self._reset()
                self._send(_HEADER.pack(0x04, len(command) + 6) + _PDV.pack(len(command) + 2, self._context_id, 0x03)
                           + command)
                return
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo = cmd.get("MessageID", 1)
        rsp.AffectedSOPClassUID = cmd.get("AffectedSOPClassUID")
        rsp.AffectedSOPInstanceUID = cmd.get("AffectedSOPInstanceUID")
        for elem in result:  # Status, ErrorComment: as pynetdicom copies a handler's status Dataset
            setattr(rsp, elem.keyword, elem.value)
        self._respond(C_STORE_RSP(), rsp)

    def _answer_echo(self) -> None:
        cmd = cast(Dataset, self._command_set)
        rsp = C_ECHO()
        rsp.MessageIDBeingRespondedTo = cmd.get("MessageID", 1)
        rsp.AffectedSOPClassUID = cmd.get("AffectedSOPClassUID", VERIFICATION)
        rsp.Status = SUCCESS
        self._respond(C_ECHO_RSP(), rsp)

    def _respond(self, message: DIMSEMessage, primitive: C_STORE | C_ECHO) -> None:
        """Encode a response with pynetdicom's own message and PDU classes, fragmented to the peer's maximum."""
        message.primitive_to_message(primitive)
        pdus = [P_DATA_TF(p).encode() for p in message.encode_msg(self._context_id, self.peer_max_pdu)]
        self._reset()
        self._send(b"".join(pdus))

    def _reset(self) -> None:
        self._command = bytearray()
        self._command_done = False
        self._command_set = None
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    # -- ending -------------------------------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise PeerGone(f"send failed ({type(exc).__name__})") from exc

    def _abort(self, reason: int) -> None:
        """Send an A-ABORT (source: service provider), let the peer read it, close."""
        self._reset()
        abort_connection(self.sock, reason, self._view)

    def _close(self) -> None:
        self._reset()
        try:
            self.sock.close()
        except OSError:
            pass
