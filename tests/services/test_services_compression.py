"""Lossless compression at rest through the services (issue #11 item 4), on the index and store the environment
selects (SQLite or PostgreSQL, a folder or moto S3): compress, then every read gives back what was received.

The codec layer's own proof is ``tests/dicom/test_dicom_lossless.py``; every eligible file of pydicom's corpus and
generated layouts through the archive: ``test_services_compression_corpus.py``; crash points:
``test_services_compression_crashpoints.py``; the protocols (dcmtk, pynetdicom, dicomweb-client):
``tests/dimse/test_dimse_compression.py`` and ``tests/dicomweb/test_dw_compression.py``.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless

from dicomvault.bootstrap import Archive
from dicomvault.domain.records import InstanceRecord, StoreOutcome
from dicomvault.services import pixels
from dicomvault.services.compression import CompressionWork
from tests.helpers import make_ct

JLS = str(JPEGLSLossless)


def _noise_ct(study: str, *, rows: int = 64, columns: int = 64, frames: int = 1, seed: int = 1,
              implicit: bool = False) -> bytes:
    """A CT of random 12-bit samples in 16-bit containers (JPEG-LS: ~1.3x smaller), explicit or implicit VR."""
    raw = make_ct(study=study, rows=rows, columns=columns, frames=frames, seed=seed)
    if not implicit:
        return raw
    ds = pydicom.dcmread(io.BytesIO(raw))
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True, implicit_vr=True, little_endian=True)
    return out.getvalue()


def _store(archive: Archive, data: bytes) -> InstanceRecord:
    result = archive.ingest.ingest(io.BytesIO(data), source="test")
    (record,) = archive.retrieve.locate(sop_uids=[result.sop_instance_uid])
    return record


def _compress(archive: Archive, record: InstanceRecord, syntax: str = JLS) -> CompressionWork:
    assert archive.compression is not None
    work = CompressionWork()
    archive.compression.compress_instance(record, syntax, work)
    return work


def _reread(archive: Archive, record: InstanceRecord) -> InstanceRecord:
    (again,) = archive.retrieve.locate(sop_uids=[record.sop_uid])
    return again


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
@pytest.mark.parametrize("syntax", [JLS, str(JPEG2000Lossless)], ids=["jpeg-ls", "jpeg2000"])
def test_compressed_instance_gives_back_the_original(archive: Archive, implicit: bool, syntax: str) -> None:
    data = _noise_ct("1.2.3.4", rows=64, columns=64, frames=3, implicit=implicit)
    record = _store(archive, data)
    work = _compress(archive, record, syntax)
    assert work.compressed == 1, work
    now = _reread(archive, record)
    assert now.transfer_syntax_uid == syntax
    assert now.original is not None and now.original.sha256 == hashlib.sha256(data).hexdigest()
    assert now.blob.size < len(data)
    # the compressed object is a valid DICOM object of its own, with the same pixels
    stored = pydicom.dcmread(io.BytesIO(b"".join(archive.retrieve.iter_bytes(now, verify=True))))
    received = pydicom.dcmread(io.BytesIO(data))
    assert (stored.pixel_array == received.pixel_array).all()
    assert stored.PatientName == received.PatientName and stored.SOPInstanceUID == received.SOPInstanceUID
    # the original syntax: byte for byte what was received, streamed and in memory
    original = now.original.syntax
    assert original == (str(ImplicitVRLittleEndian) if implicit else str(ExplicitVRLittleEndian))
    assert b"".join(archive.retrieve.iter_transcoded(now, original)) == data
    assert archive.retrieve.transcoded(now, original) == data
    # native frames exactly as the original held them; the stored frame is the codestream
    value = received["PixelData"].value
    frame_length = len(value) // 3
    for n in (1, 2, 3):
        assert pixels.native_frame_bytes(archive.retrieve, now, n) == value[(n - 1) * frame_length:n * frame_length]
    assert archive.retrieve.frame(now, 2) != value[frame_length:2 * frame_length]
    bulk = pixels.original_pixel_value(archive.retrieve, now)
    assert bulk.size == len(value) and b"".join(bulk.chunks(0, bulk.size)) == value
    assert b"".join(bulk.chunks(frame_length - 5, 10)) == value[frame_length - 5:frame_length + 5]
    # the original blob went through the removal protocol; the compressed one has its copy recorded
    assert not archive.blobs.exists(record.blob.key)
    assert archive.index.blob_copies([now.blob.key])[now.blob.key]
    assert archive.compression is not None and archive.compression.prove(now) is None


def test_other_syntaxes_are_made_from_the_original(archive: Archive) -> None:
    data = _noise_ct("1.2.3.5", implicit=True)
    record = _store(archive, data)
    _compress(archive, record)
    now = _reread(archive, record)
    explicit = pydicom.dcmread(io.BytesIO(archive.retrieve.transcoded(now, str(ExplicitVRLittleEndian))))
    received = pydicom.dcmread(io.BytesIO(data))
    assert explicit.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert explicit.PixelData == received.PixelData
    assert explicit.PatientName == received.PatientName


def test_resending_the_original_is_a_duplicate(archive: Archive) -> None:
    data = _noise_ct("1.2.3.6")
    record = _store(archive, data)
    _compress(archive, record)
    now = _reread(archive, record)
    again = archive.ingest.ingest(io.BytesIO(data), source="test")
    assert again.outcome == StoreOutcome.DUPLICATE
    after = _reread(archive, record)
    assert after.blob == now.blob and after.original == now.original
    # the bytes the re-send wrote under the original's key are removed again
    assert not archive.blobs.exists(record.blob.key)


def test_ineligible_objects_are_left_with_the_reason(archive: Archive, tmp_path: Path) -> None:
    data = make_ct(study="1.2.3.7", rows=4, columns=4)  # 32-byte frame: too small to be worth it
    record = _store(archive, data)
    work = _compress(archive, record)
    assert work.compressed == 0 and work.skipped == 1
    (reason,) = work.reasons
    assert "too small" in reason
    assert archive.index.compression_skips([record.blob.key]) == {record.blob.key: reason}
    assert _reread(archive, record) == record  # unchanged
    assert b"".join(archive.retrieve.iter_bytes(record, verify=True)) == data


def test_damaged_original_is_not_compressed(archive: Archive) -> None:
    data = _noise_ct("1.2.3.8")
    record = _store(archive, data)
    path = archive.blobs.local_path(record.blob.key)
    if path is None:
        pytest.skip("damages a file on a filesystem store")
    damaged = bytearray(path.read_bytes())
    damaged[-10] ^= 0xFF
    path.chmod(0o644)
    path.write_bytes(bytes(damaged))
    work = _compress(archive, record)
    assert work.compressed == 0 and work.unreadable == 1
    assert _reread(archive, record).transfer_syntax_uid == str(ExplicitVRLittleEndian)


def test_space_saved_per_modality(archive: Archive) -> None:
    records = [_store(archive, _noise_ct("1.2.3.9", seed=i)) for i in range(3)]
    for r in records:
        _compress(archive, r)
    (saved,) = archive.index.compression_savings()
    assert saved.modality == "CT" and saved.instances == 3
    assert saved.original_bytes == sum(r.blob.size for r in records)
    assert saved.stored_bytes < saved.original_bytes and saved.ratio > 1


def test_trash_restore_keeps_the_original_and_a_delete_forgets_the_recipe(archive: Archive) -> None:
    from dicomvault.domain.trash import Deletion

    assert archive.trash is not None
    data = _noise_ct("1.2.3.10")
    record = _store(archive, data)
    _compress(archive, record)
    compressed = _reread(archive, record)
    archive.trash.delete("1.2.3.10", deletion=Deletion("test", "soft"), grace_days=1)
    assert archive.retrieve.locate(study_uid="1.2.3.10") == []
    archive.trash.restore("1.2.3.10", deletion=Deletion("test", "restore"))
    back = _reread(archive, record)
    assert back.blob == compressed.blob and back.original == compressed.original, "the recipe follows the blob"
    assert back.original is not None
    assert b"".join(archive.retrieve.iter_transcoded(back, back.original.syntax)) == data
    archive.lifecycle.delete("1.2.3.10")
    assert archive.index.original_recipe(compressed.blob.key) is None
    assert not archive.blobs.exists(compressed.blob.key)
