"""DICOM Part 10 framing for objects that arrive without it (a C-STORE carries only the dataset).

The archive keeps the received dataset bytes unchanged: it only prepends the 128-byte preamble, ``DICM`` and a
File Meta Information group that records who sent it.
"""

from __future__ import annotations

import io

from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID

from dicomvault import __version__

IMPLEMENTATION_VERSION = f"DICOMVAULT_{__version__}"[:16]


def file_meta_bytes(
    *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_aet: str | None = None
) -> bytes:
    """Preamble + 'DICM' + group 0002 for a dataset encoded in ``transfer_syntax_uid``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    if source_aet:
        meta.SourceApplicationEntityTitle = source_aet.strip()[:16]
    buf = io.BytesIO()
    buf.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)  # type: ignore[arg-type]
    return buf.getvalue()


def dataset_offset(header: bytes) -> int:
    """Length of preamble + meta in a Part 10 file's first bytes (0 when the file has no meta)."""
    if len(header) < 144 or header[128:132] != b"DICM":
        return 0
    # (0002,0000) File Meta Information Group Length, explicit VR little endian, UL
    group_len = int.from_bytes(header[140:144], "little")
    return 132 + 12 + group_len
