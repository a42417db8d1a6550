"""DICOM objects and request bodies for the campaign, built with pydicom (or by hand where pydicom would not write
what a hostile sender sends). Every object carries the campaign's marker patient name and ID, and every UID it
uses is recorded, so that the log scan can look for all of them."""

from __future__ import annotations

import io
import struct
import threading
import uuid
import zlib
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    MRImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)


@dataclass
class Marker:
    """The patient identity every campaign object carries, and the UIDs the campaign created (for the log scan)."""

    token: str = field(default_factory=lambda: uuid.uuid4().hex[:8].upper())
    uids: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def patient_name(self) -> str:
        return f"CAMPAIGN^MARKER{self.token}"

    @property
    def patient_id(self) -> str:
        return f"CMK{self.token}"

    def uid(self) -> str:
        value = generate_uid()
        with self._lock:
            self.uids.add(value)
        return value


@dataclass(frozen=True)
class Obj:
    """A Part 10 object and its identity."""

    data: bytes
    study: str
    series: str
    sop: str
    sop_class: str = CTImageStorage


def _meta(ds: Dataset, sop_class: str, sop: str, syntax: str) -> None:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop


def _image(marker: Marker, study: str | None, series: str | None, sop_class: str = CTImageStorage) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = marker.uid()
    ds.StudyInstanceUID = study or marker.uid()
    ds.SeriesInstanceUID = series or marker.uid()
    ds.PatientName, ds.PatientID = marker.patient_name, marker.patient_id
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20240101", "120000", f"A{marker.token}"
    ds.Modality = "CT" if sop_class == CTImageStorage else "MR" if sop_class == MRImageStorage else "OT"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    return ds


def _save(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> bytes:
    _meta(ds, str(ds.SOPClassUID), str(ds.SOPInstanceUID), syntax)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _obj(ds: Dataset, data: bytes) -> Obj:
    return Obj(data, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID),
               str(ds.SOPClassUID))


def small_ct(marker: Marker, *, study: str | None = None, series: str | None = None, rows: int = 8, seed: int = 0,
             **attrs: object) -> Obj:
    """A valid CT image, ``rows``×``rows`` 16-bit (8×8: about 1.4 KB)."""
    ds = _image(marker, study, series)
    ds.Rows = ds.Columns = rows
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = np.random.default_rng(seed).integers(0, 4000, (rows, rows), dtype=np.uint16).tobytes()
    return _obj(ds, _save(ds))


def dataset_bytes(part10: bytes) -> bytes:
    """The data set after the File Meta Information (what a C-STORE carries, what the archive keeps verbatim)."""
    if part10[128:132] != b"DICM":
        return part10
    group_length = struct.unpack_from("<I", part10, 132 + 8)[0]
    return part10[132 + 12 + group_length :]


def multipart(parts: list[bytes], boundary: str | None = None) -> tuple[bytes, str]:
    """A STOW-RS body: ``multipart/related; type="application/dicom"``."""
    boundary = boundary or uuid.uuid4().hex
    chunks = [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n" for p in parts]
    return b"".join(chunks) + f"--{boundary}--\r\n".encode(), \
        f'multipart/related; type="application/dicom"; boundary={boundary}'


# -- hostile objects ---------------------------------------------------------------------------------------------


def _explicit(tag: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
        return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def deflate_bomb(marker: Marker, inflated: int) -> tuple[Obj, int]:
    """A Deflated Explicit VR Little Endian object whose data set inflates to ``inflated`` bytes (a private OB
    element of zeros): about 1/1000 of that on the wire. Built by streaming the compressor, never the whole value
    in memory. Returns the object and its inflated data set size."""
    study, series, sop = marker.uid(), marker.uid(), marker.uid()
    head = b"".join([
        _explicit(0x00080016, b"UI", CTImageStorage.encode()), _explicit(0x00080018, b"UI", sop.encode()),
        _explicit(0x00080060, b"CS", b"OT"), _explicit(0x00090010, b"LO", b"CAMPAIGN"),
        struct.pack("<HH2sHI", 0x0009, 0x1001, b"OB", 0, inflated),
    ])
    tail = b"".join([
        _explicit(0x00100010, b"PN", marker.patient_name.encode()), _explicit(0x00100020, b"LO",
                                                                               marker.patient_id.encode()),
        _explicit(0x0020000D, b"UI", study.encode()), _explicit(0x0020000E, b"UI", series.encode()),
    ])
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [comp.compress(head)]
    zeros = bytes(1 << 20)
    for _ in range(inflated >> 20):
        out.append(comp.compress(zeros))
    out.append(comp.compress(bytes(inflated & ((1 << 20) - 1))))
    out.append(comp.compress(tail))
    out.append(comp.flush())
    meta = Dataset()
    _meta(meta, CTImageStorage, sop, DeflatedExplicitVRLittleEndian)
    buf = io.BytesIO()
    buf.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buf, meta.file_meta, enforce_standard=True)  # type: ignore[arg-type]
    data = buf.getvalue() + b"".join(out)
    return Obj(data, study, series, sop), len(head) + inflated + len(tail)


def big_rle(marker: Marker, size: int = 8192) -> Obj:
    """A ``size``×``size`` 8-bit RLE Lossless image of about size²/64 bytes: each row is runs of 128 equal pixels
    (two bytes per run), a gradient by rows. Decoding it costs size² bytes; rendering it in float64, 8× that."""
    ds = _image(marker, None, None, SecondaryCaptureImageStorage)
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    runs_per_row = size // 128
    segment = b"".join(bytes([0x81, row % 256]) * runs_per_row for row in range(size))
    header = struct.pack("<16I", 1, 64, *([0] * 14))
    fragment = header + segment
    if len(fragment) % 2:
        fragment += b"\0"
    body = bytearray(_save(ds, RLELossless))
    # Encapsulated pixel data appended by hand: (7FE0,0010) OB undefined length, empty offset table, one fragment.
    body += struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
    body += struct.pack("<HHI", 0xFFFE, 0xE000, 0)
    body += struct.pack("<HHI", 0xFFFE, 0xE000, len(fragment)) + fragment
    body += struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return _obj(ds, bytes(body))


def many_frames(marker: Marker, frames: int) -> Obj:
    """``frames`` one-pixel 8-bit frames, native (uncompressed) pixel data."""
    ds = _image(marker, None, None, SecondaryCaptureImageStorage)
    ds.Rows = ds.Columns = 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = frames
    ds.PixelData = bytes(i % 251 for i in range(frames))
    return _obj(ds, _save(ds))


def short_pixels(marker: Marker) -> Obj:
    """A 256×256 16-bit MR whose Pixel Data holds 50,000 of the 131,072 bytes it needs."""
    ds = _image(marker, None, None, MRImageStorage)
    ds.Rows = ds.Columns = 256
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = bytes(50_000)
    return _obj(ds, _save(ds))


def wildcard_target(marker: Marker) -> Obj:
    """A CT whose (non-indexed) Institution Name is 64 × 'A': what a backtracking ``*A*A*…*B`` chokes on."""
    return small_ct(marker, InstitutionName="A" * 64)


def pydicom_warning_triggers(marker: Marker, i: int) -> tuple[Obj, list[str]]:
    """An object pydicom warns about, with values the log must not show: an invalid SOP Instance UID (refused;
    STOW-RS reads the UIDs again to name it), an invalid IS, an over-long person name. Returns the values."""
    bad_uid = f"1.2.826.0.1.3680043.99.{int(marker.token, 16) % 10**9}.{i}.x"
    doctor = f"DOCTOR{marker.token}{i}"
    obj = small_ct(marker, SOPInstanceUID=bad_uid, SeriesNumber=f"{i}.5",
                   ReferringPhysicianName=doctor + "^" + "X" * 64)
    return obj, [bad_uid, doctor]


def missing_study_uid(marker: Marker) -> Obj:
    """A CT without Study Instance UID: refused (0xA900), which should come with a reason."""
    ds = _image(marker, None, None)
    del ds.StudyInstanceUID
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = bytes(128)
    return Obj(_save(ds), "", str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))


def truncated(marker: Marker) -> Obj:
    """A CT cut in the middle of its pixel data (a transfer that broke off): refused (0xC000) with a reason."""
    obj = small_ct(marker, rows=64)
    return Obj(obj.data[: len(obj.data) - 3000], obj.study, obj.series, obj.sop)
