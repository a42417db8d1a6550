"""Frame retrieval through the compact frame index on the real index database (SQLite, or PostgreSQL with
``DV_TEST_INDEX_URL``): encapsulated objects too large for the record's head are read by ``substr``, and rows
written by earlier versions (JSON) still serve every frame."""

from __future__ import annotations

import io
import json

import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import RLELossless
from sqlalchemy import text

from dicomvault.bootstrap import Archive
from dicomvault.domain.frame_index import HEAD_CHARS
from tests.helpers import make_ct


def _encapsulated(frames: int, fragments_per_frame: int) -> bytes:
    """An RLE-labelled multi-frame object whose frames are distinct byte strings (never decoded here)."""
    ds = pydicom.dcmread(io.BytesIO(make_ct(rows=4, columns=4)))
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.NumberOfFrames = frames
    payload = [bytes([n % 256]) * (10 + n % 7) * fragments_per_frame for n in range(frames)]
    ds.PixelData = encapsulate(payload, fragments_per_frame=fragments_per_frame, has_bot=True)
    ds["PixelData"].VR = "OB"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _frames(data: bytes) -> list[bytes]:
    ds = pydicom.dcmread(io.BytesIO(data))
    return [bytes(f) for f in generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames))]


def _stored_index(archive: Archive, sop: str) -> str:
    with archive.index.engine.connect() as conn:  # type: ignore[attr-defined]
        return str(conn.execute(text("SELECT frame_index FROM instances WHERE sop_uid = :u"), {"u": sop})
                   .scalar_one())


@pytest.mark.parametrize(("frames", "per_frame"), [(600, 1), (100, 3)])
def test_frames_of_large_encapsulated_objects(archive: Archive, frames: int, per_frame: int) -> None:
    data = _encapsulated(frames, per_frame)
    sop = archive.ingest.ingest(io.BytesIO(data)).sop_instance_uid
    assert len(_stored_index(archive, sop)) > HEAD_CHARS  # the record carries only the head
    [record] = archive.retrieve.locate(sop_uids=[sop])
    expected = _frames(data)
    for n in (1, 2, frames // 2, frames):
        assert archive.retrieve.frame(record, n) == expected[n - 1]


def _legacy_json(archive: Archive, sop: str) -> str:
    """The index as earlier versions stored it: JSON with one list of (offset, length) per frame."""
    [record] = archive.retrieve.locate(sop_uids=[sop])
    index = record.frame_index
    assert index is not None
    def read(start: int, length: int | None) -> str:
        return str(archive.index.frame_index_text(sop, record.blob.key, start, length))
    spans = [list(index.spans(n, read)) for n in range(1, index.count + 1)]
    return json.dumps({"e": index.encapsulated, "f": spans}, separators=(",", ":"))


@pytest.mark.parametrize("kind", ["native", "encapsulated"])
def test_rows_written_by_earlier_versions_are_still_read(archive: Archive, kind: str) -> None:
    data = make_ct(rows=8, columns=8, frames=300) if kind == "native" else _encapsulated(300, 2)
    sop = archive.ingest.ingest(io.BytesIO(data)).sop_instance_uid
    old = _legacy_json(archive, sop)
    with archive.index.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text("UPDATE instances SET frame_index = :t WHERE sop_uid = :u"), {"t": old, "u": sop})
    [record] = archive.retrieve.locate(sop_uids=[sop])
    if kind == "native":
        pixels = pydicom.dcmread(io.BytesIO(data)).PixelData
        expected = [pixels[i * 128 : (i + 1) * 128] for i in range(300)]
    else:
        expected = _frames(data)
    for n in (1, 150, 300):
        assert archive.retrieve.frame(record, n) == expected[n - 1]
