"""A hand-driven DIMSE requestor over a raw socket, for protocol faults and exact reads of what the server sends."""

from __future__ import annotations

import io
import socket
import struct

import pydicom
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import A_ASSOCIATE_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

CT = "1.2.840.10008.5.1.4.1.1.2"


#: Study Root Q/R FIND: proposing it sends the association to pynetdicom instead of the lean storage path.
STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


class Raw:
    """A hand-driven requestor: proposes CT Image Storage (context 1, explicit VR LE) and Verification (3), and with
    ``query`` Study Root FIND (5, so that pynetdicom serves the association). ``source``: the local address to
    connect from (any of 127.0.0.0/8 on Linux: several "peers" on one machine)."""

    def __init__(self, port: int, aet: str = "RAW", *, query: bool = False, source: str | None = None,
                 called: str = "DICOMVAULT") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                             source_address=(source, 0) if source else None)
        self.aet = aet
        self.called = called
        self.query = query
        self.message_id = 0

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def request(self) -> bytes:
        """The encoded A-ASSOCIATE-RQ PDU."""
        rq = A_ASSOCIATE()
        rq.application_context_name = "1.2.840.10008.3.1.1.1"
        rq.calling_ae_title, rq.called_ae_title = self.aet, self.called
        contexts: list[PresentationContext] = []
        for context_id, uid in ((1, CTImageStorage), (3, Verification), (5, STUDY_FIND)):
            if uid == STUDY_FIND and not self.query:
                continue
            cx = build_context(uid, [ExplicitVRLittleEndian] if uid == CTImageStorage else None)
            cx.context_id = context_id
            contexts.append(cx)
        rq.presentation_context_definition_list = contexts
        ml = MaximumLengthNotification()
        ml.maximum_length_received = 16384
        rq.user_information = [ml]
        pdu = A_ASSOCIATE_RQ()
        pdu.from_primitive(rq)
        return bytes(pdu.encode())

    def associate(self, expect: int = 0x02) -> bytes:
        """Send the A-ASSOCIATE-RQ; return the body of the answer, which must be a PDU of type ``expect``."""
        self.sock.sendall(self.request())
        pdu_type, body = self.read_pdu()
        assert pdu_type == expect, pdu_type
        return body

    def read_pdu(self) -> tuple[int, bytes]:
        header = self._exactly(6)
        if len(header) < 6:
            return 0, b""  # closed
        length = struct.unpack(">I", header[2:])[0]
        return header[0], self._exactly(length)

    def _exactly(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                break
            out += chunk
        return out

    def closed_after_abort(self) -> bool:
        """True if the next PDU is an A-ABORT and the server then closes the connection."""
        pdu_type, _ = self.read_pdu()
        if pdu_type != 0x07:
            return False
        return self.sock.recv(1) == b""

    def message(self, msg: DIMSEMessage, primitive: object, context_id: int = 1) -> bytes:
        msg.primitive_to_message(primitive)  # type: ignore[arg-type]
        return b"".join(P_DATA_TF(p).encode() for p in msg.encode_msg(context_id, 16384))

    def store_command(self, uid: str, context_id: int = 1) -> bytes:
        self.message_id += 1
        rq = C_STORE()
        rq.MessageID = self.message_id
        rq.AffectedSOPClassUID = CT
        rq.AffectedSOPInstanceUID = uid
        rq.Priority = 2
        rq.DataSet = io.BytesIO(b"\0")  # replaced below: only the command set is taken from this message
        data = self.message(C_STORE_RQ(), rq, context_id)
        # keep the command PDU(s) only: the last PDU carries the one-byte placeholder data set
        cut = len(data) - (6 + 4 + 2 + 1)
        return data[:cut]

    def data_pdus(self, data: bytes, fragment: int, context_id: int = 1) -> bytes:
        out = b""
        for offset in range(0, len(data), fragment):
            chunk = data[offset : offset + fragment]
            last = offset + fragment >= len(data)
            item = struct.pack(">IBB", len(chunk) + 2, context_id, 0x02 if last else 0x00) + chunk
            out += struct.pack(">BxI", 0x04, len(item)) + item
        return out

    def store(self, data: bytes, uid: str, fragment: int = 16000) -> int:
        self.associate()
        self.sock.sendall(self.store_command(uid) + self.data_pdus(data, fragment))
        pdu_type, body = self.read_pdu()
        assert pdu_type == 0x04, pdu_type
        cmd = pydicom.filereader.read_dataset(io.BytesIO(body[6:]), True, True)
        return int(cmd.Status)

    def release(self) -> None:
        self.sock.sendall(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")
        assert self.read_pdu()[0] == 0x06
