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
