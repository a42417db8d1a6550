"""Deleting studies, series and instances (DICOMweb DELETE, admin tools).

Order matters for durability: the index rows go first, in one transaction, and only after it commits are the
released blobs removed. A crash in between leaves blobs no index row points to (orphans), which
``dicomvault verify --repair`` sweeps; the reverse order could leave index rows whose bytes are gone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from dicomvault.domain.errors import NotFound
from dicomvault.ports.blobs import BlobStore
from dicomvault.ports.index import IndexRepository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeleteResult:
    #: blobs released by the index and removed from the store
    blobs_removed: int
    #: released blobs whose removal failed (left for ``verify --repair``)
    blobs_left: int


class LifecycleService:
    def __init__(self, index: IndexRepository, blobs: BlobStore) -> None:
        self.index = index
        self.blobs = blobs

    def delete(self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None) -> DeleteResult:
        """Remove the addressed instances; raises ``NotFound`` when nothing matched."""
        if not self.index.instances(study_uid=study_uid, series_uid=series_uid,
                                    sop_uids=[sop_uid] if sop_uid else None):
            raise NotFound("no instances match")
        released = self.index.delete(study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid)
        removed = left = 0
        for blob in released:
            try:
                self.blobs.delete(blob.key)
                removed += 1
            except Exception:
                left += 1
                log.warning("could not delete released blob %s; verify --repair will", blob.key, exc_info=True)
        log.info("deleted instances level=%s blobs_removed=%d blobs_left=%d",
                 "instance" if sop_uid else "series" if series_uid else "study", removed, left)
        return DeleteResult(removed, left)
