"""Moving every stored object from one blob store to another (e.g. filesystem → S3) without breaking reads.

Design (copy, verify, then switch configuration):

1. The index is read once for the set of referenced blobs (``iter_blob_refs``, deduplicated; current and prior
   versions). Keys are content addresses, identical in every store, so *the index never changes*: a migration
   only has to make the target hold every referenced key.
2. Each blob missing from the target is streamed ``source.open → target.put``. The key the target derives must
   equal the recorded SHA-256 and the size must match; the target copy is then re-read and hashed end to end.
   A blob already in the target is accepted after its size matches (with ``deep`` also re-hashed): puts are
   atomic and a key can only hold the bytes it names, so an interrupted run simply resumes.
3. The running archive keeps reading and writing the source throughout. When a pass ends with nothing left to
   copy, the operator stops the archive, runs the command again (it copies only what arrived meanwhile), and
   restarts with ``storage_url`` set to the target. Nothing is deleted from the source unless asked, and only
   once the configuration no longer points at it (``delete_source``), so no read can ever miss; each source copy
   goes only after the target copy has been read back and hashed to the recorded SHA-256 in that same run.

A transport failure (``Unavailable``) aborts the run (resume later); per-blob problems (missing or corrupt
source, a conflicting target object) are collected and reported, and the switch is not advised until none remain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, runtime_checkable

from dicomvault.domain.errors import DicomVaultError, IntegrityFailure, Unavailable
from dicomvault.domain.records import BlobInfo
from dicomvault.ports.blobs import BlobStore
from dicomvault.ports.index import IndexRepository

CHUNK = 1 << 20


class Outcome(str, Enum):
    COPIED = "copied"  # streamed to the target and verified end to end
    PRESENT = "present"  # already in the target (an earlier, interrupted run), verified
    FAILED = "failed"
    DELETED = "deleted"  # source copy removed after the target copy was verified


@dataclass(frozen=True)
class MigrationEvent:
    """One blob handled; ``detail`` explains a failure."""

    outcome: Outcome
    blob: BlobInfo
    detail: str = ""


@dataclass
class MigrationReport:
    total: int = 0
    total_bytes: int = 0
    copied: int = 0
    copied_bytes: int = 0
    present: int = 0
    present_bytes: int = 0
    deleted: int = 0
    failures: list[MigrationEvent] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every referenced blob is verified in the target: the configuration may be switched."""
        return not self.failures and self.copied + self.present == self.total

    def add(self, event: MigrationEvent) -> None:
        if event.outcome is Outcome.COPIED:
            self.copied += 1
            self.copied_bytes += event.blob.size
        elif event.outcome is Outcome.PRESENT:
            self.present += 1
            self.present_bytes += event.blob.size
        elif event.outcome is Outcome.DELETED:
            self.deleted += 1
        else:
            self.failures.append(event)


@dataclass(frozen=True)
class MigrationPlan:
    """What a run would do (``--dry-run``): the blobs missing from the target, and how many are already there."""

    missing: list[BlobInfo]
    present: int
    present_bytes: int

    @property
    def missing_bytes(self) -> int:
        return sum(b.size for b in self.missing)


@runtime_checkable
class SupportsUsage(Protocol):
    """A store that can count its objects and bytes cheaply (an S3 listing carries sizes)."""

    def usage(self) -> tuple[int, int]: ...


def store_usage(store: BlobStore) -> tuple[int, int]:
    """(objects, bytes) held by ``store``: one listing where the store offers it, else a size() per key."""
    if isinstance(store, SupportsUsage):
        return store.usage()
    count = total = 0
    for key in store.iter_keys():
        count += 1
        total += store.size(key)
    return count, total


def sha256_of_blob(store: BlobStore, key: str) -> str:
    digest = hashlib.sha256()
    with store.open(key) as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class StorageMigration:
    """Copies the blobs the index references from ``source`` to ``target`` (see the module docstring)."""

    def __init__(
        self,
        index: IndexRepository,
        source: BlobStore,
        target: BlobStore,
        *,
        workers: int = 4,
        deep_verify: bool = False,
    ) -> None:
        if source.describe() == target.describe():
            raise ValueError("source and target are the same store")
        self.index = index
        self.source = source
        self.target = target
        self.workers = max(1, workers)
        self.deep_verify = deep_verify

    def referenced_blobs(self) -> list[BlobInfo]:
        """Every distinct blob the index references, read in one go so no read transaction stays open."""
        seen: dict[str, BlobInfo] = {}
        for _, blob in self.index.iter_blob_refs():
            seen.setdefault(blob.key, blob)
        return list(seen.values())

    def plan(self, blobs: list[BlobInfo] | None = None) -> MigrationPlan:
        """Dry run: which blobs would be copied. Reads only (HEAD requests / stat calls)."""
        missing: list[BlobInfo] = []
        present = present_bytes = 0
        for blob in blobs if blobs is not None else self.referenced_blobs():
            if self.target.exists(blob.key):
                present += 1
                present_bytes += blob.size
            else:
                missing.append(blob)
        return MigrationPlan(missing, present, present_bytes)

    def run(
        self, blobs: list[BlobInfo] | None = None, on_event: Callable[[MigrationEvent], None] | None = None
    ) -> MigrationReport:
        """Copy and verify every referenced blob. ``on_event`` runs in the calling thread after each blob; an
        exception it raises stops the run (blobs already copied stay copied: the next run resumes)."""
        blobs = self.referenced_blobs() if blobs is None else blobs
        report = MigrationReport(total=len(blobs), total_bytes=sum(b.size for b in blobs))
        for event in self._parallel(blobs, self._migrate_one):
            report.add(event)
            if on_event is not None:
                on_event(event)
        return report

    def delete_source(
        self, blobs: list[BlobInfo] | None = None, on_event: Callable[[MigrationEvent], None] | None = None
    ) -> MigrationReport:
        """Remove the source copy of each referenced blob whose target copy verifies. Call only once the
        archive is configured to read from the target (the CLI checks)."""
        blobs = self.referenced_blobs() if blobs is None else blobs
        report = MigrationReport(total=len(blobs), total_bytes=sum(b.size for b in blobs))
        for event in self._parallel(blobs, self._delete_one):
            report.add(event)
            if on_event is not None:
                on_event(event)
        return report

    # -- per blob ----------------------------------------------------------------------------------------------

    def _parallel(self, blobs: list[BlobInfo], fn: Callable[[BlobInfo], MigrationEvent]) -> Iterator[MigrationEvent]:
        """Run ``fn`` over ``blobs`` with a bounded number in flight, yielding results as they finish."""
        todo = iter(blobs)
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="migrate") as pool:
            running: set[Future[MigrationEvent]] = set()
            try:
                while True:
                    while len(running) < self.workers * 2 and (blob := next(todo, None)) is not None:
                        running.add(pool.submit(fn, blob))
                    if not running:
                        return
                    done, running = wait(running, return_when=FIRST_COMPLETED)
                    for fut in done:
                        yield fut.result()
            finally:
                for fut in running:
                    fut.cancel()

    def _verify_present(self, blob: BlobInfo) -> str | None:
        """None if the target's copy is right, else why not."""
        size = self.target.size(blob.key)
        if size != blob.size:
            return f"target holds {size} bytes under this key, the index records {blob.size}"
        if self.deep_verify and sha256_of_blob(self.target, blob.key) != blob.sha256:
            return "target copy fails its SHA-256"
        return None

    def _migrate_one(self, blob: BlobInfo) -> MigrationEvent:
        try:
            if blob.key != blob.sha256:
                return MigrationEvent(Outcome.FAILED, blob, "recorded key is not the content's SHA-256")
            if self.target.exists(blob.key):
                problem = self._verify_present(blob)
                if problem:
                    return MigrationEvent(Outcome.FAILED, blob, problem)
                return MigrationEvent(Outcome.PRESENT, blob)
            with self.source.open(blob.key) as src:
                put = self.target.put(src)
            if put.info.key != blob.sha256 or put.info.size != blob.size:
                if put.created and put.info.key != blob.key:
                    self.target.delete(put.info.key)  # not a copy of anything the index references
                raise IntegrityFailure(
                    f"source bytes hash to {put.info.key[:12]}… ({put.info.size} bytes), the index records "
                    f"{blob.sha256[:12]}… ({blob.size} bytes)"
                )
            if sha256_of_blob(self.target, blob.key) != blob.sha256:
                self.target.delete(blob.key)  # so a later run copies it again
                raise IntegrityFailure("target copy failed its SHA-256 when read back")
            return MigrationEvent(Outcome.COPIED, blob)
        except Unavailable:
            raise
        except DicomVaultError as exc:
            return MigrationEvent(Outcome.FAILED, blob, f"{type(exc).__name__}: {exc.message}")

    def _delete_one(self, blob: BlobInfo) -> MigrationEvent:
        """Remove the source copy only after the target copy was read back in full and hashed to the recorded
        SHA-256 here, whatever ``deep_verify`` says: the source copy may be the last one that is verified."""
        try:
            if not self.target.exists(blob.key):
                return MigrationEvent(Outcome.FAILED, blob, "not in the target; source copy kept")
            problem = self._verify_present(blob)
            if problem is None and not self.deep_verify and sha256_of_blob(self.target, blob.key) != blob.sha256:
                problem = "target copy fails its SHA-256"
            if problem:
                return MigrationEvent(Outcome.FAILED, blob, problem + "; source copy kept")
            self.source.delete(blob.key)
            return MigrationEvent(Outcome.DELETED, blob)
        except Unavailable:
            raise
        except DicomVaultError as exc:
            return MigrationEvent(Outcome.FAILED, blob, f"{type(exc).__name__}: {exc.message}")
