"""Property-based fuzzing of the DIMSE byte-level code (issue #9): the lean PDU receiver (``store_link.StoreLink``)
fed random and mutated PDU streams over a socketpair. The data set strategies here also feed the header reader's
fuzzer (tests/dicom/test_dicom_header_reader_fuzz.py). Example counts and the long-run switch: tests/fuzzing.py."""

from __future__ import annotations

import functools
import io
import logging
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.pdu import A_RELEASE_RQ, P_DATA_TF

from dicomvault.dicom import store_link
from dicomvault.dimse import status
from dicomvault.dimse.connections import Connection, Limits
from tests.fuzzing import fuzz_settings

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on invalid values: expected here

CT = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"
_LONG = {"OB", "OW", "SQ", "UN", "UT", "UC", "UR"}

# -- the quick identity walk ------------------------------------------------------------------------------------


def _element(tag: int, vr: str, value: bytes, implicit: bool, *, undefined: bool = False) -> bytes:
    group, elem = tag >> 16, tag & 0xFFFF
    length = 0xFFFFFFFF if undefined else len(value)
    if implicit:
        return struct.pack("<HHI", group, elem, length) + value
    if vr in _LONG:
        return struct.pack("<HH2sHI", group, elem, vr.encode(), 0, length) + value
    return struct.pack("<HH2sH", group, elem, vr.encode(), len(value)) + value


def _padded(value: bytes, pad: bytes) -> bytes:
    return value + pad * (len(value) % 2)


#: UID-ish values: mostly digits and dots, sometimes what a broken sender writes (spaces, NULs, backslashes).
uid_values = st.one_of(
    st.from_regex(r"\A[0-9]{1,8}(\.[0-9]{1,8}){0,8}\Z").map(str.encode),
    st.binary(max_size=70),
    st.text(alphabet="0123456789. \x00\\", max_size=70).map(str.encode),
)


@st.composite
def data_sets(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A little endian data set (implicit or explicit VR) with some elements before, the two SOP UIDs (either may
    be missing), and some after, encoded by hand so that every length and padding choice is possible."""
    implicit = draw(st.booleans())
    out = b""
    if draw(st.booleans()):
        out += _element(0x00080005, "CS", b"ISO_IR 100", implicit)
    if draw(st.booleans()):
        out += _element(0x00080008, "CS", b"ORIGINAL\\PRIMARY\\AXIAL ", implicit)
    if draw(st.booleans()):  # a sequence before the UIDs, defined or undefined length
        inner = _element(0x00080100, "SH", b"eng ", implicit)
        undefined = draw(st.booleans())
        item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF if undefined else len(inner)) + inner
        if undefined:
            item += struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
        seq = item + (struct.pack("<HHI", 0xFFFE, 0xE0DD, 0) if undefined else b"")
        out += _element(0x00080006, "SQ", seq, implicit, undefined=undefined)
    if draw(st.booleans()):
        out += _element(0x00080012, "DA", b"20240102", implicit)
    if draw(st.booleans()):
        out += _element(0x00080016, "UI", _padded(draw(uid_values), b"\0"), implicit)
    if draw(st.booleans()):
        out += _element(0x00080018, "UI", _padded(draw(uid_values), b"\0"), implicit)
    if draw(st.booleans()):
        out += _element(0x00080020, "DA", b"20240102", implicit)
        out += _element(0x00100010, "PN", b"DOE^JANE", implicit)
    return out, implicit


@st.composite
def mutated(draw: st.DrawFn, source: st.SearchStrategy[tuple[bytes, bool]]) -> tuple[bytes, bool]:
    """``source`` data sets, then a few byte-level mutations: overwrite, insert, delete, truncate."""
    data, implicit = draw(source)
    buf = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(0, len(buf))))
        if op == "set" and buf:
            buf[min(pos, len(buf) - 1)] = draw(st.integers(0, 255))
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del buf[pos : pos + draw(st.integers(1, 8))]
        else:
            del buf[pos:]
    return bytes(buf), implicit


# -- the lean PDU receiver ------------------------------------------------------------------------------------------

MAX_PDU = 16 * 1024
TIMEOUT = 0.2
CONTEXTS = {1: (CT, ExplicitVRLittleEndian), 3: (VERIFICATION, ImplicitVRLittleEndian)}


def _pdus(message: DIMSEMessage, primitive: C_STORE | C_ECHO, context_id: int, max_pdu: int) -> bytes:
    message.primitive_to_message(primitive)
    return b"".join(P_DATA_TF(p).encode() for p in message.encode_msg(context_id, max_pdu))


@functools.lru_cache
def _valid_stream(n_stores: int, max_pdu: int) -> bytes:
    """A well-formed association body: a C-ECHO, ``n_stores`` small C-STOREs (fragmented to ``max_pdu``), a release."""
    echo = C_ECHO()
    echo.MessageID, echo.AffectedSOPClassUID = 1, VERIFICATION
    out = _pdus(C_ECHO_RQ(), echo, 3, max_pdu)
    for i in range(n_stores):
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID, ds.PatientName = CT, f"1.2.3.{i}", "FUZZ^PATIENT"
        ds.BitsAllocated = 8
        ds.PixelData = bytes(range(256)) * 8
        buf = io.BytesIO()
        ds.save_as(buf, implicit_vr=False, little_endian=True)
        rq = C_STORE()
        rq.MessageID, rq.AffectedSOPClassUID, rq.AffectedSOPInstanceUID = i + 2, CT, f"1.2.3.{i}"
        rq.Priority = 2
        rq.DataSet = io.BytesIO(buf.getvalue())
        out += _pdus(C_STORE_RQ(), rq, 1, max_pdu)
    return out + A_RELEASE_RQ().encode()


@st.composite
def pdu_streams(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["valid", "mutated", "mutated", "random", "lengths"]))
    if kind == "random":
        return draw(st.binary(max_size=2048))
    stream = bytearray(_valid_stream(draw(st.integers(0, 2)), draw(st.sampled_from([256, 1024, MAX_PDU]))))
    if kind == "lengths":  # a PDU or PDV length field overwritten: lengths are where receivers go wrong
        for _ in range(draw(st.integers(1, 3))):
            pos = draw(st.integers(0, len(stream) - 4))
            stream[pos : pos + 4] = struct.pack(">I", draw(st.sampled_from(
                [0, 1, 2, 5, 6, MAX_PDU - 1, MAX_PDU, MAX_PDU + 1, 1 << 20, 0x7FFFFFFF, 0xFFFFFFFF])))
    elif kind == "mutated":
        for _ in range(draw(st.integers(1, 4))):
            pos = draw(st.integers(0, len(stream)))
            op = draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
            if op == "set" and pos < len(stream):
                stream[pos] = draw(st.integers(0, 255))
            elif op == "insert":
                stream[pos:pos] = draw(st.binary(min_size=1, max_size=16))
            elif op == "delete":
                del stream[pos : pos + draw(st.integers(1, 16))]
            elif op == "truncate":
                del stream[pos:]
    return bytes(stream)


@dataclass
class LinkRun:
    replies: bytes
    errors: list[BaseException]
    finished: bool
    socket_closed: bool
    buffer_size: int
    stored: list[tuple[str, str, str, int]] = field(default_factory=list)


def _run_link(stream: bytes, chunk: int, keep_open: bool, tmp: Path) -> LinkRun:
    ours, peer = socket.socketpair()
    stored: list[tuple[str, str, str, int]] = []

    def store(dataset: object, sop_class: str, sop_instance: str, transfer_syntax: str) -> Dataset:
        with dataset as (stream_, start, length):  # type: ignore[attr-defined]
            data = _read_all(stream_, start, length)
        stored.append((sop_class, sop_instance, transfer_syntax, len(data)))
        return status.status_dataset(status.SUCCESS)

    # Every deadline (between messages, between the PDUs of one message, each PDU from its first byte) is TIMEOUT,
    # so a silent or trickling peer is cut within a fraction of a second.
    limits = Limits(max_connections=1, max_per_address=1, artim=TIMEOUT, idle=TIMEOUT, pdu=TIMEOUT, grace=TIMEOUT)
    conn = Connection(ours, ("192.0.2.1", 104), limits)
    conn.calling = "FUZZ"
    link = store_link.StoreLink(conn, CONTEXTS, MAX_PDU, MAX_PDU, store, tmp)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            link.run(b"")
        except BaseException as exc:  # run() must never raise: collected for the assertion
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    peer.settimeout(5)
    try:
        for i in range(0, len(stream), chunk):
            peer.sendall(stream[i : i + chunk])
        if not keep_open:
            peer.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the receiver aborted and closed while we were still sending: allowed
    replies = bytearray()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            data = peer.recv(65536)
        except (TimeoutError, OSError):
            break
        if not data:
            break
        replies += data
    peer.close()
    thread.join(TIMEOUT + store_link.DRAIN_SECONDS + 5)
    return LinkRun(bytes(replies), errors, not thread.is_alive(), ours.fileno() == -1, len(link._buf), stored)


def _read_all(stream: BinaryIO, start: int, length: int) -> bytes:
    stream.seek(start)
    return stream.read(length)


def _reply_pdu_types(replies: bytes) -> list[int]:
    """Split what the receiver sent into PDUs; fails if it is not a clean sequence of whole PDUs."""
    types, pos = [], 0
    while pos < len(replies):
        assert pos + 6 <= len(replies), "a truncated PDU was sent"
        pdu_type, length = struct.unpack_from(">BxI", replies, pos)
        pos += 6 + length
        assert pos <= len(replies), "a truncated PDU was sent"
        types.append(pdu_type)
    return types


@fuzz_settings(100)
@given(stream=pdu_streams(), chunk=st.sampled_from([1, 7, 512, 65536]), keep_open=st.booleans())
@example(stream=_valid_stream(2, MAX_PDU), chunk=65536, keep_open=False)
def test_lean_receiver_answers_or_aborts_cleanly(stream: bytes, chunk: int, keep_open: bool, tmp_path_factory:
                                                 pytest.TempPathFactory) -> None:
    run = _run_link(stream, chunk, keep_open, tmp_path_factory.getbasetemp())
    assert run.finished, "the receiver did not end within its timeout"
    assert not run.errors, run.errors
    assert run.socket_closed
    assert run.buffer_size <= MAX_PDU + 6 + 64 * 1024  # never a buffer beyond the largest PDU we announced
    types = _reply_pdu_types(run.replies)
    assert set(types) <= {0x04, 0x06, 0x07}  # P-DATA-TF answers, A-RELEASE-RP, A-ABORT
    assert all(t == 0x04 for t in types[:-1])  # a release answer or an abort ends the association
    if stream == _valid_stream(2, MAX_PDU):
        assert types == [0x04, 0x04, 0x04, 0x06] and len(run.stored) == 2


def test_lean_receiver_survives_a_silent_peer(tmp_path: Path) -> None:
    """A peer that sends half a PDU and waits: the receiver gives up after its timeout, aborts, and closes."""
    run = _run_link(_valid_stream(1, MAX_PDU)[:40], 40, True, tmp_path)
    assert run.finished and not run.errors and run.socket_closed
    assert _reply_pdu_types(run.replies)[-1] == 0x07


def _command_pdu(elements: list[tuple[int, bytes]], context_id: int) -> bytes:
    """A command set (implicit VR little endian, group length first) in one P-DATA-TF, written by hand so that its
    fields can hold what no encoder would write."""
    body = b"".join(struct.pack("<HHI", 0x0000, element, len(value)) + value for element, value in elements)
    command = struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + body
    item = struct.pack(">IBB", len(command) + 2, context_id, 0x03) + command
    return struct.pack(">BxI", 0x04, len(item)) + item


@pytest.mark.parametrize("case", ["message-id-of-four-bytes", "non-ascii-instance-uid"])
def test_lean_receiver_aborts_a_command_whose_echoed_fields_cannot_be_encoded(
    case: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by the campaign's garbage PDUs: the response copies Message ID and the SOP UIDs; garbled ones made
    it fail after the store (an unexpected ERROR). Now the command is refused at once with an A-ABORT."""
    if case == "message-id-of-four-bytes":
        stream = _command_pdu([(0x0002, b"1.2.840.10008.1.1\0"), (0x0100, struct.pack("<H", 0x0030)),
                               (0x0110, struct.pack("<HH", 1, 2)), (0x0800, struct.pack("<H", 0x0101))], 3)
    else:
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = CT, "1.2.3.4"
        buf = io.BytesIO()
        ds.save_as(buf, implicit_vr=False, little_endian=True)
        data = buf.getvalue()
        item = struct.pack(">IBB", len(data) + 2, 1, 0x02) + data
        stream = _command_pdu([(0x0002, CT.encode() + b"\0"), (0x0100, struct.pack("<H", 0x0001)),
                               (0x0110, struct.pack("<H", 7)), (0x0700, struct.pack("<H", 2)),
                               (0x0800, struct.pack("<H", 0x0000)), (0x1000, b"1.2.3.\xa1")], 1) \
            + struct.pack(">BxI", 0x04, len(item)) + item
    with caplog.at_level(logging.INFO, logger="dicomvault.dicom.store_link"):
        run = _run_link(stream, 65536, False, tmp_path)
    assert run.finished and not run.errors and run.socket_closed
    assert _reply_pdu_types(run.replies) == [0x07] and run.stored == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("undecodable command set" in r.getMessage() for r in caplog.records)
