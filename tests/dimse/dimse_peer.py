"""A hand-driven association requestor for the access-control tests: it reads the exact A-ASSOCIATE-AC/RJ (result,
source, diagnostic) that the archive answers, from a chosen source address, with or without a user identity, on
the lean storage path (storage and Verification contexts only) or on pynetdicom's (a Q/R context among them)."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification, UserIdentityNegotiation
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

LEAN = (CTImageStorage, Verification)  # the lean storage path serves these
PYNETDICOM = (CTImageStorage, Verification, StudyRootQueryRetrieveInformationModelFind)  # Q/R: pynetdicom


@dataclass(frozen=True)
class Answer:
    """The archive's answer to an A-ASSOCIATE-RQ: ``accepted``, or the A-ASSOCIATE-RJ's three fields."""

    accepted: bool
    reject: tuple[int, int, int] | None = None
    identity_response: bool = False  # the A-ASSOCIATE-AC carries a User Identity sub-item

    @property
    def rejected(self) -> tuple[int, int, int]:
        assert self.reject is not None, "the association was accepted"
        return self.reject


def identity(kind: int, primary: bytes, secondary: bytes | None = None,
             response: bool = True) -> UserIdentityNegotiation:
    item = UserIdentityNegotiation()
    item.user_identity_type = kind
    item.primary_field = primary
    if secondary is not None:
        item.secondary_field = secondary
    item.positive_response_requested = response
    return item


def associate(port: int, calling: str, *, called: str = "DICOMVAULT", source: str = "127.0.0.1",
              abstract_syntaxes: tuple[str, ...] = LEAN, user: UserIdentityNegotiation | None = None) -> Answer:
    """Send one A-ASSOCIATE-RQ from ``source`` and return what the archive answered (then close)."""
    rq = A_ASSOCIATE()
    rq.application_context_name = "1.2.840.10008.3.1.1.1"
    rq.calling_ae_title, rq.called_ae_title = calling, called
    contexts = []
    for n, uid in enumerate(abstract_syntaxes):
        cx = build_context(uid)
        cx.context_id = 2 * n + 1
        contexts.append(cx)
    rq.presentation_context_definition_list = contexts
    ml = MaximumLengthNotification()
    ml.maximum_length_received = 16384
    rq.user_information = [ml] + ([user] if user is not None else [])
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(rq)
    with socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(source, 0)) as sock:
        sock.sendall(pdu.encode())
        header = _exactly(sock, 6)
        body = _exactly(sock, struct.unpack(">I", header[2:])[0])
        if header[0] == 0x03:
            return Answer(False, (body[1], body[2], body[3]))
        assert header[0] == 0x02, f"unexpected PDU type 0x{header[0]:02X}"
        ac = A_ASSOCIATE_AC()
        ac.decode(header + body)
        items = ac.to_primitive().user_information
        sock.sendall(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")  # A-RELEASE-RQ
        return Answer(True, None, any(isinstance(i, UserIdentityNegotiation) for i in items))


def _exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed by the archive")
        out += chunk
    return out
