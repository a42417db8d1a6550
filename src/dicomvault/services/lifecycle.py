"""Deleting studies, series and instances, and removing blobs while the same bytes may be stored again.

Order: the index rows go first, in one transaction that also records every blob they released as a *pending
removal*; the blobs are removed after it commits, through the claim protocol below. A crash in between leaves
pending removals that the periodic sweep finishes, never an index row without its blob.

Why a protocol
--------------
Blobs are content-addressed and deduplicated: a put of bytes already stored writes nothing (``created=False``),
and the index row the ingest then commits shares the existing blob. A deleter that has decided "no row references
K" and then deletes K can remove the blob that an ingest has just found present and is about to reference
(issue #9: a DELETE racing a re-send acknowledged the store and lost its blob in 175 of 300 rounds). Checking the
references again just before deleting narrows the window but cannot close it: the put is outside any
transaction. So every removal of a blob — DELETE, a blob released by the ``replace`` policy, the bytes of a
refused duplicate, ``verify --repair`` orphans and ``--drop-missing``, the ``delete-blob`` job — goes through
``BlobRemover`` and one row per key in the index (``adapters.index.removals``), and a store reads that row:

1. *release* — the transaction that removes the last row referencing K records K as pending;
2. *claim* — one write transaction locks K's row, checks that no instance or prior-version row references K and
   marks it claimed (a claim id and time); a pending K that is referenced again is cancelled instead;
3. *delete* the blob, then *finish*: the row becomes a finished tombstone, kept ``TOMBSTONE_RETENTION``;
4. *store* — after writing its instance row, in the same transaction, a store reads K's row (one primary-key
   statement, nearly always finding nothing): none → fine; pending → the store deletes it (the bytes are
   referenced again; the claim will find nothing to claim); claimed → ``BlobRemovalRace`` (the transaction rolls
   back); finished → ``BlobRemovalRace`` too, unless it is the claim the caller accepted. Ingest, refused, waits
   (bounded, polling ``blob_removal_round``) until the claim has finished, writes the bytes again (a real write:
   the blob is gone) and retries, accepting that finished claim. A claim left unfinished past the bound (its
   deleter died) makes ingest answer ``Unavailable`` (C-STORE 0xA700, HTTP 503): never an acknowledgement.

Why it is safe, case by case
----------------------------
Invariant: *a blob is deleted only under a claim; a claim is granted only while no committed row references its
key; and no store referencing the key commits while the claim is in progress, nor after it finished unless the
store wrote the bytes after it finished.* Then the blob of every committed row exists until a later delete
releases that row. For a store S whose put found K present (or wrote it) and a claim C of K:

a. *C commits before S reads K's row.* S sees claimed or finished: refused, and retried after a fresh write.
   SQLite has one writer, so S's transaction starts after C's commit; in a group commit S runs inside the
   leader's transaction in a SAVEPOINT of its own, so only S's savepoint rolls back and its retry is a new unit
   of work in a later batch. PostgreSQL (READ COMMITTED): S's read is a statement of its own whose snapshot
   includes C's commit; if C is committing at that instant, S's ``FOR UPDATE`` waits for it and reads the row
   as C left it.
b. *S reads a pending row before C.* S deletes it and holds the row lock until it commits; C's
   ``SELECT … FOR UPDATE`` waits for S and then finds no row: nothing is claimed, nothing deleted.
c. *S reads no row, and C later claims a pending row.* A pending row for K appears only in a transaction D that
   removes the last committed row referencing K. Every row that can reference K belongs to one SOP Instance UID
   X (K is the SHA-256 of the whole object, which contains its UID), and S has locked X's instance row
   (``SELECT … FOR UPDATE``) or inserted it (unique UID) before reading K's row; D must delete X's instance row
   before its prior versions, so D waits for S. A D that committed before S locked X is case b (S reads D's
   pending row). So no pending row for K appears between S's read and S's commit.
d. *S reads no row, and C creates one* (orphans, a refused duplicate's bytes, the ``delete-blob`` job: callers
   that found the blob present and unreferenced). SQLite: C's transaction cannot fall between S's read and
   S's commit. PostgreSQL: S holds no lock C could wait for and C cannot see S's uncommitted row; so C, after
   committing its claim and before deleting, waits until every transaction then in progress has ended (S has
   written, so it has a transaction id; ``removals.settle_postgres``) and checks references again; a key
   referenced now is given up (row deleted, blob kept). A store reading the row after C's commit is case a.
e. *S's put found K, then C claimed, deleted and finished, all before S reads K's row.* S sees the tombstone:
   refused, writes again, retries accepting exactly that claim (a newer claim refuses it again). Tombstones are
   kept ``TOMBSTONE_RETENTION``; ingest refuses (``Unavailable``) a store whose put began more than
   ``MAX_PUT_AGE`` before its index write, so no tombstone a store needs is forgotten first.
f. *S wrote K itself* (``created=True``). A content-addressed put never overwrites, so the object was absent
   when S wrote it; only a claim still in progress can delete it afterwards: cases a and d.
g. *S answers duplicate* from an existing committed row (or S3's pre-check). That row was committed with its
   blob present, and no claim of K can be granted while it exists; a delete removing it is ordered after S.
h. *Crashes and stalls.* A crash between release and claim leaves a pending row, one between claim and finish a
   claimed row: the sweep (every node's job worker, every ``blob_removal_sweep_interval`` seconds) claims again
   what has been pending or claimed for ``blob_removal_stale_after`` seconds and deletes it again (deleting is
   idempotent); stores of such a key wait for that, then write again. A deleter that stalls instead of crashing
   could delete after the sweep took over and a store re-referenced the blob, so a deleter stops once half of
   ``blob_removal_stale_after`` has passed since its claim (its own monotonic clock) and leaves the rest to the
   sweep: the lease rule of every at-least-once worker.
i. *Purge of the trash* (``services.trash``, ``adapters.index.trash``). A soft delete releases blobs into the
   trash instead of recording them pending; a trashed key counts as referenced in every check above, so nothing
   claims it. The purge deletes the trash row and records the key pending in one transaction that removes no
   instance row, so for a store S in flight it is case d, not case c: SQLite cannot interleave it with S; on
   PostgreSQL the purge waits, after its commit and before anything is claimed, for every transaction then in
   progress (``removals.settle_postgres``), so the claim's reference check sees S's row. A purger that dies
   before that leaves pending rows that only the sweep claims, ``blob_removal_stale_after`` later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from dicomvault.domain.errors import DicomVaultError, NotFound
from dicomvault.domain.trash import Deletion
from dicomvault.ports.blobs import BlobStore
from dicomvault.ports.index import IndexRepository

log = logging.getLogger(__name__)

#: Blobs claimed per claim transaction: a store that meets one of them waits for this many deletions at most
#: (64 S3 DELETEs are well under a second), and a long removal never holds a claim on everything.
CLAIM_BATCH = 64
#: Finished removals are remembered this long (case e). Far above ``MAX_PUT_AGE`` plus the longest index write
#: (PostgreSQL: 5 attempts of at most ``lock_timeout`` 20 s; SQLite: ``busy_timeout`` 60 s).
TOMBSTONE_RETENTION = 24 * 3600.0
#: A store whose blob put began longer ago than this before its index write is refused as ``Unavailable``:
#: the tombstones that would tell it of a deletion since then may be forgotten (case e). An hour is far more
#: than any put (the bytes come from a local spool file).
MAX_PUT_AGE = 3600.0
#: Keys one sweep takes up.
SWEEP_BATCH = 1000


@dataclass
class RemovalReport:
    #: blobs deleted
    removed: int = 0
    #: blobs kept because an index row references them again (a re-send won the race)
    referenced: int = 0
    #: blobs whose removal did not happen now (claimed by another deleter, deletion or index failure, lease
    #: spent): the sweep finishes them
    left: int = 0


class BlobRemover:
    """The only way blobs leave the store: claim → delete → finish (module docstring), and the periodic sweep."""

    def __init__(self, index: IndexRepository, blobs: BlobStore, *, stale_after: float = 300.0) -> None:
        self.index = index
        self.blobs = blobs
        self.stale_after = stale_after

    def remove(self, keys: Iterable[str], *, unreferenced_found: bool = False) -> RemovalReport:
        """Delete the blobs of ``keys`` that no index row references. ``unreferenced_found``: the caller saw
        these blobs present and unreferenced (orphans, a refused duplicate's bytes) rather than released by the
        index. Never raises for a backend failure: what is not removed now is left to the sweep."""
        report = RemovalReport()
        todo = sorted(set(keys))
        for i in range(0, len(todo), CLAIM_BATCH):
            batch = todo[i : i + CLAIM_BATCH]
            try:
                claim = self.index.claim_blob_removals(batch, stale_after=self.stale_after,
                                                       unreferenced_found=unreferenced_found)
            except DicomVaultError as exc:
                log.warning("blob removal: cannot claim %d blob(s) now (%s); the sweep will", len(batch),
                            exc.message)
                report.left += len(batch)
                continue
            report.referenced += len(claim.referenced)
            report.left += len(batch) - len(claim.keys) - len(claim.referenced)
            report.removed += self._delete(claim.claim, claim.keys, report)
        return report

    def _delete(self, claim: str, keys: tuple[str, ...], report: RemovalReport) -> int:
        started = time.monotonic()
        done: list[str] = []
        for key in keys:
            if time.monotonic() - started > self.stale_after / 2:
                log.warning("blob removal: claim held too long; %d blob(s) left to the sweep", len(keys) - len(done))
                report.left += len(keys) - len(done)
                break
            try:
                self.blobs.delete(key)
            except Exception as exc:
                log.warning("blob removal: could not delete blob %s (%s); the sweep will retry", key,
                            type(exc).__name__)
                log.debug("blob removal failure detail", exc_info=True)
                report.left += 1
                continue
            done.append(key)
        if done:
            try:
                self.index.finish_blob_removals(claim, done)
            except DicomVaultError as exc:  # the claim stays; the sweep deletes (idempotent) and finishes it
                log.warning("blob removal: cannot record %d deletion(s) now (%s)", len(done), exc.message)
        return len(done)

    def sweep(self) -> RemovalReport:
        """Finish removals left behind by a crash (pending or claimed for ``stale_after``) and forget finished
        ones older than ``TOMBSTONE_RETENTION``. Safe on every node at once: claims are exclusive."""
        report = self.remove(self.index.blob_removals_due(stale_after=self.stale_after, limit=SWEEP_BATCH))
        forgotten = self.index.forget_blob_removals(older_than=TOMBSTONE_RETENTION)
        if report.removed or report.left or report.referenced:
            log.info("blob removal sweep: removed=%d referenced=%d left=%d forgotten=%d",
                     report.removed, report.referenced, report.left, forgotten)
        return report


@dataclass(frozen=True)
class DeleteResult:
    #: blobs released by the index and removed from the store
    blobs_removed: int
    #: released blobs not removed now (left to the sweep)
    blobs_left: int
    #: released blobs referenced again by a store that raced the delete (kept)
    blobs_kept: int = 0


class LifecycleService:
    def __init__(self, index: IndexRepository, remover: BlobRemover) -> None:
        self.index = index
        self.remover = remover

    def delete(self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None, *,
               deletion: Deletion | None = None) -> DeleteResult:
        """Remove the addressed instances; raises ``NotFound`` when nothing matched. Returns after the released
        blobs are deleted (no grace period: the claim protocol is what makes deleting them now safe). The
        deletion log records it with ``deletion`` (who, why). With a grace period, deletes go through
        ``services.trash`` instead (soft delete, restore, purge)."""
        if not self.index.instances(study_uid=study_uid, series_uid=series_uid,
                                    sop_uids=[sop_uid] if sop_uid else None):
            raise NotFound("no instances match")
        released = self.index.delete(study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid,
                                     deletion=deletion)
        report = self.remover.remove(b.key for b in released)
        log.info("deleted instances level=%s blobs_removed=%d blobs_kept=%d blobs_left=%d",
                 "instance" if sop_uid else "series" if series_uid else "study", report.removed,
                 report.referenced, report.left)
        return DeleteResult(report.removed, report.left, report.referenced)
