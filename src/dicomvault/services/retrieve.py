"""Locating stored instances and streaming their bytes, frames, or a transcoded copy.

C-GET/C-MOVE and WADO-RS/WADO-URI call this; none of them touches the blob store directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset

from dicomvault.domain.errors import IntegrityFailure, NotFound, Unsupported
from dicomvault.domain.records import InstanceRecord
from dicomvault.ports.blobs import BlobStore
from dicomvault.ports.index import IndexRepository
from dicomvault.services import transcode

CHUNK = 1 << 20


class RetrieveService:
    def __init__(self, index: IndexRepository, blobs: BlobStore) -> None:
        self.index = index
        self.blobs = blobs

    def locate(
        self,
        *,
        patient_id: str | None = None,
        study_uid: str | None = None,
        series_uid: str | None = None,
        sop_uids: list[str] | None = None,
    ) -> list[InstanceRecord]:
        return self.index.instances(
            patient_id=patient_id, study_uid=study_uid, series_uid=series_uid, sop_uids=sop_uids
        )

    def instance(self, study_uid: str, series_uid: str | None, sop_uid: str) -> InstanceRecord:
        found = self.index.instances(study_uid=study_uid, series_uid=series_uid, sop_uids=[sop_uid])
        if not found:
            raise NotFound("instance not found")
        return found[0]

    def open(self, record: InstanceRecord) -> BinaryIO:
        """The stored Part 10 object as a readable stream (exactly the bytes received)."""
        return self.blobs.open(record.blob.key)

    def iter_bytes(self, record: InstanceRecord, *, verify: bool = False, chunk: int = CHUNK) -> Iterator[bytes]:
        """Stream the stored object in chunks of ``chunk`` bytes (larger chunks: fewer reads and writes for a
        sender that can hold them); with ``verify`` the SHA-256 is checked at the end."""
        digest = hashlib.sha256() if verify else None
        remaining = record.blob.size
        with self.open(record) as f:
            # Reads sized to what is left: a read of ``chunk`` bytes allocates ``chunk`` bytes whatever the file
            # holds, and knowing the size saves the read that would only find the end.
            while chunk_bytes := f.read(min(chunk, remaining) if remaining > 0 else chunk):
                if digest is not None:
                    digest.update(chunk_bytes)
                remaining -= len(chunk_bytes)
                yield chunk_bytes
                if remaining == 0:
                    break
        if digest is not None and digest.hexdigest() != record.blob.sha256:
            raise IntegrityFailure(f"instance {record.sop_uid} failed its checksum")

    @contextlib.contextmanager
    def as_file(self, record: InstanceRecord) -> Iterator[Path]:
        """A local file holding the object: the blob itself on a filesystem store, else a temporary copy."""
        path = self.blobs.local_path(record.blob.key)
        if path is not None and path.exists():
            yield path
            return
        if path is not None:
            raise NotFound(f"blob of instance {record.sop_uid} is missing")
        with tempfile.NamedTemporaryFile(suffix=".dcm") as tmp, self.open(record) as src:
            shutil.copyfileobj(src, tmp, CHUNK)
            tmp.flush()
            yield Path(tmp.name)

    def read_dataset(self, record: InstanceRecord, *, stop_before_pixels: bool = False) -> Dataset:
        with self.open(record) as f:
            return pydicom.dcmread(f, stop_before_pixels=stop_before_pixels)

    def frame(self, record: InstanceRecord, number: int) -> bytes:
        """Frame ``number`` (1-based) in the stored transfer syntax: one byte-range read per fragment."""
        n_frames = record.number_of_frames or 1
        if number < 1 or number > n_frames:
            raise NotFound(f"frame {number} does not exist (the instance has {n_frames})")
        index = record.frame_index
        if index is not None and number <= len(index.frames):
            spans = index.frames[number - 1]
            if len(spans) == 1:
                return self.blobs.read_range(record.blob.key, spans[0][0], spans[0][1])
            return b"".join(self.blobs.read_range(record.blob.key, o, n) for o, n in spans)
        # No index (big endian, 1-bit, deflated): decode once from the object.
        ds = self.read_dataset(record)
        return transcode.frame_from_dataset(ds, number)

    def transcoded(self, record: InstanceRecord, target_ts: str) -> bytes:
        """The object re-encoded in ``target_ts`` as a Part 10 file; raises ``Unsupported``."""
        if target_ts == record.transfer_syntax_uid:
            return b"".join(self.iter_bytes(record))
        ds = self.read_dataset(record)
        out = transcode.to_syntax(ds, target_ts)
        buf = io.BytesIO()
        out.save_as(buf, enforce_file_format=True)
        return buf.getvalue()

    def can_transcode(self, source_ts: str, target_ts: str) -> bool:
        return transcode.can_transcode(source_ts, target_ts)


__all__ = ["RetrieveService", "Unsupported"]
