"""Compression at rest on whole objects, through the archive (issue #11 item 4): every file of pydicom's corpus and
a matrix of generated images are stored, compressed, and read back.

An eligible object must come back byte for byte as received (``retrieve.iter_transcoded`` to its original syntax,
the deep proof ``compression.prove``), and the stored object must be a DICOM object of its own that pydicom decodes
to the same pixels; an ineligible one must be left exactly as it was, with the reason recorded. A reason that says
a proof failed (the rebuilt original or a decoded frame differs) is a bug, not an ineligibility, and fails here.

The codec layer's own proof (frames only, no archive) is ``tests/dicom/test_dicom_lossless.py``; this file is the
same promise one level up: head and tail bytes, pad bytes, explicit and implicit VR originals, the frame index of
the compressed object and the recipe the index keeps.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from dicomvault.bootstrap import Archive
from dicomvault.domain.records import InstanceRecord
from dicomvault.services import pixels
from dicomvault.services.compression import CompressionWork
from tests.conftest import corpus_dir
from tests.dicom.test_dicom_lossless import make_image

#: The proof is about codecs and data layouts; tests/services/test_services_compression.py covers PostgreSQL + S3.
pytestmark = pytest.mark.embedded_only

JLS = str(JPEGLSLossless)
J2K = str(JPEG2000Lossless)
CODECS = [pytest.param(JLS, id="jpeg-ls"), pytest.param(J2K, id="jpeg2000")]
NATIVE = (str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian))
#: Words of the reasons that mean the compression was attempted and its proof failed: never a lawful skip.
PROOF_FAILURES = ("rebuilt", "does not decode", "encoder failed", "could not be indexed", "not compressible",
                  "could not be located", "cannot be rebuilt")


def _store(archive: Archive, data: bytes) -> InstanceRecord:
    result = archive.ingest.ingest(io.BytesIO(data), source="test")
    (record,) = archive.retrieve.locate(sop_uids=[result.sop_instance_uid])
    return record


def _reread(archive: Archive, record: InstanceRecord) -> InstanceRecord:
    (again,) = archive.retrieve.locate(sop_uids=[record.sop_uid])
    return again


def _compress(archive: Archive, record: InstanceRecord, syntax: str) -> tuple[CompressionWork, InstanceRecord]:
    assert archive.compression is not None
    work = CompressionWork()
    archive.compression.compress_instance(record, syntax, work)
    assert work.unreadable == 0, work
    assert work.compressed + work.skipped == 1, work
    return work, _reread(archive, record)


def _same_pixels(a: Dataset, b: Dataset) -> bool:
    x, y = a.pixel_array, b.pixel_array
    return x.shape == y.shape and bool(np.array_equal(x, y))


def _check_compressed(archive: Archive, data: bytes, before: InstanceRecord, now: InstanceRecord,
                      syntax: str) -> list[str]:
    """What is wrong with an instance compressed at rest (empty: nothing)."""
    problems: list[str] = []
    assert now.original is not None
    if now.transfer_syntax_uid != syntax:
        problems.append(f"stored syntax {now.transfer_syntax_uid}")
    if now.original.syntax != before.transfer_syntax_uid:
        problems.append(f"original syntax {now.original.syntax}, received {before.transfer_syntax_uid}")
    if (now.original.size, now.original.sha256) != (len(data), hashlib.sha256(data).hexdigest()):
        problems.append("the recorded original's size or SHA-256 is not the received one's")
    if now.blob.size >= len(data):
        problems.append(f"compressed {now.blob.size} bytes >= original {len(data)}")
    rebuilt = b"".join(archive.retrieve.iter_transcoded(now, now.original.syntax))
    if rebuilt != data:
        first = next((i for i, (x, y) in enumerate(zip(rebuilt, data, strict=False)) if x != y),
                     min(len(rebuilt), len(data)))
        problems.append(f"rebuilt original differs: {len(rebuilt)} vs {len(data)} bytes, first at {first}")
    assert archive.compression is not None
    proof = archive.compression.prove(now)
    if proof is not None:
        problems.append(f"prove: {proof}")
    if archive.index.compression_skips([before.blob.key]):
        problems.append("a skip reason recorded for a compressed instance")
    if archive.blobs.exists(before.blob.key):
        problems.append("the original blob is still stored")
    stored = pydicom.dcmread(io.BytesIO(b"".join(archive.retrieve.iter_bytes(now, verify=True))))
    received = pydicom.dcmread(io.BytesIO(data))
    if str(stored.file_meta.TransferSyntaxUID) != syntax:
        problems.append(f"the stored object says {stored.file_meta.TransferSyntaxUID}")
    if not _same_pixels(stored, received):
        problems.append("pydicom decodes the stored object to other pixels")
    return problems


def _check_untouched(archive: Archive, data: bytes, before: InstanceRecord, now: InstanceRecord) -> str:
    """The reason an instance left as it is was recorded with; asserts nothing else changed."""
    reasons = archive.index.compression_skips([before.blob.key])
    assert before.blob.key in reasons, "an instance left uncompressed without a recorded reason"
    assert now == before
    assert b"".join(archive.retrieve.iter_bytes(now, verify=True)) == data
    return reasons[before.blob.key]


# -- pydicom's corpus ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", CODECS)
def test_every_corpus_file_is_compressed_exactly_or_left_with_its_reason(archive: Archive, corpus: list[Path],
                                                                         syntax: str) -> None:
    eligible: list[str] = []
    skipped: dict[str, str] = {}
    problems: dict[str, list[str]] = {}
    for path in corpus:
        name = str(path.relative_to(corpus_dir()))
        data = path.read_bytes()
        before = _store(archive, data)
        work, now = _compress(archive, before, syntax)
        if now.original is not None:
            assert work.compressed == 1
            eligible.append(name)
            found = _check_compressed(archive, data, before, now, syntax)
            if found:
                problems[name] = found
        else:
            skipped[name] = _check_untouched(archive, data, before, now)
    assert not problems, problems
    failed_proofs = {n: r for n, r in skipped.items() if any(w in r for w in PROOF_FAILURES)}
    assert not failed_proofs, failed_proofs
    # Every corpus object in a compressed syntax is left alone, whatever its pixels.
    for name, reason in skipped.items():
        ds = pydicom.dcmread(corpus_dir() / name, stop_before_pixels=True)
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            assert reason.startswith("already compressed") or "deflated" in reason, (name, reason)
    # The native images pydicom ships are small CTs, MRs and CRs (JPEG-LS takes 16x16 images; JPEG 2000 through
    # pylibjpeg-openjpeg needs 32 pixels a side) and a few colour and palette images (pydicom 3.0: 37 and 6).
    assert len(eligible) >= (30 if syntax == JLS else 5), (len(eligible), skipped)
    for name in ("CT_small.dcm", "MR_small.dcm", "examples_rgb_color.dcm", "examples_palette.dcm",
                 "SC_rgb_jpeg_dcmd.dcm"):  # the last: implicit VR little endian
        assert name in eligible, (name, skipped.get(name))


# -- generated images ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    allocated: int
    stored: int
    signed: bool = False
    photometric: str = "MONOCHROME2"
    planar: int = 0
    #: signed data: the bits above BitsStored copy the sign (True) or are zero (False)
    sign_extended: bool = True
    rows: int = 40
    columns: int = 36

    @property
    def samples(self) -> int:
        return 3 if self.photometric in ("RGB", "YBR_FULL") else 1


LAYOUTS = {
    "u8-mono2": Layout(8, 8),
    "s8-mono1": Layout(8, 8, True, "MONOCHROME1"),
    "s7-zero-padded": Layout(8, 7, True, sign_extended=False),
    "s7-sign-extended-mono1": Layout(8, 7, True, "MONOCHROME1"),
    "u8-in-16-mono2": Layout(16, 8),
    "s2-in-16-zero-padded": Layout(16, 2, True, sign_extended=False),
    "u10-mono1": Layout(16, 10, photometric="MONOCHROME1"),
    "s10-sign-extended": Layout(16, 10, True),
    "s10-zero-padded-mono1": Layout(16, 10, True, "MONOCHROME1", sign_extended=False),
    "u12-mono2": Layout(16, 12),
    "s12-sign-extended-mono1": Layout(16, 12, True, "MONOCHROME1"),
    "s12-zero-padded": Layout(16, 12, True, sign_extended=False),
    "u16-mono2": Layout(16, 16),
    "s16-mono1": Layout(16, 16, True, "MONOCHROME1"),
    "u8-palette": Layout(8, 8, photometric="PALETTE COLOR"),
    "rgb8-planar0": Layout(8, 8, photometric="RGB"),
    "rgb8-planar1": Layout(8, 8, photometric="RGB", planar=1),
    "rgb12-planar1": Layout(16, 12, photometric="RGB", planar=1),
    "rgb16-planar0": Layout(16, 16, photometric="RGB"),
    "ybr8-planar1": Layout(8, 8, photometric="YBR_FULL", planar=1),
    # 33 x 33 (x 3 frames) 8-bit samples: an odd-length value and its pad byte
    "u8-odd-length": Layout(8, 8, rows=33, columns=33),
    "s8-odd-length-mono1": Layout(8, 8, True, "MONOCHROME1", rows=33, columns=33),
    "rgb8-odd-length-planar1": Layout(8, 8, photometric="RGB", planar=1, rows=33, columns=33),
}


def _generated(layout: Layout, *, frames: int, implicit: bool, seed: int) -> bytes:
    """A secondary capture of ``layout`` (``make_image``'s extremes, ramp and noise), as a Part 10 file."""
    if layout.photometric == "YBR_FULL" and layout.signed:
        raise AssertionError("no signed colour")
    ds = make_image(layout.allocated, layout.stored, layout.signed, layout.samples, layout.planar, frames,
                    layout.rows, layout.columns, sign_extended=layout.sign_extended, seed=seed)
    ds.PhotometricInterpretation = layout.photometric
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "GEN", "Generated^Image", "OT"
    ds.InstanceNumber = 1
    if layout.photometric == "PALETTE COLOR":
        entries = 1 << layout.stored
        for colour in ("Red", "Green", "Blue"):
            setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [entries, 0, 16])
            setattr(ds, f"{colour}PaletteColorLookupTableData",
                    np.linspace(0, 65535, entries).astype("<u2").tobytes())
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True, implicit_vr=implicit, little_endian=True)
    return out.getvalue()


#: The layouts in groups, one test (one archive) each: a fresh archive per layout costs more than its images.
GROUPS = {
    "8-bit-mono": ["u8-mono2", "s8-mono1", "s7-zero-padded", "s7-sign-extended-mono1", "u8-palette"],
    "16-bit-low": ["u8-in-16-mono2", "s2-in-16-zero-padded", "u10-mono1", "s10-sign-extended",
                   "s10-zero-padded-mono1"],
    "16-bit-high": ["u12-mono2", "s12-sign-extended-mono1", "s12-zero-padded", "u16-mono2", "s16-mono1"],
    "colour": ["rgb8-planar0", "rgb8-planar1", "rgb12-planar1", "rgb16-planar0", "ybr8-planar1"],
    "odd-length": ["u8-odd-length", "s8-odd-length-mono1", "rgb8-odd-length-planar1"],
}
#: (frames, implicit VR) of the objects made of each layout
VARIANTS = [(1, False), (3, True), (3, False), (1, True)]


def test_the_groups_hold_every_layout() -> None:
    assert sorted(n for names in GROUPS.values() for n in names) == sorted(LAYOUTS)


def _check_generated(archive: Archive, layout: Layout, syntax: str, frames: int, implicit: bool,
                     seed: int) -> None:
    data = _generated(layout, frames=frames, implicit=implicit, seed=seed)
    received = pydicom.dcmread(io.BytesIO(data))
    value = received["PixelData"].value
    odd = layout.rows * layout.columns * layout.samples * frames * layout.allocated // 8 & 1
    assert len(value) & 1 == 0 and (odd == 0 or value[-1] == 0)
    before = _store(archive, data)
    work, now = _compress(archive, before, syntax)
    assert now.original is not None, work.reasons
    assert _check_compressed(archive, data, before, now, syntax) == []
    assert archive.retrieve.transcoded(now, now.original.syntax) == data
    # the other native syntax is made from the original: the same Pixel Data value
    other = NATIVE[1] if now.original.syntax == NATIVE[0] else NATIVE[0]
    converted = pydicom.dcmread(io.BytesIO(archive.retrieve.transcoded(now, other)))
    assert converted.file_meta.TransferSyntaxUID == other and converted.PixelData == value
    # frames as the original held them (planar configuration, high bits), and the bulk Pixel Data value
    frame_length = (len(value) - odd) // frames
    for n in range(1, frames + 1):
        assert pixels.native_frame_bytes(archive.retrieve, now, n) == \
            value[(n - 1) * frame_length:n * frame_length], f"frame {n}"
    bulk = pixels.original_pixel_value(archive.retrieve, now)
    assert bulk.size == len(value) and b"".join(bulk.chunks(0, bulk.size)) == value


@pytest.mark.parametrize("syntax", CODECS)
@pytest.mark.parametrize("group", list(GROUPS))
def test_generated_images_come_back_byte_for_byte(archive: Archive, group: str, syntax: str) -> None:
    """Each layout single- and multi-frame, with explicit and implicit VR: compressed, then everything that reads
    it gives back the original's bytes (the object, each frame, the native Pixel Data value with its pad byte).
    Every layout and variant is tried; the failures are listed together."""
    failures: dict[str, str] = {}
    for name in GROUPS[group]:
        for seed, (frames, implicit) in enumerate(VARIANTS):
            try:
                _check_generated(archive, LAYOUTS[name], syntax, frames, implicit, seed)
            except AssertionError as exc:
                failures[f"{name}, {frames} frame(s), {'implicit' if implicit else 'explicit'} VR"] = \
                    str(exc).splitlines()[0] if str(exc) else "assertion failed"
    assert not failures, failures


def _odd_without_pad() -> tuple[bytes, bytes]:
    """A non-conformant object whose 8-bit Pixel Data value has an odd length and no pad byte (some writers leave
    it so; ingest takes it), and that value."""
    ds = make_image(8, 8, False, rows=33, columns=33)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID, ds.Modality = generate_uid(), generate_uid(), "G", "OT"
    value = bytes(ds.PixelData[:33 * 33])
    ds.PixelData = b"\0"  # a placeholder of the right kind; the real value is spliced in below
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True, implicit_vr=False, little_endian=True)
    head = out.getvalue()
    element = head.rindex(b"\xe0\x7f\x10\x00OB")
    assert element + 14 == len(head) and len(value) & 1  # the placeholder, padded to two bytes, is the last value
    return head[:element + 8] + len(value).to_bytes(4, "little") + value, value


def test_odd_length_pixel_data_without_its_pad_byte(archive: Archive) -> None:
    """Such an object comes back as it came, with no pad byte added."""
    data, _ = _odd_without_pad()
    before = _store(archive, data)
    work, now = _compress(archive, before, JLS)
    assert now.original is not None, work.reasons
    assert _check_compressed(archive, data, before, now, JLS) == []


def test_odd_length_pixel_data_without_its_pad_byte_as_bulk_data(archive: Archive) -> None:
    """Its native Pixel Data value (WADO-RS bulk data) is what it was before compression: no pad byte added."""
    data, value = _odd_without_pad()
    before = _store(archive, data)
    _, now = _compress(archive, before, JLS)
    bulk = pixels.original_pixel_value(archive.retrieve, now)
    assert b"".join(bulk.chunks(0, bulk.size)) == value
