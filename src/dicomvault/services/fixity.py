"""Fixity checking and repair: does every copy of every indexed object still hold exactly the acknowledged bytes?

The archive's promise is "an acknowledged object is durable and unchanged". This service checks it end to end
through the ports only, store by store: every copy the index records (``domain.tiers``: a copy of a blob on a
named store) is re-read and its SHA-256 recomputed; a referenced blob with no recorded copy is searched for on
every store; every key a store holds that no index row references is an orphan (what a crash between "blob
written" and "index committed" leaves behind, never acknowledged); bytes of a referenced blob on a store that has
no record of them are an *untracked* copy (a crash inside a tier move); stores that stage writes report leftovers.
On a running archive an ingest between its blob put and its index commit looks exactly like an orphan, so stores
that know their files' ages (``ports.blobs.Housekeeping``) let unreferenced blobs and staged files younger than a
grace period count as work in progress, neither reported nor deleted.

Repair, in order of safety:

* a missing or damaged copy is written again from an intact copy on another store and verified
  (``services.blob_copier``: a damaged copy is dropped first — never the last record — then copied);
* an untracked copy whose bytes verified is recorded (adopted);
* orphans and staged leftovers are garbage and deleted, orphans through the blob removal claim protocol
  (``services.lifecycle.BlobRemover``);
* a blob with no intact copy anywhere is **data loss**: logged at ERROR, listed in the report, and its index row is
  kept, so queries still show what was lost, unless an operator asks explicitly (``drop_damaged``) after trying
  a backup.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dicomvault.domain.errors import DicomVaultError, NotFound, NotRestored
from dicomvault.domain.records import BlobInfo
from dicomvault.domain.tiers import DEFAULT_STORE
from dicomvault.ports.blobs import BlobStore, Housekeeping
from dicomvault.ports.index import IndexRepository
from dicomvault.services.blob_copier import BlobCopier, Throttle
from dicomvault.services.blob_tiers import TieredBlobs
from dicomvault.services.lifecycle import BlobRemover

log = logging.getLogger(__name__)

CHUNK = 1 << 20

#: progress callback: (copies checked so far, bytes read so far)
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Damaged:
    """A recorded copy (``store``; None: the blob has no recorded copy at all) that is missing, of the wrong size,
    or fails its SHA-256."""

    sop_uid: str
    blob: BlobInfo
    problem: str  # "missing" | "corrupt"
    detail: str
    store: str | None = None


@dataclass(frozen=True)
class Untracked:
    """Intact bytes of a referenced blob on a store that has no record of them (adopted by repair)."""

    key: str
    store: str


@dataclass
class FixityReport:
    checked: int = 0
    bytes_read: int = 0
    damaged: list[Damaged] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    #: orphans per store (``orphans`` lists each key once)
    orphans_by_store: dict[str, list[str]] = field(default_factory=dict)
    untracked: list[Untracked] = field(default_factory=list)
    #: unreferenced blobs younger than the grace period (or of unknown age): maybe ingests in progress, left alone
    recent_unreferenced: int = 0
    #: staged temporary files; None when no store has a staging area
    temporary: list[str] | None = None
    #: copies checked per store
    checked_by_store: dict[str, int] = field(default_factory=dict)
    #: blob key → stores where a copy verified in this check, for the keys that also have a damaged copy
    intact_copies: dict[str, list[str]] = field(default_factory=dict)
    #: seconds spent re-reading recorded copies, and listing the stores (orphans; a fixed cost per store: a
    #: filesystem store walks its 4,096 fan-out folders)
    verify_seconds: float = 0.0
    listing_seconds: float = 0.0

    @property
    def missing(self) -> list[Damaged]:
        return [d for d in self.damaged if d.problem == "missing"]

    @property
    def corrupt(self) -> list[Damaged]:
        return [d for d in self.damaged if d.problem == "corrupt"]

    @property
    def data_loss(self) -> list[Damaged]:
        """Damaged copies of blobs that have no intact copy on any store (repair cannot help)."""
        bad_keys = {d.blob.key for d in self.damaged}
        intact = self._intact_keys(bad_keys)
        return [d for d in self.damaged if d.blob.key not in intact]

    def _intact_keys(self, keys: set[str]) -> set[str]:
        return {k for k in keys if k in self.intact_copies}

    @property
    def clean(self) -> bool:
        return not self.damaged and not self.orphans and not self.temporary and not self.untracked


@dataclass
class RepairResult:
    orphans_removed: int = 0
    temporary_removed: int = 0
    rows_dropped: int = 0
    copies_repaired: int = 0
    copies_adopted: int = 0
    #: (damaged copy, why it could not be repaired)
    not_repaired: list[tuple[Damaged, str]] = field(default_factory=list)
    #: damaged references that could not be dropped (e.g. a prior version of an instance whose current
    #: version is intact: the port removes whole instances only), with the reason
    not_dropped: list[tuple[Damaged, str]] = field(default_factory=list)


class FixityService:
    def __init__(self, index: IndexRepository, blobs: BlobStore, remover: BlobRemover,
                 copier: BlobCopier | None = None) -> None:
        self.index = index
        self.tiers = blobs if isinstance(blobs, TieredBlobs) else \
            TieredBlobs({DEFAULT_STORE: blobs}, ingest=DEFAULT_STORE)
        self.blobs = blobs
        self.remover = remover
        self.copier = copier or BlobCopier(index, self.tiers, Throttle(0))

    def expected_bytes(self) -> int:
        """Bytes of the current instances' copies (the progress bar's total; prior versions add a little more)."""
        return sum(u.bytes for u in self.index.store_usage()) or self.index.stats().bytes

    # -- checking -------------------------------------------------------------------------------------------

    def check(self, *, progress: Progress | None = None, grace: float = 0.0,
              throttle: Throttle | None = None) -> FixityReport:
        """Re-hash every recorded copy on every store, look for the blobs without one, then list orphans,
        untracked copies and staged leftovers older than ``grace`` seconds. ``throttle`` paces the reads.

        Memory: the referenced keys (about 100 bytes each) and one store's recorded keys at a time; the bytes are
        streamed.
        """
        report = FixityReport()
        pace = throttle or Throttle(0)
        referenced: set[str] = set()
        good: dict[str, list[str]] = {}
        for name, store in self.tiers.items():
            recorded: set[str] = set()
            began = time.perf_counter()
            for sop_uid, blob, stores in self.index.iter_blob_copies(name):
                referenced.add(blob.key)
                recorded.add(blob.key)
                problem = self._check_one(store, blob, report, pace)
                report.checked += 1
                report.checked_by_store[name] = report.checked_by_store.get(name, 0) + 1
                if problem is None:
                    if len(stores) > 1:
                        good.setdefault(blob.key, []).append(name)
                else:
                    kind, detail = problem
                    log.warning("fixity: blob %s on store %s %s (%s)", blob.key, name, kind, detail)
                    report.damaged.append(Damaged(sop_uid, blob, kind, detail, store=name))
                if progress is not None:
                    progress(report.checked, report.bytes_read)
            listing = time.perf_counter()
            report.verify_seconds += listing - began
            self._scan_store(name, store, recorded, referenced, report, grace, pace)
            report.listing_seconds += time.perf_counter() - listing
        for sop_uid, blob in self.index.iter_uncopied_blobs():
            referenced.add(blob.key)
            found = self._find_untracked(blob, report, pace)
            if found is None:
                log.error("fixity: blob %s has no copy on any store (data loss)", blob.key)
                report.damaged.append(Damaged(sop_uid, blob, "missing", "no copy on any store"))
        report.intact_copies = {d.blob.key: good.get(d.blob.key, []) for d in report.damaged
                                if good.get(d.blob.key)}
        for loss in report.data_loss:
            log.error("fixity: DATA LOSS: blob %s has no intact copy on any store", loss.blob.key)
            log.debug("fixity: the lost blob %s held instance %s", loss.blob.key, loss.sop_uid)
        report.orphans = sorted({k for keys in report.orphans_by_store.values() for k in keys})
        return report

    def _scan_store(self, name: str, store: BlobStore, recorded: set[str], referenced: set[str],
                    report: FixityReport, grace: float, pace: Throttle) -> None:
        """Keys on ``store`` without a record there: orphans (unreferenced) or untracked copies (referenced; kept
        for adoption only when their bytes hash to their key, which is their SHA-256)."""
        candidates: list[str] = []
        for key in store.iter_keys():
            if key in recorded:
                continue
            if key in referenced or self.index.blob_referenced(key):
                candidates.append(key)
            elif self._younger_than(store, key, grace):
                report.recent_unreferenced += 1
            else:
                report.orphans_by_store.setdefault(name, []).append(key)
        for key in candidates:
            if self._hash_of(store, key, report, pace) == key:
                report.untracked.append(Untracked(key, name))
            else:
                log.warning("fixity: store %s holds damaged unrecorded bytes under blob %s (left alone)", name, key)
        if isinstance(store, Housekeeping):
            report.temporary = (report.temporary or []) + store.temporary_files(grace)

    @staticmethod
    def _hash_of(store: BlobStore, key: str, report: FixityReport, pace: Throttle) -> str | None:
        digest = hashlib.sha256()
        try:
            with store.open(key) as f:
                while chunk := f.read(CHUNK):
                    pace.take(len(chunk))
                    digest.update(chunk)
                    report.bytes_read += len(chunk)
        except (NotFound, NotRestored, OSError):
            return None
        return digest.hexdigest()

    def _find_untracked(self, blob: BlobInfo, report: FixityReport, pace: Throttle) -> str | None:
        for name, store in self.tiers.items():
            if self._check_one(store, blob, report, pace) is None:
                report.untracked.append(Untracked(blob.key, name))
                return name
        return None

    @staticmethod
    def _younger_than(store: BlobStore, key: str, grace: float) -> bool:
        """Whether an unreferenced blob may be an ingest in progress. A store that cannot tell ages (S3) gets
        the benefit of the doubt: its orphans are reported and removed only with ``grace == 0``."""
        if grace <= 0:
            return False
        if not isinstance(store, Housekeeping):
            return True
        age = store.blob_age(key)
        return age is not None and age < grace

    @staticmethod
    def _check_one(store: BlobStore, blob: BlobInfo, report: FixityReport,
                   pace: Throttle) -> tuple[str, str] | None:
        digest = hashlib.sha256()
        size = 0
        try:
            with store.open(blob.key) as f:
                while chunk := f.read(CHUNK):
                    pace.take(len(chunk))
                    digest.update(chunk)
                    size += len(chunk)
                    report.bytes_read += len(chunk)
        except NotFound:
            return "missing", "blob not found in the store"
        except NotRestored:
            return None  # archived (needs a recall to be read): the store's own checksums vouch for it
        except OSError as exc:
            return "corrupt", f"unreadable: {exc}"
        if size != blob.size:
            return "corrupt", f"size {size} != recorded {blob.size}"
        if digest.hexdigest() != blob.sha256:
            return "corrupt", "SHA-256 mismatch"
        return None

    # -- repairing ------------------------------------------------------------------------------------------

    def repair_copies(self, report: FixityReport, result: RepairResult) -> None:
        """Write every damaged copy again from an intact copy on another store, and record untracked copies."""
        for damage in report.damaged:
            sources = report.intact_copies.get(damage.blob.key, [])
            if damage.store is None or not sources:
                result.not_repaired.append((damage, "no intact copy on another store"))
                continue
            try:
                if damage.problem == "corrupt" and not self.copier.drop(damage.blob, damage.store):
                    result.not_repaired.append((damage, "it is the only recorded copy"))
                    continue
                self.copier.copy(damage.blob, sources, damage.store)
            except DicomVaultError as exc:
                result.not_repaired.append((damage, exc.message))
                log.warning("fixity: blob %s on store %s not repaired: %s", damage.blob.key, damage.store,
                            type(exc).__name__)
                continue
            result.copies_repaired += 1
            log.warning("fixity: repaired the %s copy of blob %s on store %s from store %s", damage.problem,
                        damage.blob.key, damage.store, sources[0])
        for untracked in report.untracked:
            store = self.tiers.store(untracked.store)
            if self.index.add_blob_copy(untracked.key, untracked.store, verified_at=self.copier.now(),
                                        present=lambda s=store, k=untracked.key: s.exists(k)):  # type: ignore[misc]
                result.copies_adopted += 1

    def remove_orphans(self, report: FixityReport) -> int:
        """Delete the orphans of ``report`` that are still unreferenced, through the claim protocol: an ingest of
        identical bytes racing the repair either keeps its blob or writes it again (``services.lifecycle``)."""
        return self.remover.remove(report.orphans, unreferenced_found=True).removed

    def sweep_temporary(self, older_than: float) -> int:
        """Remove staged leftovers untouched for ``older_than`` seconds (0 when no store has a staging area)."""
        return sum(store.sweep_temporary(older_than) for _, store in self.tiers.items()
                   if isinstance(store, Housekeeping))

    def drop_damaged(self, report: FixityReport, result: RepairResult) -> None:
        """Remove index rows of instances whose current blob has no intact copy left (data already lost)."""
        for damage in report.data_loss:
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
