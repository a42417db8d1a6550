"""DICOM Part 10 framing for objects that arrive without it (a C-STORE carries only the dataset).

The archive keeps the received dataset bytes unchanged: it only prepends the 128-byte preamble, ``DICM`` and a
File Meta Information group that records who sent it.
"""

from __future__ import annotations

import io
import struct

from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from dicomvault import __version__

IMPLEMENTATION_VERSION = f"DICOMVAULT_{__version__}"[:16]
PREAMBLE = b"\x00" * 128 + b"DICM"


def _element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element of the meta group (every VR used here has a 2-byte length, except
    OB with its reserved bytes and 4-byte length)."""
    if vr == b"OB":
        return struct.pack("<HH2s2xI", group, element, vr, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def _ui(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def _text(value: str) -> bytes:
    raw = value.encode("ascii", "replace")
    return raw + b" " if len(raw) % 2 else raw


def file_meta_bytes(
    *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_aet: str | None = None
) -> bytes:
    """Preamble + 'DICM' + group 0002 for a dataset encoded in ``transfer_syntax_uid``.

    Encoded here rather than through pydicom's ``write_file_meta_info`` (the bytes are identical, which the tests
    check): this runs for every C-STORE, and building a ``FileMetaDataset`` to write eight elements cost ~0.4 ms,
    a tenth of what an instance costs at ingest."""
    body = b"".join((
        _element(0x0002, 0x0001, b"OB", b"\x00\x01"),
        _element(0x0002, 0x0002, b"UI", _ui(sop_class_uid)),
        _element(0x0002, 0x0003, b"UI", _ui(sop_instance_uid)),
        _element(0x0002, 0x0010, b"UI", _ui(transfer_syntax_uid)),
        _element(0x0002, 0x0012, b"UI", _ui(PYDICOM_IMPLEMENTATION_UID)),
        _element(0x0002, 0x0013, b"SH", _text(IMPLEMENTATION_VERSION)),
        _element(0x0002, 0x0016, b"AE", _text(source_aet.strip()[:16])) if source_aet and source_aet.strip() else b"",
    ))
    return PREAMBLE + _element(0x0002, 0x0000, b"UL", struct.pack("<I", len(body))) + body


def file_meta_bytes_pydicom(
    *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_aet: str | None = None
) -> bytes:
    """The same bytes written by pydicom: the reference ``file_meta_bytes`` is tested against."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    if source_aet:
        meta.SourceApplicationEntityTitle = source_aet.strip()[:16]
    buf = io.BytesIO()
    buf.write(PREAMBLE)
    write_file_meta_info(buf, meta, enforce_standard=True)  # type: ignore[arg-type]
    return buf.getvalue()


def dataset_offset(header: bytes) -> int:
    """Length of preamble + meta in a Part 10 file's first bytes (0 when the file has no meta)."""
    if len(header) < 144 or header[128:132] != b"DICM":
        return 0
    # (0002,0000) File Meta Information Group Length, explicit VR little endian, UL
    group_len = int.from_bytes(header[140:144], "little")
    return 132 + 12 + group_len
