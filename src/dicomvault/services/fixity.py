"""Fixity checking and repair: does every indexed object still hold exactly the bytes that were acknowledged?

The archive's promise is "an acknowledged object is durable and unchanged". This service checks it end to end
through the ports only: every blob the index references is re-read and its SHA-256 recomputed (missing and
corrupt blobs are reported), every key in the blob store that no index row references is an orphan (what a crash
between "blob written" and "index committed" leaves behind, never acknowledged), and stores that stage writes in
temporary files report leftovers. On a running archive an ingest between its blob put and its index commit looks
exactly like an orphan, so stores that know their files' ages (``ports.blobs.Housekeeping``) let unreferenced
blobs and staged files younger than a grace period count as work in progress, neither reported nor deleted.

Repair is deliberately narrow: orphans and staged leftovers are garbage and may be deleted; an index row whose
bytes are gone or damaged is *data loss* and is only dropped on an explicit request (``drop_damaged``), so an
operator can first restore the blob from a backup. Orphans are deleted through the blob removal claim protocol
(``services.lifecycle.BlobRemover``), so an ingest of identical bytes that finds an orphan present while repair
deletes it either keeps it (the claim sees its index row) or writes it again (the index refuses it until then).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from dicomvault.domain.errors import DicomVaultError, NotFound
from dicomvault.domain.records import BlobInfo
from dicomvault.ports.blobs import BlobStore, Housekeeping
from dicomvault.ports.index import IndexRepository
from dicomvault.services.lifecycle import BlobRemover

log = logging.getLogger(__name__)

CHUNK = 1 << 20

#: progress callback: (objects checked so far, bytes read so far)
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Damaged:
    """An index reference whose blob is missing, of the wrong size, or fails its SHA-256."""

    sop_uid: str
    blob: BlobInfo
    problem: str  # "missing" | "corrupt"
    detail: str


@dataclass
class FixityReport:
    checked: int = 0
    bytes_read: int = 0
    damaged: list[Damaged] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    #: unreferenced blobs younger than the grace period (or of unknown age): maybe ingests in progress, left alone
    recent_unreferenced: int = 0
    #: staged temporary files; None when the store has no staging area
    temporary: list[str] | None = None

    @property
    def missing(self) -> list[Damaged]:
        return [d for d in self.damaged if d.problem == "missing"]

    @property
    def corrupt(self) -> list[Damaged]:
        return [d for d in self.damaged if d.problem == "corrupt"]

    @property
    def clean(self) -> bool:
        return not self.damaged and not self.orphans and not self.temporary


@dataclass
class RepairResult:
    orphans_removed: int = 0
    temporary_removed: int = 0
    rows_dropped: int = 0
    #: damaged references that could not be dropped (e.g. a prior version of an instance whose current
    #: version is intact: the port removes whole instances only), with the reason
    not_dropped: list[tuple[Damaged, str]] = field(default_factory=list)


class FixityService:
    def __init__(self, index: IndexRepository, blobs: BlobStore, remover: BlobRemover) -> None:
        self.index = index
        self.blobs = blobs
        self.remover = remover

    def expected_bytes(self) -> int:
        """Bytes of the current instances (the progress bar's total; prior versions add a little more)."""
        return self.index.stats().bytes

    def check(self, *, progress: Progress | None = None, grace: float = 0.0) -> FixityReport:
        """Re-hash every referenced blob, then list orphans and staged leftovers older than ``grace`` seconds.

        Memory: one set of referenced keys (about 100 bytes per blob), the bytes themselves are streamed.
        """
        report = FixityReport()
        referenced: set[str] = set()
        for sop_uid, blob in self.index.iter_blob_refs():
            referenced.add(blob.key)
            damage = self._check_one(sop_uid, blob, report)
            if damage is not None:
                log.warning("fixity: blob %s %s (%s)", blob.key, damage.problem, damage.detail)
                report.damaged.append(damage)
            report.checked += 1
            if progress is not None:
                progress(report.checked, report.bytes_read)
        for key in self.blobs.iter_keys():
            if key in referenced:
                continue
            if self._younger_than(key, grace):
                report.recent_unreferenced += 1
            else:
                report.orphans.append(key)
        if isinstance(self.blobs, Housekeeping):
            report.temporary = self.blobs.temporary_files(grace)
        return report

    def _younger_than(self, key: str, grace: float) -> bool:
        """Whether an unreferenced blob may be an ingest in progress. A store that cannot tell ages (S3) gets
        the benefit of the doubt: its orphans are reported and removed only with ``grace == 0``."""
        if grace <= 0:
            return False
        if not isinstance(self.blobs, Housekeeping):
            return True
        age = self.blobs.blob_age(key)
        return age is not None and age < grace

    def _check_one(self, sop_uid: str, blob: BlobInfo, report: FixityReport) -> Damaged | None:
        digest = hashlib.sha256()
        size = 0
        try:
            with self.blobs.open(blob.key) as f:
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    report.bytes_read += len(chunk)
        except NotFound:
            return Damaged(sop_uid, blob, "missing", "blob not found in the store")
        except OSError as exc:
            return Damaged(sop_uid, blob, "corrupt", f"unreadable: {exc}")
        if size != blob.size:
            return Damaged(sop_uid, blob, "corrupt", f"size {size} != recorded {blob.size}")
        if digest.hexdigest() != blob.sha256:
            return Damaged(sop_uid, blob, "corrupt", "SHA-256 mismatch")
        return None

    def remove_orphans(self, report: FixityReport) -> int:
        """Delete the orphans of ``report`` that are still unreferenced, through the claim protocol: an ingest of
        identical bytes racing the repair either keeps its blob or writes it again (``services.lifecycle``)."""
        return self.remover.remove(report.orphans, unreferenced_found=True).removed

    def sweep_temporary(self, older_than: float) -> int:
        """Remove staged leftovers untouched for ``older_than`` seconds (0 when the store has no staging area)."""
        if isinstance(self.blobs, Housekeeping):
            return self.blobs.sweep_temporary(older_than)
        return 0

    def drop_damaged(self, report: FixityReport, result: RepairResult) -> None:
        """Remove index rows of instances whose current blob is missing or corrupt (data already lost)."""
        for damage in report.damaged:
            try:
                records = self.index.instances(sop_uids=[damage.sop_uid])
            except DicomVaultError as exc:
                result.not_dropped.append((damage, f"index lookup failed: {exc.message}"))
                continue
            if not records:
                result.not_dropped.append((damage, "instance no longer indexed"))
                continue
            record = records[0]
            if record.blob.key != damage.blob.key:
                result.not_dropped.append((damage, "prior version of an instance whose current copy is intact"))
                continue
            released = self.index.delete(
                study_uid=record.study_uid, series_uid=record.series_uid, sop_uid=record.sop_uid
            )
            # a corrupt blob left behind (claim refused) would only be an orphan
            self.remover.remove(b.key for b in released)
            result.rows_dropped += 1
            log.warning("fixity: dropped index row of an instance whose blob was %s", damage.problem)
