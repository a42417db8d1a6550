"""The one ingest path used by every front end (C-STORE, STOW-RS, CLI import).

parse header (no pixel data) → validate → build index entry and cached JSON → frame index → durable blob put
(SHA-256 computed while streaming) → index in one transaction → only then return, so the caller acknowledges
only what is durable and indexed. If indexing fails, a blob this call created is removed again; if the process
dies in between, the blob is an orphan that ``verify --repair`` removes: never an index row without its blob.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import BinaryIO

from dicomvault.domain.errors import Conflict, DamagedPixelData, DicomVaultError, InvalidDicom
from dicomvault.domain.records import BlobInfo, DuplicatePolicy, InstanceEntry, PixelLengthPolicy, StoreOutcome
from dicomvault.domain.tags import Level
from dicomvault.ports.blobs import BlobStore
from dicomvault.ports.index import IndexRepository
from dicomvault.services import header as hdr
from dicomvault.services.frames import build_frame_index
from dicomvault.services.inflate import Limits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    outcome: StoreOutcome
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax_uid: str
    blob: BlobInfo
    #: stored under the ``accept-and-flag`` policy although its pixel data cannot be decoded: why
    pixel_problem: str | None = None

    @property
    def warning(self) -> str | None:
        if self.outcome == StoreOutcome.DUPLICATE:
            return None
        if self.outcome in (StoreOutcome.REPLACED, StoreOutcome.VERSIONED):
            return f"an earlier object with this SOP Instance UID was {self.outcome.value}"
        return None


def _sha256_of(stream: BinaryIO) -> str:
    stream.seek(0)
    digest = hashlib.sha256()
    while chunk := stream.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


class IngestService:
    def __init__(
        self,
        index: IndexRepository,
        blobs: BlobStore,
        *,
        policy: DuplicatePolicy,
        precheck_duplicates: bool = True,
        limits: Limits | None = None,
        pixel_policy: PixelLengthPolicy = PixelLengthPolicy.REJECT,
    ) -> None:
        """``precheck_duplicates``: ask the index whether an identical object is already stored before sending
        the bytes to the blob store. Worth it where a put is expensive (S3: the whole body crosses the network
        before the store can say it has the object). On the filesystem a re-sent object costs one temporary
        write (the store then finds the content-addressed blob present and links nothing), which is cheaper
        overall than a query for every new instance: re-sends are rare, new instances are the hot path."""
        self.index = index
        self.blobs = blobs
        self.policy = policy
        self.precheck_duplicates = precheck_duplicates
        self.limits = limits or Limits()
        self.pixel_policy = pixel_policy

    def ingest(self, stream: BinaryIO, *, source: str = "") -> IngestResult:
        """Store one Part 10 object read from a seekable ``stream``. Raises ``InvalidDicom`` (``DamagedPixelData``
        for native pixel data shorter than the header describes, under the ``reject`` policy), ``TooLarge`` (a
        deflated data set beyond the inflation limits), ``Conflict``, ``Unavailable``; returns only after the
        object is durable and indexed."""
        parsed = hdr.parse_header(stream, self.limits)
        try:
            ds = parsed.dataset
            data = hdr.json_dict(ds, parsed)
            hdr.validate(data)
            cols = hdr.index_columns(data, parsed.transfer_syntax_uid)
            meta_json = hdr.dumps(data)
            problem = parsed.pixel_problem
            if problem is not None:
                if self.pixel_policy == PixelLengthPolicy.REJECT:
                    raise DamagedPixelData(problem)
                cols[Level.IMAGE]["pixel_problem"] = problem[:128]
            frame_index = None
            # A deflated object's frames lie in its inflated data set, not in the blob: no index (retrieval
            # inflates, bounded); damaged pixel data has no frames to locate.
            if parsed.pixel_data_offset is not None and not parsed.deflated and problem is None:
                try:
                    frame_index = build_frame_index(
                        stream, ds, parsed.transfer_syntax_uid, parsed.pixel_data_offset, parsed.file_size
                    )
                except Exception:
                    log.debug("frame index not built", exc_info=True)
                    frame_index = None
        finally:
            parsed.close()
        if self.precheck_duplicates:
            sop_uid = cols[Level.IMAGE]["sop_uid"]
            known = self.index.instance_checksum(sop_uid)
            if known is not None and known == _sha256_of(stream):
                # Re-sent identical object (a modality retrying, an import re-run): success, nothing written.
                return IngestResult(StoreOutcome.DUPLICATE, cols[Level.IMAGE]["sop_class_uid"], sop_uid,
                                    cols[Level.STUDY]["study_uid"], cols[Level.SERIES]["series_uid"],
                                    parsed.transfer_syntax_uid, BlobInfo(known, parsed.file_size, known),
                                    pixel_problem=problem)
        stream.seek(0)
        put = self.blobs.put(stream)
        if put.info.size != parsed.file_size:
            raise InvalidDicom("object changed while it was being stored")
        entry = InstanceEntry(
            patient=cols[Level.PATIENT],
            study=cols[Level.STUDY],
            series=cols[Level.SERIES],
            instance=cols[Level.IMAGE],
            blob=put.info,
            metadata_json=meta_json,
            frame_index=frame_index,
            source=source,
        )
        try:
            result = self.index.store_instance(entry, self.policy)
        except Conflict:
            # Refused by the duplicate policy: these bytes will never be referenced (another node storing the
            # same bytes gets the same refusal), so the blob can go at once.
            if put.created and not self._safe_referenced(put.info.key):
                self._safe_delete(put.info.key)
            raise
        # Any other failure (database unavailable, crash) leaves the blob in place: another node may be about to
        # reference the same content-addressed key. Unreferenced blobs are swept by `verify --repair` after a
        # grace period, so deleting here could only ever race.
        for blob in result.released_blobs:
            self._safe_delete(blob.key)
        log.info(
            "stored instance outcome=%s size=%d ts=%s source=%s",
            result.outcome.value, put.info.size, parsed.transfer_syntax_uid, source,
        )
        if problem is not None:
            log.warning("stored an instance flagged by pixel_length_policy: %s (source=%s)", problem, source)
        return IngestResult(
            outcome=result.outcome,
            sop_class_uid=cols[Level.IMAGE]["sop_class_uid"],
            sop_instance_uid=cols[Level.IMAGE]["sop_uid"],
            study_uid=cols[Level.STUDY]["study_uid"],
            series_uid=cols[Level.SERIES]["series_uid"],
            transfer_syntax_uid=parsed.transfer_syntax_uid,
            blob=put.info,
            pixel_problem=problem,
        )

    def _safe_referenced(self, key: str) -> bool:
        try:
            return self.index.blob_referenced(key)
        except DicomVaultError:
            return True  # cannot tell: keep the blob, verify --repair decides later

    def _safe_delete(self, key: str) -> None:
        try:
            self.blobs.delete(key)
        except Exception:
            log.warning("could not delete released blob %s; verify --repair will", key, exc_info=True)
