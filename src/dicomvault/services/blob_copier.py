"""Copying a blob between named stores with proof, and dropping a copy without ever losing the last one.

Every background change of where bytes live — a tier move, replication, promotion, the repair of a damaged copy —
is made of two steps, and only these:

* **add** (``copy``): read a verified copy, put it on the target store (throttled), read it back from the target
  and compare its SHA-256 with the index's, then record the copy. The record is written by
  ``IndexRepository.add_blob_copy`` while the key's copy rows are locked and only after the bytes are seen on the
  target again under that lock, so a drop of the same copy running concurrently either happened before (the bytes
  are gone: the copy is put again) or waits and removes the fresh record together with the bytes.
* **drop**: ``IndexRepository.drop_blob_copy`` locks the key's copy rows, refuses when no other copy would remain,
  deletes the bytes on that store and the record in the same transaction.

A move is add on the target, then drop elsewhere, so a crash (kill -9) at any point leaves the old copy, the new
one, or both, each recorded only if it is there; a crash inside a drop after the bytes went but before the commit
leaves a record without bytes *next to another verified copy*, which fixity finds and repairs.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

from dicomvault.domain.errors import IntegrityFailure, NotFound, NotRestored
from dicomvault.domain.records import BlobInfo
from dicomvault.ports.index import IndexRepository
from dicomvault.services.blob_tiers import TieredBlobs

log = logging.getLogger(__name__)

CHUNK = 1 << 20


class Throttle:
    """A token bucket shared by the background copies of one process: at most ``bytes_per_second`` on average
    (bursts of one second), so that clinical traffic keeps the disk and the network. 0 disables it."""

    def __init__(self, bytes_per_second: int, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = bytes_per_second
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._tokens = float(bytes_per_second)
        self._last = clock()

    def take(self, n: int) -> None:
        if self.rate <= 0 or n <= 0:
            return
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.rate), self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= n
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)


class _Metered:
    """A readable stream that takes throttle tokens and hashes what passes through it."""

    def __init__(self, source: BinaryIO, throttle: Throttle) -> None:
        self._source, self._throttle = source, throttle
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._source.read(CHUNK if n is None or n < 0 else min(n, CHUNK))
        self._throttle.take(len(data))
        self.digest.update(data)
        self.size += len(data)
        return data

    def readable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:  # what a store's put may also ask (readinto, close …)
        return getattr(self._source, name)


@dataclass(frozen=True)
class CopyOutcome:
    copied: bool  # bytes were written to the target (False: a verified copy was already there)
    bytes: int
    source: str | None = None


class BlobCopier:
    def __init__(self, index: IndexRepository, tiers: TieredBlobs, throttle: Throttle,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.index = index
        self.tiers = tiers
        self.throttle = throttle
        #: the time recorded with a verified copy
        self.now = clock

    def copy(self, blob: BlobInfo, have: Sequence[str], target: str) -> CopyOutcome:
        """Make ``target`` hold a verified, recorded copy of ``blob``, reading from the first good copy among
        ``have`` (in read order). Raises ``IntegrityFailure`` when no copy can be read intact, ``NotRestored``
        when the only copies must be recalled first, ``NotFound`` when the blob is no longer referenced."""
        if target in have and self._verified(blob, target, throttled=False):
            return CopyOutcome(copied=False, bytes=0)
        sources = [name for name in self.tiers.names if name in have and name != target]
        problems: list[str] = []
        archived: NotRestored | None = None
        for source in sources:
            try:
                self._put_from(blob, source, target)
            except NotRestored as exc:
                archived = archived or exc
                continue
            except (NotFound, IntegrityFailure) as exc:
                problems.append(f"{source}: {exc}")
                log.warning("tiers: copy of blob %s on store %s is unusable (%s)", blob.key, source,
                            type(exc).__name__)
                continue
            if not self._verified(blob, target, throttled=True):
                raise IntegrityFailure(f"blob {blob.key}: the copy written to store {target!r} reads back wrong")
            if not self.index.add_blob_copy(blob.key, target, verified_at=self.now(),
                                            present=lambda: self.tiers.store(target).exists(blob.key)):
                raise NotFound(f"blob {blob.key} is no longer referenced or vanished from {target!r} meanwhile")
            return CopyOutcome(copied=True, bytes=blob.size, source=source)
        if archived is not None and not problems:
            raise archived
        raise IntegrityFailure(f"blob {blob.key}: no intact copy to copy from ({'; '.join(problems) or 'none'})")

    def drop(self, blob: BlobInfo, store: str) -> bool:
        """Remove the copy on ``store`` unless it is the last one; True if it was removed."""
        target = self.tiers.store(store)
        return self.index.drop_blob_copy(blob.key, store, delete=lambda: target.delete(blob.key))

    def check(self, blob: BlobInfo, store: str) -> str | None:
        """Re-read the copy on ``store`` (throttled) and return what is wrong with it, or None when it is intact."""
        try:
            with self.tiers.store(store).open(blob.key) as f:
                metered = _Metered(f, self.throttle)
                while metered.read(CHUNK):
                    pass
        except NotFound:
            return "missing"
        except NotRestored:
            return None  # archived: readable only after a recall; the store's own checksums vouch for it
        except OSError as exc:
            return f"unreadable ({type(exc).__name__})"
        if metered.size != blob.size:
            return f"size {metered.size} != {blob.size}"
        if metered.digest.hexdigest() != blob.sha256:
            return "SHA-256 mismatch"
        return None

    def _put_from(self, blob: BlobInfo, source: str, target: str) -> None:
        with self.tiers.store(source).open(blob.key) as f:
            metered = _Metered(f, self.throttle)
            put = self.tiers.store(target).put(metered)  # type: ignore[arg-type]
        if put.info.key != blob.key or metered.digest.hexdigest() != blob.sha256 or metered.size != blob.size:
            # What was written lies under its own content key; it is left for the orphan sweep, which removes
            # it through the claim protocol (it could, however unlikely, be another object's bytes).
            raise IntegrityFailure(f"the copy on {source!r} does not match its SHA-256")

    def _verified(self, blob: BlobInfo, store: str, *, throttled: bool) -> bool:
        if not throttled:
            try:
                return self.tiers.store(store).size(blob.key) == blob.size
            except (NotFound, NotRestored):
                return False
        return self.check(blob, store) is None
