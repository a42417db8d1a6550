"""Helpers shared by the WADO/frames/render/WADO-URI/DELETE tests (DICOMweb-B): loading objects into a running
server, re-stamping corpus files with fresh UIDs (pixel data bytes untouched), parsing multipart bodies."""

from __future__ import annotations

import io
import re
from pathlib import Path

import httpx
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomvault.bootstrap import Archive
from dicomvault.domain.records import InstanceRecord

DATA = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent  # type: ignore[arg-type]


def restamp(path: Path | str, study: str | None = None, series: str | None = None) -> bytes:
    """The file with new Study/Series/SOP Instance UIDs; everything else (pixel data encoding) kept."""
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.SOPInstanceUID = generate_uid()
    if "PatientID" not in ds:
        ds.PatientID = "WADO-B"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def store(archive: Archive, data: bytes) -> InstanceRecord:
    result = archive.ingest.ingest(io.BytesIO(data), source="test")
    return archive.retrieve.instance(result.study_uid, result.series_uid, result.sop_instance_uid)


def multiframe_native(frames: int, rows: int, columns: int, seed: int = 1) -> bytes:
    """A native (explicit VR little endian) multi-frame 16-bit MONOCHROME2 secondary capture."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7.3"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "MF"
    ds.Modality = "OT"
    ds.Rows, ds.Columns = rows, columns
    ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    arr = np.random.default_rng(seed).integers(0, 65535, (frames, rows, columns), dtype=np.uint16)
    arr[:, 0, 0] = np.arange(frames, dtype=np.uint16)  # every frame distinct at a known place
    ds.PixelData = arr.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def parse_multipart(resp: httpx.Response) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part of a multipart/related response."""
    ctype = resp.headers["content-type"]
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    assert m, ctype
    delim = b"--" + m.group(1).encode()
    body = resp.content
    chunks = body.split(b"\r\n" + delim)
    first = chunks[0]
    assert first.startswith(delim), "body must start with the boundary"
    chunks[0] = first[len(delim):]
    parts: list[tuple[str, bytes]] = []
    for chunk in chunks:
        if chunk.startswith(b"--"):
            break
        head, _, content = chunk.partition(b"\r\n\r\n")
        headers = dict(
            (k.strip().lower(), v.strip())
            for k, _, v in (line.partition(":") for line in head.decode("latin-1").split("\r\n") if ":" in line)
        )
        parts.append((headers.get("content-type", ""), content))
    return parts


def instance_url(base: str, r: InstanceRecord) -> str:
    return f"{base}/studies/{r.study_uid}/series/{r.series_uid}/instances/{r.sop_uid}"
