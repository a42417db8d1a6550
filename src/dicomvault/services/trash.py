"""Soft delete with a grace period, restore, purge, the deletion log and the retention minimum (issue #11 item 6).

Trash instead of a hidden flag: a soft delete removes the instance rows exactly as a delete does, so C-FIND,
QIDO-RS, counters, cached study answers and retrieval exclude them at once without any query knowing about it;
only the blobs it releases are kept, in the index's trash (``IndexRepository.soft_delete``), instead of being
recorded as pending removals. A trashed key counts as referenced wherever the index decides whether a blob is,
so the removal protocol (``services.lifecycle``) never deletes it and fixity keeps checking and repairing its
copies. Copies (``blob_copies``) stay as they are: a restored study is read from wherever its blobs are.

Restore (within the grace period) re-ingests each trashed object from its own stored bytes through
``IngestService`` (source ``restore``): it parses, indexes and records the copy as any store does, and the put
finds the bytes present (content-addressed). Only then is the trash row deleted (``untrash_restored``, which
keeps the row of any key no index row references: a failed restore leaves the blob protected).

Restore racing a purge. The purge deletes the trash row and records the key as pending in one transaction, then
removes it through the claim protocol; the restore is a store of the same bytes. So the two are exactly a
delete racing a re-send, which the protocol orders (``services.lifecycle``, cases a–e; the purge's pending row
is case d on PostgreSQL, see ``adapters.index.trash``): the purge either finds the restored instance row and
keeps the blob, or the restore's store finds the pending row and cancels it, or is refused while the claim
runs, waits for it, writes the bytes again (ingest spools them: it has them) and is then accepted. Never an
instance row without its blob. A restore that reads a blob the purge already deleted gets ``NotFound`` from the
store and reports the object as purged; it never reports success for it.

Purge: when ``purge_after`` has passed (or on an operator's ``--force``), ``IndexRepository.purge_trash`` turns
trash rows into pending removals (an object sent again meanwhile keeps its blob), then ``BlobRemover.remove``
deletes them as every removal does. The job worker runs ``purge_due`` periodically, in batches.

Retention minimum: ``retention_min_days`` refuses every delete — DICOMweb DELETE (409), a lifecycle delete rule
(skipped), the command line — of a study whose StudyDate is younger, or that has no StudyDate to tell its age.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dicomvault.domain.errors import DicomVaultError, NotFound
from dicomvault.domain.records import DuplicatePolicy
from dicomvault.domain.tiers import study_date_cutoff
from dicomvault.domain.trash import Deletion, DeletionEntry, RetentionHeld, TrashItem
from dicomvault.ports.blobs import BlobStore
from dicomvault.ports.index import IndexRepository
from dicomvault.services.ingest import IngestService
from dicomvault.services.lifecycle import BlobRemover, DeleteResult, LifecycleService

log = logging.getLogger(__name__)

#: Trashed blobs purged per transaction (and per claim round of the remover, which splits them further).
PURGE_BATCH = 500
#: Batches one periodic run purges at most: a large backlog is worked off over several runs, never in one long
#: stretch that would hold up the worker's jobs.
PURGE_BATCHES_PER_RUN = 20
#: Who the periodic purge is in the deletion log.
PURGE_BY = "system:grace-period"


@dataclass(frozen=True)
class DeleteOutcome:
    """What ``TrashService.delete`` did: a soft delete (``trashed`` blobs, restorable until ``purge_after``)
    or, without a grace period, an immediate delete (``removed``)."""

    trashed: int = 0
    purge_after: datetime | None = None
    removed: DeleteResult | None = None

    @property
    def soft(self) -> bool:
        return self.purge_after is not None


@dataclass
class RestoreResult:
    #: objects ingested again (current instances and, under ``keep-both``, prior versions)
    restored: int = 0
    #: trash rows deleted after the restore
    untrashed: int = 0
    #: objects whose blob was purged meanwhile (nothing to restore them from)
    purged: int = 0
    #: prior versions left in the trash: the duplicate policy is not ``keep-both``, so ingest cannot index them
    #: beside their current version (they are purged with the rest)
    superseded_left: int = 0
    #: objects ingest refused, with the reason (their blobs stay in the trash)
    failed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"restored": self.restored, "untrashed": self.untrashed, "purged": self.purged,
                "superseded_left": self.superseded_left, "failed": list(self.failed)}


@dataclass
class PurgeResult:
    #: trash rows purged
    purged: int = 0
    #: blobs deleted from the stores
    removed: int = 0
    #: blobs kept because an instance references them again (the object was sent again)
    kept: int = 0
    #: blobs whose removal is left to the removal sweep
    left: int = 0
    #: trash rows of the request not purged because their grace period has not passed (no ``force``)
    not_due: int = 0

    def add(self, other: PurgeResult) -> None:
        self.purged += other.purged
        self.removed += other.removed
        self.kept += other.kept
        self.left += other.left
        self.not_due += other.not_due

    def as_dict(self) -> dict[str, int]:
        return {"purged": self.purged, "removed": self.removed, "kept": self.kept, "left": self.left,
                "not_due": self.not_due}


@dataclass(frozen=True)
class TrashStudy:
    """The trash of one study, summed up (``dicomvault trash list``)."""

    study_uid: str
    instances: int
    blobs: int
    bytes: int
    deleted_at: datetime
    purge_after: datetime
    reasons: tuple[str, ...]
    deleted_by: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"study_uid": self.study_uid, "instances": self.instances, "blobs": self.blobs, "bytes": self.bytes,
                "deleted_at": self.deleted_at.isoformat(), "purge_after": self.purge_after.isoformat(),
                "reasons": list(self.reasons), "deleted_by": list(self.deleted_by)}


class TrashService:
    def __init__(
        self,
        index: IndexRepository,
        blobs: BlobStore,
        ingest: IngestService,
        lifecycle: LifecycleService,
        remover: BlobRemover,
        *,
        grace_days: float = 0.0,
        retention_min_days: int = 0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.index = index
        self.blobs = blobs
        self.ingest = ingest
        self.lifecycle = lifecycle
        self.remover = remover
        self.grace_days = grace_days
        self.retention_min_days = retention_min_days
        #: the time grace periods are measured with (tests move it)
        self.clock = clock

    # -- deleting ----------------------------------------------------------------------------------------

    def check_retention(self, study_uid: str) -> None:
        """Raise ``RetentionHeld`` if ``retention_min_days`` keeps the study (younger, or without a StudyDate);
        ``NotFound`` if the study is unknown."""
        facts = self.index.study_facts(study_uid)
        if facts is None:
            raise NotFound("no instances match")
        days = self.retention_min_days
        if days <= 0:
            return
        date = (facts.study_date or "").strip()
        if len(date) != 8 or not date.isdigit():
            raise RetentionHeld(f"retention: retention_min_days is {days} and the study has no StudyDate to tell "
                                "its age; it cannot be deleted")
        if date >= study_date_cutoff(self.clock(), days):
            raise RetentionHeld(f"retention: the study is younger than retention_min_days ({days} days); it "
                                "cannot be deleted yet")

    def delete(self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None, *,
               deletion: Deletion, grace_days: float | None = None) -> DeleteOutcome:
        """Delete the addressed instances: into the trash for ``grace_days`` (None: ``delete_grace_days``), or at
        once when that is 0. Raises ``NotFound`` when nothing matches, ``RetentionHeld`` under the retention
        minimum. Logged (``soft-delete`` or ``delete``) with ``deletion``."""
        if not self.index.instances(study_uid=study_uid, series_uid=series_uid,
                                    sop_uids=[sop_uid] if sop_uid else None):
            raise NotFound("no instances match")
        self.check_retention(study_uid)
        grace = self.grace_days if grace_days is None else grace_days
        if grace <= 0:
            return DeleteOutcome(removed=self.lifecycle.delete(study_uid, series_uid, sop_uid, deletion=deletion))
        purge_after = self.clock() + timedelta(days=grace)
        trashed = self.index.soft_delete(study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid,
                                         purge_after=purge_after, deletion=deletion)
        log.info("soft-deleted instances level=%s blobs_trashed=%d grace_days=%g by=%s",
                 "instance" if sop_uid else "series" if series_uid else "study", len(trashed), grace, deletion.by)
        return DeleteOutcome(trashed=len(trashed), purge_after=purge_after)

    def hide(self, study_uid: str, series_uid: str | None, sop_uid: str | None, *, deletion: Deletion,
             purge_after: datetime) -> int:
        """Into the trash now until ``purge_after``, whatever the grace and retention settings say (an IOCM
        rejection note: hiding cannot wait; the caller chose a purge time the retention minimum allows). Returns
        the blobs trashed; raises ``NotFound`` when nothing matches."""
        trashed = self.index.soft_delete(study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid,
                                         purge_after=purge_after, deletion=deletion)
        if not trashed:
            raise NotFound("no instances match")
        return len(trashed)

    # -- the trash ---------------------------------------------------------------------------------------

    def items(self, study_uid: str | None = None, *, limit: int | None = None) -> list[TrashItem]:
        return self.index.trash_items(study_uid=study_uid, limit=limit)

    def studies(self) -> list[TrashStudy]:
        """The trash per study, in Study Instance UID order."""
        by_study: dict[str, list[TrashItem]] = {}
        for item in self.index.trash_items():
            by_study.setdefault(item.study_uid, []).append(item)
        return [TrashStudy(uid, len({i.sop_uid for i in items}), len(items), sum(i.blob.size for i in items),
                           min(i.deleted_at for i in items), min(i.purge_after for i in items),
                           tuple(sorted({i.reason for i in items if i.reason})),
                           tuple(sorted({i.deleted_by for i in items if i.deleted_by})))
                for uid, items in sorted(by_study.items())]

    def deletion_log(self, study_uid: str | None = None, *, limit: int = 100) -> list[DeletionEntry]:
        return self.index.deletion_log(study_uid=study_uid, limit=limit)

    # -- restore -----------------------------------------------------------------------------------------

    def restore(self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None, *,
                deletion: Deletion) -> RestoreResult:
        """Ingest the trashed objects of the study (series, instance) again from their stored bytes, then take
        them out of the trash. Raises ``NotFound`` when the trash holds nothing of it. Prior versions go first
        (oldest first), so that under ``keep-both`` each current instance is indexed last and the earlier ones
        become its prior versions again; under another policy prior versions are left to the purge."""
        items = self.index.trash_items(study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid)
        if not items:
            raise NotFound("nothing of this is in the trash")
        keep_both = self.ingest.policy == DuplicatePolicy.KEEP_BOTH
        result = RestoreResult()
        order = sorted(items, key=lambda i: (not i.superseded, i.deleted_at, i.sop_uid))
        back: list[str] = []
        instances = 0
        for item in order:
            if item.superseded and not keep_both:
                result.superseded_left += 1
                continue
            if self._reingest(item, result):
                back.append(item.blob.key)
                instances += 0 if item.superseded else 1
        result.untrashed = self.index.untrash_restored(back, study_uid=study_uid, series_uid=series_uid,
                                                       sop_uid=sop_uid, instances_count=instances,
                                                       deletion=deletion)
        log.info("restored from the trash: restored=%d purged=%d failed=%d superseded_left=%d by=%s",
                 result.restored, result.purged, len(result.failed), result.superseded_left, deletion.by)
        return result

    def _reingest(self, item: TrashItem, result: RestoreResult) -> bool:
        try:
            stream = self.blobs.open(item.blob.key)
        except NotFound:
            result.purged += 1  # purged meanwhile: nothing to restore from
            return False
        except DicomVaultError as exc:  # e.g. on an archive storage class, not recalled
            result.failed.append(exc.message)
            return False
        try:
            with stream:
                self.ingest.ingest(stream, source="restore")
        except NotFound:
            result.purged += 1  # the blob went while being read
            return False
        except DicomVaultError as exc:
            result.failed.append(exc.message)
            return False
        result.restored += 1
        return True

    # -- purge -------------------------------------------------------------------------------------------

    def _purge(self, keys: Sequence[str], *, due_at: datetime | None, deletion: Deletion) -> PurgeResult:
        batch = self.index.purge_trash(keys, due_at=due_at, deletion=deletion)
        result = PurgeResult(purged=batch.purged, kept=len(batch.referenced))
        if batch.remove:
            report = self.remover.remove(batch.remove)
            result.removed, result.left = report.removed, report.left
            result.kept += report.referenced
        return result

    def purge(self, study_uid: str, *, force: bool = False, deletion: Deletion) -> PurgeResult:
        """Purge the trash of one study: what is due, or all of it with ``force``. Raises ``NotFound`` when the
        trash holds nothing of the study."""
        items = self.index.trash_items(study_uid=study_uid)
        if not items:
            raise NotFound("nothing of this study is in the trash")
        now = self.clock()
        result = PurgeResult()
        keys = [i.blob.key for i in items]
        for start in range(0, len(keys), PURGE_BATCH):
            result.add(self._purge(keys[start : start + PURGE_BATCH], due_at=None if force else now,
                                   deletion=deletion))
        result.not_due = 0 if force else sum(1 for i in items if i.purge_after > now)
        return result

    def purge_due(self, *, deletion: Deletion | None = None, batches: int = PURGE_BATCHES_PER_RUN) -> PurgeResult:
        """Purge what is due, at most ``batches`` batches (the job worker's periodic task)."""
        who = deletion or Deletion(PURGE_BY, "grace period over")
        result = PurgeResult()
        for _ in range(batches):
            now = self.clock()
            keys = self.index.trash_due(now=now, limit=PURGE_BATCH)
            if not keys:
                break
            step = self._purge(keys, due_at=now, deletion=who)
            result.add(step)
            if len(keys) < PURGE_BATCH or not step.purged:
                break
        if result.purged:
            log.info("trash purge: purged=%d removed=%d kept=%d left=%d", result.purged, result.removed,
                     result.kept, result.left)
        return result
