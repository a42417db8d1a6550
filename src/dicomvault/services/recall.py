"""Recall: make a study whose blobs sit on an archive storage class (S3 GLACIER, DEEP_ARCHIVE) readable again.

Why a service of its own and a job: such objects must be *restored* before a GET (minutes to 48 hours, a
temporary copy kept ``recall_days``), so retrieval cannot do it on the fly; it answers ``NotRestored`` and the
user recalls the study (``dicomvault recall``, ``POST /admin/studies/{uid}/recall``). ``recall`` looks at every blob
the study references (``index.study_blobs``: current instances and prior versions) and requests a restore only
for those whose every recorded copy is on a ``Recallable`` store and not readable: a blob with a copy on a hot
store, or already restored or being restored, costs a HEAD and no request (S3 charges per restore request).

``start`` does that once at once (so the caller learns the counts and the requests are made even when no worker
runs) and, unless the study is readable already, queues a ``recall`` job (one per study: ``dedupe_key``) that
checks again until every blob is readable, re-requesting a restore that expired meanwhile. The job is retried by
the worker's backoff (a few quick looks, then one an hour: ``jobs.worker.backoff_delay`` capped by the worker's
``backoff_cap``), for ``RECALL_MAX_ATTEMPTS`` attempts, which covers the slowest restore (DEEP_ARCHIVE Bulk, 48 h)
with margin. Once readable the study is served by the normal read path (``services.blob_tiers``): nothing to
restart.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from dicomvault.domain.errors import NotFound
from dicomvault.domain.tiers import DEFAULT_STORE
from dicomvault.ports.blobs import BlobStore, Recallable, RestoreState
from dicomvault.ports.index import IndexRepository
from dicomvault.ports.jobs import JobQueue

log = logging.getLogger(__name__)

#: The job kind (``jobs.handlers.recall_handler``).
RECALL_JOB = "recall"
#: Attempts of a recall job: ~11 within the first hour of backoff, then about one an hour (worker default cap):
#: some 90 hours, beyond the 48 of the slowest restore tier.
RECALL_MAX_ATTEMPTS = 100
#: Restore settings of a store not named in ``stores`` (``StoreConfig``'s defaults).
DEFAULT_DAYS = 7
DEFAULT_TIER = "Standard"


class NamedStores(Protocol):
    """The named stores of an archive (``services.blob_tiers.TieredBlobs``)."""

    def store(self, name: str) -> BlobStore: ...


class RecallOptions(Protocol):
    """How long a restored copy stays readable and how fast (and dear) the restore is: ``StoreConfig`` fits."""

    @property
    def recall_days(self) -> int: ...

    @property
    def recall_tier(self) -> str: ...


@dataclass(frozen=True)
class _Defaults:
    recall_days: int = DEFAULT_DAYS
    recall_tier: str = DEFAULT_TIER


@dataclass(frozen=True)
class RecallResult:
    """What one look at a study found (every distinct blob counted once, in exactly one of the counts)."""

    study_uid: str
    blobs: int
    #: readable now (a copy on a readable store or class, or a restore finished)
    readable: int
    #: a restore requested earlier is in progress
    restoring: int
    #: a restore was requested by this call
    requested: int
    #: no recorded copy could be found on its store (fixity's business: ``dicomvault verify``)
    missing: int = 0
    #: the ``recall`` job that follows the restores (``start`` only; None when there is nothing to wait for)
    job_id: int | None = None

    @property
    def readable_all(self) -> bool:
        return self.readable == self.blobs

    @property
    def settled(self) -> bool:
        """Nothing is being restored: waiting longer changes nothing."""
        return self.restoring == 0 and self.requested == 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "readable_all": self.readable_all}


class RecallPending(Exception):
    """Raised by the recall job while restores are in progress, so the worker retries it later (with backoff);
    not a domain error: nothing failed."""


class RecallService:
    """Recall of studies on archive storage classes (see the module docstring)."""

    def __init__(
        self,
        index: IndexRepository,
        blobs: BlobStore,
        stores: Mapping[str, tuple[BlobStore, RecallOptions]],
        jobs: JobQueue | None = None,
    ) -> None:
        """``stores``: every named store (name → the store and its ``recall_days`` / ``recall_tier``). ``blobs``
        (the archive's store) stands in for the store ``default`` when ``stores`` does not name it, so a
        single-store archive needs no ``stores`` at all."""
        self.index = index
        self.blobs = blobs
        self.stores = dict(stores)
        self.jobs = jobs

    def _store(self, name: str) -> tuple[BlobStore, RecallOptions] | None:
        found = self.stores.get(name)
        if found is not None:
            return found
        if name == DEFAULT_STORE:
            return self.blobs, _Defaults()
        return None

    def recall(self, study_uid: str) -> RecallResult:
        """Look at every blob of the study once and request the restores it needs; raises ``NotFound`` for a study
        the index does not know. Idempotent: a second call requests nothing already requested."""
        study = self.index.study_blobs(study_uid)
        if not study:
            raise NotFound("study not found")
        copies: dict[str, tuple[str, ...]] = {}
        for blob in study:
            copies[blob.blob.key] = tuple(dict.fromkeys((*copies.get(blob.blob.key, ()), *blob.stores)))
        counts = {"readable": 0, "restoring": 0, "requested": 0, "missing": 0}
        for key, stores in copies.items():
            counts[self._recall_blob(key, stores)] += 1
        result = RecallResult(study_uid, len(copies), **counts)
        log.info("recall: %d blob(s): %d readable, %d restoring, %d restore(s) requested, %d missing",
                 result.blobs, result.readable, result.restoring, result.requested, result.missing)
        return result

    def _recall_blob(self, key: str, store_names: tuple[str, ...]) -> str:
        """One blob's outcome: 'readable', 'restoring', 'requested' or 'missing'."""
        archived: list[tuple[Recallable, RecallOptions]] = []
        restoring = False
        for name in store_names:
            found = self._store(name)
            if found is None:
                log.warning("recall: blob %s has a copy on store %r, which is not configured", key, name)
                continue
            store, options = found
            if not isinstance(store, Recallable):
                return "readable"  # a copy on a store that needs no restore (disk, a readable S3 class)
            try:
                state = store.restore_state(key)
            except NotFound:
                log.warning("recall: blob %s is recorded on store %r but not found there", key, name)
                continue
            if state == RestoreState.READABLE:
                return "readable"
            if state == RestoreState.RESTORING:
                restoring = True
            else:
                archived.append((store, options))
        if restoring:
            return "restoring"
        for cold, options in archived:  # one restore is enough: the first store in the copy order
            try:
                state = cold.request_restore(key, days=options.recall_days, tier=options.recall_tier)
            except NotFound:
                continue  # deleted between the HEAD and the request: try another copy
            return "readable" if state == RestoreState.READABLE else "requested"
        return "missing"

    def start(self, study_uid: str) -> RecallResult:
        """``recall`` now, then, unless every blob is readable (or nothing can change), queue the ``recall`` job
        that follows the restores to the end (one per study; a recall of a study already followed reuses its
        job). Without a job queue the result has no ``job_id``: call ``recall`` again to follow up."""
        result = self.recall(study_uid)
        if result.settled or self.jobs is None:
            return result
        job_id = self.jobs.enqueue(RECALL_JOB, {"study_uid": study_uid}, max_attempts=RECALL_MAX_ATTEMPTS,
                                   dedupe_key=f"{RECALL_JOB}:{study_uid}")
        return RecallResult(**{**asdict(result), "job_id": job_id})

    def follow_up(self, study_uid: str) -> dict[str, Any]:
        """The job's work: ``recall`` again; raises ``RecallPending`` while restores are in progress (the worker
        retries later), returns the counts once settled. A study deleted meanwhile ends the job quietly."""
        try:
            result = self.recall(study_uid)
        except NotFound:
            return {"study_uid": study_uid, "gone": True}
        if not result.settled:
            raise RecallPending(f"{result.restoring + result.requested} of {result.blobs} blob(s) still restoring")
        return result.as_dict()


def build_recall(index: IndexRepository, blobs: BlobStore, named: NamedStores | None,
                 configs: Mapping[str, RecallOptions], jobs: JobQueue | None) -> RecallService:
    """The composition root's one line: every configured store (``Settings.resolved_stores()``) with its restore
    settings, found among ``named`` (the archive's ``TieredBlobs``); without ``named``, ``blobs`` is the store
    ``default``."""
    if named is None:
        return RecallService(index, blobs, {}, jobs)
    return RecallService(index, blobs, {name: (named.store(name), cfg) for name, cfg in configs.items()}, jobs)
