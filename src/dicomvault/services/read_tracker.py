"""The last time each study was read, recorded cheaply: reads are noted in memory and written in batches.

Lifecycle rules may ask for studies "not read for N days" (``not_read_days``), so every retrieval of a study —
C-GET, C-MOVE, WADO-RS instances, frames, bulk data, rendered, WADO-URI — counts as a read. A write transaction per
request would turn every frame a viewer fetches into an index write; instead ``note`` adds the Study Instance UID
to a set (a lock and a set insertion), and ``flush`` — the job worker's periodic task, and ``close`` — writes one
``UPDATE`` per batch (``IndexRepository.note_study_reads``). A crash loses at most one interval of read times,
which only delays a rule by that long.

The same flush asks for promotion: a study read while its blobs were only on stores marked ``promote_on_read``
gets a ``tier-study`` job that adds a copy on the ingest store (``services.tiering``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from dicomvault.ports.index import IndexRepository
from dicomvault.services.tiering import TierService

log = logging.getLogger(__name__)

#: Most distinct studies remembered between flushes (beyond it, later reads of new studies wait for the next
#: interval: memory stays bounded whatever a client asks).
MAX_PENDING = 100_000


class ReadTracker:
    def __init__(self, index: IndexRepository, *, tiers: TierService | None = None,
                 promote_from: frozenset[str] = frozenset(),
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._index = index
        #: asked for promotions (set by bootstrap once the tier service exists: it needs retrieval, which needs this)
        self.tiers = tiers
        self._promote_from = promote_from
        self._now = clock
        self._lock = threading.Lock()
        self._pending: set[str] = set()

    def note(self, study_uid: str) -> None:
        """Record that the study was read now (no I/O)."""
        if study_uid in self._pending:  # the common case (every frame of one study): no lock needed to know it
            return
        with self._lock:
            if len(self._pending) < MAX_PENDING:
                self._pending.add(study_uid)

    def flush(self) -> int:
        """Write the read times noted since the last flush; returns how many studies."""
        with self._lock:
            uids, self._pending = sorted(self._pending), set()
        if not uids:
            return 0
        self._index.note_study_reads(uids, self._now())
        if self.tiers is not None and self._promote_from:
            self._promote(uids)
        return len(uids)

    def _promote(self, uids: list[str]) -> None:
        assert self.tiers is not None
        ingest = self.tiers.ingest_store
        for uid in uids:
            blobs = self._index.study_blobs(uid)
            if any(ingest not in b.stores and b.stores and set(b.stores) <= self._promote_from for b in blobs):
                self.tiers.request_promotion(uid)

    def close(self) -> None:
        """Flush what is pending before the archive closes; a failure costs only these read times (logged)."""
        try:
            self.flush()
        except Exception as exc:
            log.warning("last-read times not written at close (%s)", type(exc).__name__)
