"""Lifecycle rules over named stores: which studies go where, planned, scheduled as durable jobs, and applied.

A rule (``storage_settings.LifecycleRule``) pairs a condition in DICOM terms (study age from StudyDate, days
since last read, modality, source, SOP class, size) with an action: ``move_to`` a store, ``copy_to`` stores
(replication), or ``delete`` (retention: ``services.trash`` soft-deletes the study, logged as ``rule:<name>``).
Several rules may match one study; what the study should look like is resolved from all of them, so that rules
never undo each other in turns:

* every matching ``copy_to`` rule adds its stores (replicas);
* of the matching ``move_to`` rules the *last* in the file wins (list rules from young to old: "to cold after 30
  days", then "to deep archive after 2 years"), and a move drops copies everywhere else except on the stores of
  any ``copy_to`` rule — a move never removes a replica;
* a study promoted back to the ingest store by a read (``promote_on_read``) keeps that copy until a move rule
  matches it again — pair promotion with a ``not_read_days`` condition;
* of the matching ``compress`` rules the last wins (``compress_on_ingest`` counts as a first rule matching every
  study); compression runs before copies and drops, so a move carries the compressed objects
  (``services.compression``);
* a study a ``delete`` rule matches is deleted (the first such rule in the file names the deletion) and neither
  moved nor copied. A delete rule selects every matching study that still exists (``studies_matching``), older
  than ``retention_min_days`` too; the job checks again (``TrashService.check_retention``) and skips a study the
  retention minimum keeps.

Flow: the job worker calls ``schedule`` every ``lifecycle_interval`` seconds (and ``dicomvault lifecycle run``
on demand): the index selects, rule by rule, studies that match and still need work (``studies_needing``), and
each becomes one ``tier-study`` job whose dedupe key is the study, so that at most one job works on a study at a
time across the cluster. The job re-reads the study's facts and copies and resolves again (the plan may be
stale), copies first, then drops (``services.blob_copier``). A crash anywhere leaves at least one verified copy
of every blob; the job runs again after its lease and finishes the work.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from dicomvault.dicom.lossless import codec_syntax
from dicomvault.domain.errors import NotFound
from dicomvault.domain.tiers import CopyTarget, StudyBlob, StudyFacts, matches
from dicomvault.domain.trash import Deletion, RetentionHeld
from dicomvault.ports.index import IndexRepository
from dicomvault.ports.jobs import JobQueue
from dicomvault.services import metrics
from dicomvault.services.blob_copier import BlobCopier
from dicomvault.services.compression import CompressionService, CompressionWork
from dicomvault.services.trash import TrashService
from dicomvault.storage_settings import LifecycleRule

log = logging.getLogger(__name__)

#: The job kind of one study's tier work (payload ``{"study_uid": …, "promote": bool, "rule": name}``).
TIER_STUDY = "tier-study"

#: Studies fetched per index page while planning or scheduling.
PAGE = 500
#: The name of the implicit rule ``compress_on_ingest`` adds, and the delay of its jobs after a study's first store.
COMPRESS_ON_INGEST = "compress on ingest"
INGEST_DELAY = 30.0


def dedupe_key(study_uid: str) -> str:
    """One job per study at a time (queued or running), whoever asks: rules, promotion or an operator."""
    return f"tier:{study_uid}"


@dataclass(frozen=True)
class Placement:
    """Where a study's blobs should be: a copy on each of ``required``; with ``exclusive`` none elsewhere."""

    required: tuple[str, ...]
    exclusive: bool
    rules: tuple[str, ...]

    def wants(self, stores: tuple[str, ...]) -> bool:
        """Whether a blob with copies on ``stores`` needs work."""
        if any(s not in stores for s in self.required):
            return True
        return self.exclusive and any(s not in self.required for s in stores)


@dataclass
class RulePlan:
    """What one rule would do now: how many studies (instances, bytes) still need work."""

    rule: str
    action: str
    studies: int = 0
    instances: int = 0
    bytes: int = 0
    sample: list[str] = field(default_factory=list)


@dataclass
class StudyWork:
    """What applying one study's placement did."""

    study_uid: str
    copied: int = 0
    copied_bytes: int = 0
    dropped: int = 0
    kept_last: int = 0  # drops refused because it was the blob's last recorded copy (never happens by design)
    #: a delete rule matched: the blobs it put in the trash (or removed, without a grace period)
    deleted: int = 0
    #: a delete rule matched but the study was not deleted: why (the retention minimum)
    skipped: str = ""
    #: what a compress rule did
    compression: CompressionWork | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"study_uid": self.study_uid, "copied": self.copied, "copied_bytes": self.copied_bytes,
                "dropped": self.dropped, "kept_last": self.kept_last, "deleted": self.deleted,
                "skipped": self.skipped,
                "compression": self.compression.as_dict() if self.compression is not None else None}


@dataclass(frozen=True)
class StoreCopies:
    """The verified copies one store holds of a study's blobs."""

    store: str
    copies: int = 0
    bytes: int = 0


class TierService:
    def __init__(
        self,
        index: IndexRepository,
        copier: BlobCopier,
        rules: list[LifecycleRule],
        *,
        ingest_store: str,
        jobs: JobQueue | None = None,
        trash: TrashService | None = None,
        compression: CompressionService | None = None,
        compress_on_ingest: str = "",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.index = index
        #: compress rules (None: they are ignored, e.g. an archive built without it)
        self.compression = compression
        #: soft deletes of ``delete`` rules (None: delete rules are ignored, e.g. an archive built without it)
        self.trash = trash
        self.copier = copier
        self.rules = [r for r in rules if r.enabled]
        if compress_on_ingest:  # a rule matching every study, first so that the file's rules override it
            self.rules.insert(0, LifecycleRule.model_validate({
                "name": COMPRESS_ON_INGEST, "when": {"min_study_bytes": 0},
                "action": {"compress": compress_on_ingest}}))
        self.compress_on_ingest = compress_on_ingest
        self._ingest_noted: dict[str, float] = {}
        self._ingest_lock = threading.Lock()
        self.ingest_store = ingest_store
        self.jobs = jobs
        self._now = clock
        self._replica_stores = tuple(dict.fromkeys(
            s for r in self.rules if r.action.copy_to is not None for s in r.action.stores))

    # -- resolving ------------------------------------------------------------------------------------------

    def target_of(self, rule: LifecycleRule) -> CopyTarget:
        target = rule.action.target()
        if target.exclusive:
            return CopyTarget(target.stores, exclusive=True, keep=self._replica_stores)
        return target

    def placement(self, facts: StudyFacts, now: datetime, *, promote: bool = False) -> Placement | None:
        """The placement every matching rule asks for together, or None when no rule matches (and no promotion)."""
        required: list[str] = []
        move: str | None = None
        names: list[str] = []
        for rule in self.rules:
            if rule.action.delete or rule.action.compress or not matches(rule.when.condition(), facts, now):
                continue
            names.append(rule.name)
            if rule.action.move_to is not None:
                move = rule.action.move_to
            else:
                required.extend(rule.action.stores)
        if promote:
            required.append(self.ingest_store)
            if move is None:  # keep what is there: promotion only adds
                names.append("promotion")
        if move is not None:
            required.insert(0, move)
        if not required:
            return None
        keep = (self.ingest_store,) if promote else ()
        return Placement(required=tuple(dict.fromkeys((*required, *keep))), exclusive=move is not None,
                         rules=tuple(names))

    def compression_syntax(self, facts: StudyFacts, now: datetime) -> str | None:
        """The lossless syntax the last matching compress rule asks for (None: no compress rule matches)."""
        syntax: str | None = None
        for rule in self.rules:
            if rule.action.compress and matches(rule.when.condition(), facts, now):
                syntax = codec_syntax(rule.action.compress)
        return syntax

    # -- planning and scheduling ----------------------------------------------------------------------------

    def _candidates(self, rule: LifecycleRule, now: datetime) -> Iterator[tuple[str, int, int]]:
        after = ""
        condition = rule.when.condition()
        if rule.action.compress and self.compression is None:
            return
        if rule.action.delete:
            if self.trash is None:
                return
            if self.trash.retention_min_days > 0:  # never select what the retention minimum keeps
                condition = replace(condition, study_age_days=max(condition.study_age_days or 0,
                                                                  self.trash.retention_min_days))
        while True:
            if rule.action.delete:
                page = self.index.studies_matching(condition, now=now, after=after, limit=PAGE)
            elif rule.action.compress:
                page = self.index.studies_to_compress(condition, now=now, after=after, limit=PAGE)
            else:
                page = self.index.studies_needing(condition, self.target_of(rule), now=now, after=after,
                                                  limit=PAGE)
            for c in page:
                yield c.study_uid, c.instances, c.bytes
            if len(page) < PAGE:
                return
            after = page[-1].study_uid

    def plan(self, *, sample: int = 5) -> list[RulePlan]:
        """Per rule, the studies that match now and still need work (a dry run: nothing changes)."""
        now = self._now()
        plans: list[RulePlan] = []
        for rule in self.rules:
            action = f"move to {rule.action.move_to}" if rule.action.move_to else \
                f"compress ({rule.action.compress})" if rule.action.compress else \
                f"copy to {', '.join(rule.action.stores)}" if not rule.action.delete else \
                f"delete (grace {self._grace(rule):g} days)"
            plan = RulePlan(rule=rule.name, action=action)
            for uid, instances, size in self._candidates(rule, now):
                plan.studies += 1
                plan.instances += instances
                plan.bytes += size
                if len(plan.sample) < sample:
                    plan.sample.append(uid)
            plans.append(plan)
        return plans

    def schedule(self) -> int:
        """Queue a ``tier-study`` job for every study some rule selects (one per study, deduplicated with the
        jobs already queued or running); returns how many studies were selected."""
        if self.jobs is None or not self.rules:
            return 0
        now = self._now()
        seen: set[str] = set()
        for rule in self.rules:
            for uid, _, _ in self._candidates(rule, now):
                if uid in seen:
                    continue
                seen.add(uid)
                self.jobs.enqueue(TIER_STUDY, {"study_uid": uid, "rule": rule.name}, dedupe_key=dedupe_key(uid))
        if seen:
            log.info("lifecycle: %d studies scheduled for tier work", len(seen))
        return len(seen)

    def note_ingested(self, study_uid: str) -> None:
        """With ``compress_on_ingest``: queue the study's tier job ``INGEST_DELAY`` seconds ahead, at most once per
        study and ``INGEST_DELAY`` per process (the job is deduplicated per study anyway), so that a study being
        received is compressed in a few passes, not one per instance. Whatever arrives while its job runs is
        found by the next lifecycle evaluation (``compress_on_ingest`` is a rule matching every study)."""
        if not self.compress_on_ingest or self.jobs is None:
            return
        now = time.monotonic()
        with self._ingest_lock:
            last = self._ingest_noted.get(study_uid)
            if last is not None and now - last < INGEST_DELAY:
                return
            if len(self._ingest_noted) > 10_000:
                self._ingest_noted = {k: t for k, t in self._ingest_noted.items() if now - t < INGEST_DELAY}
            self._ingest_noted[study_uid] = now
        self.jobs.enqueue(TIER_STUDY, {"study_uid": study_uid, "rule": COMPRESS_ON_INGEST},
                          run_at=self._now() + timedelta(seconds=INGEST_DELAY), dedupe_key=dedupe_key(study_uid))

    def request_promotion(self, study_uid: str) -> None:
        """Ask for a copy of the study on the ingest store (a read found it only on a ``promote_on_read`` store)."""
        if self.jobs is not None:
            self.jobs.enqueue(TIER_STUDY, {"study_uid": study_uid, "promote": True}, dedupe_key=dedupe_key(study_uid))

    # -- where a study is (the study page) ----------------------------------------------------------------

    def locations(self, study_uid: str) -> list[StoreCopies]:
        """Per store holding verified copies of the study's blobs (current instances and prior versions): how
        many and their bytes, by store name; one index read (``study_blobs``), bounded by the study's size."""
        found: dict[str, StoreCopies] = {}
        for blob in self.index.study_blobs(study_uid):
            for store in blob.stores:
                was = found.get(store, StoreCopies(store))
                found[store] = StoreCopies(store, was.copies + 1, was.bytes + blob.blob.size)
        return [found[name] for name in sorted(found)]

    def sources(self, study_uid: str) -> list[str]:
        """Who sent the study's instances (``dimse:<calling AE>``, ``stow:<client>``, ``import``, …), sorted."""
        facts = self.index.study_facts(study_uid)
        return sorted(facts.sources) if facts is not None else []

    # -- applying -------------------------------------------------------------------------------------------

    def apply_study(self, study_uid: str, *, promote: bool = False) -> StudyWork:
        """Bring the study's blobs to the placement its rules ask for now: all copies first, then the drops."""
        work = StudyWork(study_uid)
        facts = self.index.study_facts(study_uid)
        if facts is None:
            return work  # deleted meanwhile: nothing to do
        deleting = self._delete_rule(facts, self._now())
        if deleting is not None and self._delete(deleting, work):
            return work
        syntax = self.compression_syntax(facts, self._now()) if self.compression is not None else None
        if syntax is not None and self.compression is not None:
            work.compression = self.compression.compress_study(study_uid, syntax)
        placement = self.placement(facts, self._now(), promote=promote)
        if placement is None:
            return work
        blobs = self.index.study_blobs(study_uid)
        for blob in blobs:
            self._copies(blob, placement, work)
        if placement.exclusive:
            for blob in self.index.study_blobs(study_uid):  # re-read: the copies just recorded
                self._drops(blob, placement, work)
        if work.copied or work.dropped:
            log.info("tiers: study work done (%d copies, %d bytes, %d copies dropped; rules: %s)", work.copied,
                     work.copied_bytes, work.dropped, ", ".join(placement.rules))
        return work

    def _grace(self, rule: LifecycleRule) -> float:
        grace = rule.action.grace_days
        return grace if grace is not None else (self.trash.grace_days if self.trash is not None else 0.0)

    def _delete_rule(self, facts: StudyFacts, now: datetime) -> LifecycleRule | None:
        """The first delete rule matching the study (None: none, or no trash service to delete with)."""
        if self.trash is None:
            return None
        return next((r for r in self.rules if r.action.delete and matches(r.when.condition(), facts, now)), None)

    def _delete(self, rule: LifecycleRule, work: StudyWork) -> bool:
        """Soft-delete the study for ``rule`` (logged as ``rule:<name>``); True when it is gone. False when the
        retention minimum keeps it: the other rules then apply as if the delete rule did not match."""
        assert self.trash is not None
        try:
            outcome = self.trash.delete(work.study_uid, deletion=Deletion(f"rule:{rule.name}", "lifecycle rule"),
                                        grace_days=self._grace(rule))
        except RetentionHeld as exc:
            work.skipped = exc.message
            log.info("tiers: delete rule %r skipped a study: %s", rule.name, exc.message)
            return False
        except NotFound:
            return True  # deleted meanwhile
        work.deleted = outcome.trashed if outcome.soft else (
            outcome.removed.blobs_removed + outcome.removed.blobs_left if outcome.removed else 0)
        log.info("tiers: study deleted by rule %r (%d blobs, %s)", rule.name, work.deleted,
                 "into the trash" if outcome.soft else "at once")
        return True

    def _copies(self, blob: StudyBlob, placement: Placement, work: StudyWork) -> None:
        for store in placement.required:
            if store in blob.stores:
                continue
            try:
                outcome = self.copier.copy(blob.blob, blob.stores, store)
            except NotFound:
                return  # the instance was deleted meanwhile
            if outcome.copied:
                work.copied += 1
                work.copied_bytes += outcome.bytes
                metrics.TIER_COPIED_BYTES.inc(outcome.bytes)
            blob = StudyBlob(blob.sop_uid, blob.blob, (*blob.stores, store))

    def _drops(self, blob: StudyBlob, placement: Placement, work: StudyWork) -> None:
        if any(s not in blob.stores for s in placement.required):
            return  # a required copy is missing (failed above): keep everything
        for store in blob.stores:
            if store in placement.required or store in self._replica_stores:
                continue
            if self.copier.drop(blob.blob, store):
                work.dropped += 1
                metrics.TIER_DROPPED_COPIES.inc()
            else:
                work.kept_last += 1

