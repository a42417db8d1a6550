"""Small builders shared by tests: synthetic DICOM objects with controlled attributes."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from sqlalchemy import event


def make_ct(
    *,
    study: str | None = None,
    series: str | None = None,
    sop: str | None = None,
    rows: int = 16,
    columns: int = 16,
    frames: int = 1,
    seed: int = 0,
    **attrs: Any,
) -> bytes:
    """A valid CT Image Part 10 object (explicit VR little endian) as bytes."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.PatientID = "PID-1"
    ds.PatientName = "Doe^John"
    ds.Modality = "CT"
    ds.StudyDate = "20240102"
    ds.StudyTime = "101530"
    ds.InstanceNumber = 1
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    if frames > 1:
        ds.NumberOfFrames = frames
    for key, value in attrs.items():
        setattr(ds, key, value)
    rng = np.random.default_rng(seed)
    shape = (frames, rows, columns) if frames > 1 else (rows, columns)
    ds.PixelData = rng.integers(0, 4000, shape, dtype=np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


#: 8 × ``*A`` then ``*B``: within the default query caps (9 wildcards, 18 characters). Against a 64-character
#: value of ``A``s the regex matcher DicomVault used before issue #9 needed over a minute (7 × ``*A``: 10 s).
PATHOLOGICAL_WILDCARD = "*A" * 8 + "*B"


@contextmanager
def count_selects(archive: Any) -> Iterator[list[str]]:
    """Every SELECT the archive's index engine runs inside the block (SQLAlchemy cursor events)."""
    engine = archive.index.engine
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)


def deflated(data: bytes) -> bytes:
    """A Part 10 object re-encoded in Deflated Explicit VR Little Endian by pydicom (a legitimate one)."""
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(io.BytesIO(data))
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def deflate_bomb(pixel_bytes: int = 256 << 20, *, sop: str | None = None, study: str | None = None) -> bytes:
    """A valid Deflated Explicit VR Little Endian secondary capture whose Pixel Data is ``pixel_bytes`` zero bytes
    (16-bit, 8192 columns), deflated chunk by chunk: ~1 KiB of object per MiB inflated (the issue's probe: 256 MiB
    from 255 KiB). Built without ever holding the inflated data."""
    import struct
    import zlib

    from pydicom.uid import DeflatedExplicitVRLittleEndian, SecondaryCaptureImageStorage

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study or generate_uid(), generate_uid()
    ds.PatientID, ds.Modality = "BOMB", "OT"
    ds.Columns = 8192
    ds.Rows = pixel_bytes // (8192 * 2)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    head = io.BytesIO()
    ds.save_as(head, enforce_file_format=True)  # meta + the deflated header, no pixel data yet
    raw = head.getvalue()
    meta_end = 132 + 12 + struct.unpack("<I", raw[140:144])[0]
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [raw[:meta_end], deflater.compress(zlib.decompress(raw[meta_end:], -zlib.MAX_WBITS))]
    length = ds.Rows * ds.Columns * 2
    out.append(deflater.compress(struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OW", length)))
    zeros = bytes(1 << 20)
    for start in range(0, length, len(zeros)):
        out.append(deflater.compress(zeros[: min(len(zeros), length - start)]))
    out.append(deflater.flush())
    return b"".join(out)


def short_mr(*, stored: int = 50_000, rows: int = 256, columns: int = 256) -> bytes:
    """A 16-bit MR whose Pixel Data holds ``stored`` of the rows × columns × 2 bytes its header describes (the
    issue's probe: 50,000 of 131,072)."""
    import numpy as np
    import pydicom
    from pydicom.uid import MRImageStorage

    ds = pydicom.dcmread(io.BytesIO(make_ct(rows=rows, columns=columns)))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.Modality = "MR"
    ds.PixelData = np.zeros(stored // 2, dtype=np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def peak_rss_growth() -> PeakRss:
    """Measure this process's peak resident memory growth over a ``with`` block (``VmHWM`` of /proc/self/status,
    reset to the current size when the block starts): servers under test run in the test's process."""
    return PeakRss()


class PeakRss:
    growth = 0

    @staticmethod
    def _kib(field: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise RuntimeError(field)

    def __enter__(self) -> PeakRss:
        import gc

        gc.collect()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        self._before = self._kib("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.growth = (self._kib("VmHWM") - self._before) * 1024
