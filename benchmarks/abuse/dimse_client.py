"""DIMSE from the client side: pynetdicom for well-behaved operations (echo, find, move, store), raw sockets and
pynetdicom's PDU classes for what a well-behaved client would never send."""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

import pydicom
import pydicom.filereader
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.pdu import A_ASSOCIATE_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from benchmarks.abuse.harness import AET, HOST

logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)  # the campaign's own client side: not what is measured

VERIFICATION = "1.2.840.10008.1.1"


def _ae(calling: str, timeout: float) -> AE:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    return ae


@dataclass
class Outcome:
    established: bool
    status: int | None = None
    comment: str = ""
    detail: str = ""


def echo(port: int, *, calling: str = "CAMPAIGN", called: str = AET, bind: str | None = None,
         timeout: float = 10) -> Outcome:
    """C-ECHO in its own association; ``bind`` chooses the client's loopback source address."""
    ae = _ae(calling, timeout)
    ae.add_requested_context(Verification)
    kwargs: dict[str, Any] = {"bind_address": (bind, 0)} if bind else {}
    assoc = ae.associate(HOST, port, ae_title=called, **kwargs)
    if not assoc.is_established:
        reason = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "no association"
        return Outcome(False, detail=reason)
    try:
        rsp = assoc.send_c_echo()
        return Outcome(True, int(rsp.Status) if "Status" in rsp else None)
    finally:
        assoc.release()


def find(port: int, identifier: Dataset, *, level_root: str = "study", timeout: float = 120,
         calling: str = "CAMPAIGN") -> tuple[int, int | None, str, float]:
    """C-FIND: (number of pending responses, final status, final ErrorComment, seconds)."""
    model = StudyRootQueryRetrieveInformationModelFind if level_root == "study" else \
        PatientRootQueryRetrieveInformationModelFind
    ae = _ae(calling, timeout)
    ae.add_requested_context(model)
    assoc = ae.associate(HOST, port, ae_title=AET)
    if not assoc.is_established:
        raise RuntimeError("C-FIND association not established")
    pending, final, comment = 0, None, ""
    start = time.perf_counter()
    try:
        for status, _ in assoc.send_c_find(identifier, model):
            if status is None or "Status" not in status:
                break
            code = int(status.Status)
            if code in (0xFF00, 0xFF01):
                pending += 1
            else:
                final, comment = code, str(status.get("ErrorComment", ""))
    finally:
        assoc.release()
    return pending, final, comment, time.perf_counter() - start


def move(port: int, identifier: Dataset, destination: str, *, timeout: float = 60) -> tuple[int | None, Dataset]:
    """C-MOVE: the final status and its whole status data set (sub-operation counts, ErrorComment)."""
    ae = _ae("CAMPAIGN", timeout)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate(HOST, port, ae_title=AET)
    if not assoc.is_established:
        raise RuntimeError("C-MOVE association not established")
    final: int | None = None
    last = Dataset()
    try:
        for status, _ in assoc.send_c_move(identifier, destination, StudyRootQueryRetrieveInformationModelMove):
            if status is None or "Status" not in status:
                break
            last = status
            if int(status.Status) not in (0xFF00,):
                final = int(status.Status)
    finally:
        assoc.release()
    return final, last


class StoreAssociation:
    """One storage association (pynetdicom) kept open for many C-STOREs of raw data set bytes. With
    ``with_find`` it also proposes a Q/R context, so the server serves it through pynetdicom instead of its lean
    storage path."""

    def __init__(self, port: int, calling: str, *, with_find: bool = False, timeout: float = 60) -> None:
        ae = _ae(calling, timeout)
        ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
        ae.add_requested_context(SecondaryCaptureImageStorage, [ExplicitVRLittleEndian])
        if with_find:
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        self.assoc = ae.associate(HOST, port, ae_title=AET)
        if not self.assoc.is_established:
            raise RuntimeError("storage association not established")

    def store(self, part10: bytes) -> tuple[int | None, str]:
        """C-STORE one object: (status, ErrorComment), status None when no response came. pynetdicom encodes the
        data set again, byte for byte what ``objects.dataset_bytes(part10)`` is (pydicom keeps raw elements)."""
        ds = pydicom.dcmread(io.BytesIO(part10))
        rsp = self.assoc.send_c_store(ds)
        if rsp is None or "Status" not in rsp:
            return None, "no response"
        return int(rsp.Status), str(rsp.get("ErrorComment", "") or "")

    def close(self) -> None:
        if self.assoc.is_established:
            self.assoc.release()


# -- raw PDUs --------------------------------------------------------------------------------------------------------


def associate_rq(calling: str = "CAMPAIGN", called: str = AET, *, storage_only: bool = True,
                 max_pdu: int = 16384) -> bytes:
    """An A-ASSOCIATE-RQ proposing CT storage (context 1, explicit VR LE) and Verification (3), plus Study Root
    FIND (5) unless ``storage_only`` (then the server's lean path answers it, else pynetdicom)."""
    rq = A_ASSOCIATE()
    rq.application_context_name = "1.2.840.10008.3.1.1.1"
    rq.calling_ae_title, rq.called_ae_title = calling, called
    contexts = [build_context(CTImageStorage, [ExplicitVRLittleEndian]), build_context(Verification)]
    if not storage_only:
        contexts.append(build_context(StudyRootQueryRetrieveInformationModelFind, [ImplicitVRLittleEndian]))
    for i, cx in enumerate(contexts):
        cx.context_id = 2 * i + 1
    rq.presentation_context_definition_list = contexts
    ml = MaximumLengthNotification()
    ml.maximum_length_received = max_pdu
    rq.user_information = [ml]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(rq)
    return bytes(pdu.encode())


def p_data(message: DIMSEMessage, primitive: C_STORE | C_ECHO, context_id: int, max_pdu: int = 16384) -> bytes:
    message.primitive_to_message(primitive)
    return b"".join(P_DATA_TF(p).encode() for p in message.encode_msg(context_id, max_pdu))


def echo_pdus(message_id: int = 1) -> bytes:
    rq = C_ECHO()
    rq.MessageID, rq.AffectedSOPClassUID = message_id, VERIFICATION
    return p_data(C_ECHO_RQ(), rq, 3)


def store_pdus(dataset_bytes: bytes, sop: str, message_id: int = 1, max_pdu: int = 16384) -> bytes:
    rq = C_STORE()
    rq.MessageID, rq.AffectedSOPClassUID, rq.AffectedSOPInstanceUID = message_id, CTImageStorage, sop
    rq.Priority = 2
    rq.DataSet = io.BytesIO(dataset_bytes)
    return p_data(C_STORE_RQ(), rq, 1, max_pdu)


RELEASE_RQ = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"


def raw_store(port: int, dataset: bytes, sop: str, *, calling: str = "CAMPAIGN") -> tuple[int | None, str]:
    """C-STORE of data set bytes exactly as given (pynetdicom's own SCU would re-encode a damaged data set into a
    well-formed one): (status, ErrorComment), status None when the association or the answer failed."""
    with connect(port, timeout=30) as sock:
        sock.sendall(associate_rq(calling))
        answer = read_pdu(sock)
        if answer is None or answer[0] != 0x02:
            return None, "association not accepted"
        sock.sendall(store_pdus(dataset, sop))
        command = b""
        while True:
            pdu = read_pdu(sock)
            if pdu is None or pdu[0] != 0x04:
                return None, "no C-STORE response"
            body, pos = pdu[1], 0
            while pos + 6 <= len(body):
                length, _, control = struct.unpack_from(">IBB", body, pos)
                command += body[pos + 6 : pos + 4 + length]
                pos += 4 + length
                if control & 0x02:
                    rsp = pydicom.filereader.read_dataset(io.BytesIO(command), True, True)
                    with contextlib.suppress(OSError):
                        sock.sendall(RELEASE_RQ)
                        read_pdu(sock)
                    return int(rsp.Status), str(rsp.get("ErrorComment", "") or "")


def read_pdu(sock: socket.socket) -> tuple[int, bytes] | None:
    """The next whole PDU, or None when the connection ends (or times out) first."""
    head = _exactly(sock, 6)
    if head is None:
        return None
    body = _exactly(sock, struct.unpack(">I", head[2:])[0])
    return (head[0], body) if body is not None else None


def _exactly(sock: socket.socket, n: int) -> bytes | None:
    out = b""
    try:
        while len(out) < n:
            chunk = sock.recv(min(n - len(out), 1 << 20))
            if not chunk:
                return None
            out += chunk
    except OSError:
        return None
    return out


def connect(port: int, *, bind: str | None = None, timeout: float = 10) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(timeout)
    if bind:
        sock.bind((bind, 0))
    sock.connect((HOST, port))
    return sock
