"""Migration from a legacy PACS (issue #12 item 5): ``dicomvault migrate --from AET``.

What it does, study by study: ask the peer what the study holds (IMAGE level), skip it when every one of those
instances is already in the index, otherwise pull it (C-MOVE, C-GET or WADO-RS: the port decides how), store what
arrives through ``IngestService.ingest`` exactly as the peer sent it (the syntax the peer stored it in), and verify:
the study is ``done`` only when every SOP Instance UID the peer listed is in the index. The state of each
(peer, study) is kept in the index (``ports.migration.MigrationState``), written after each study, so a migration
that is killed continues where it stopped when run again: ``done`` and ``skipped`` studies are not asked for again,
a study interrupted midway is completed: only its missing instances are asked for when the source can (DIMSE: at
IMAGE level with a list of SOP Instance UIDs), else the whole study (what is already stored is a duplicate).

Throttling, so that the legacy PACS stays usable: at most ``max_in_flight`` studies at once (threads), and at most
``bytes_per_second`` received on average; the wait happens before an object's C-STORE is answered (or before the
next WADO-RS part is read), which slows the peer itself.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dicomvault.domain.errors import DicomVaultError
from dicomvault.domain.migration import (
    FINISHED,
    MigrationStudy,
    RemoteInstance,
    RemoteStudy,
    StudyFilter,
    StudyState,
    Via,
)
from dicomvault.domain.peers import RemotePeer
from dicomvault.ports.index import IndexRepository
from dicomvault.ports.migration import LegacySource, MigrationState, PeerUnreachable, Received, StoreReceiver
from dicomvault.services.blob_copier import Throttle
from dicomvault.services.ingest import IngestService
from dicomvault.services.part10 import file_meta_bytes
from dicomvault.services.peers import PeerService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyResult:
    """The outcome of one study in this run."""

    study_uid: str
    state: StudyState
    expected: int | None = None
    received: int = 0
    bytes: int = 0
    reason: str | None = None
    #: finished by an earlier run: nothing was asked of the peer for it this time
    earlier: bool = False


@dataclass
class MigrationReport:
    """What one run did, study by study, with reasons (``dicomvault migrate --report``)."""

    peer: str
    via: str
    started_at: datetime
    finished_at: datetime | None = None
    found: int = 0
    results: list[StudyResult] = field(default_factory=list)
    #: the run could not start (the peer could not be queried); nothing was changed
    error: str | None = None

    def _of(self, state: StudyState, earlier: bool | None = None) -> list[StudyResult]:
        return [r for r in self.results if r.state == state and (earlier is None or r.earlier == earlier)]

    @property
    def migrated(self) -> list[StudyResult]:
        return self._of(StudyState.DONE, earlier=False)

    @property
    def skipped(self) -> list[StudyResult]:
        return self._of(StudyState.SKIPPED, earlier=False)

    @property
    def failed(self) -> list[StudyResult]:
        return self._of(StudyState.FAILED)

    @property
    def earlier(self) -> list[StudyResult]:
        return [r for r in self.results if r.earlier]

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed

    def totals(self) -> dict[str, int]:
        return {"found": self.found, "migrated": len(self.migrated), "skipped": len(self.skipped),
                "failed": len(self.failed), "finished_earlier": len(self.earlier),
                "instances": sum(r.received for r in self.results if not r.earlier),
                "bytes": sum(r.bytes for r in self.results if not r.earlier)}

    def as_json(self) -> dict[str, Any]:
        seconds = ((self.finished_at or datetime.now(UTC)) - self.started_at).total_seconds()
        return {
            "peer": self.peer, "via": self.via, "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "seconds": round(seconds, 3), "error": self.error, "totals": self.totals(),
            "migrated": [{"study": r.study_uid, "instances": r.received, "expected": r.expected, "bytes": r.bytes}
                         for r in self.migrated],
            "skipped": [{"study": r.study_uid, "reason": r.reason} for r in self.skipped],
            "failed": [{"study": r.study_uid, "reason": r.reason, "expected": r.expected, "received": r.received}
                       for r in self.failed],
            "finished_earlier": [{"study": r.study_uid, "state": r.state.value} for r in self.earlier],
        }

    def text(self) -> str:
        t = self.totals()
        lines = [f"migration from {self.peer} via {self.via}: {t['found']} studies found, {t['migrated']} migrated "
                 f"({t['instances']} instances, {t['bytes'] / 1e6:.1f} MB), {t['skipped']} skipped (already present), "
                 f"{t['failed']} failed, {t['finished_earlier']} finished by an earlier run"]
        if self.error:
            lines.append(f"error: {self.error}")
        lines.extend(f"failed {r.study_uid}: {r.reason}" for r in self.failed)
        return "\n".join(lines)


@dataclass(frozen=True)
class Tick:
    """Progress after one study: studies finished / to do in this run, bytes received so far."""

    finished: int
    total: int
    bytes: int
    result: StudyResult | None = None


class _Counters:
    """Instances and bytes stored per study by this run (the sink runs on receiving threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_study: dict[str, list[int]] = {}
        self.bytes = 0

    def add(self, study_uid: str, size: int) -> None:
        with self._lock:
            entry = self._by_study.setdefault(study_uid, [0, 0])
            entry[0] += 1
            entry[1] += size
            self.bytes += size

    def of(self, study_uid: str) -> tuple[int, int]:
        with self._lock:
            count, size = self._by_study.get(study_uid, (0, 0))
            return count, size


class MigrationService:
    """One migration run against one peer with one way of pulling (``source``; ``receiver``: the storage SCP a
    C-MOVE sends to, None when the peer sends to the running archive instead)."""

    def __init__(self, peers: PeerService, ingest: IngestService, index: IndexRepository, state: MigrationState,
                 source: LegacySource, *, via: Via, receiver: StoreReceiver | None = None,
                 bytes_per_second: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.peers, self.ingest, self.index, self.state = peers, ingest, index, state
        self.source, self.receiver, self.via = source, receiver, via
        self.throttle = Throttle(bytes_per_second)
        self._clock = clock
        self._counters = _Counters()
        self._source_name = "migrate"

    # -- receiving ----------------------------------------------------------------------------------------

    def _sink(self, received: Received) -> str | None:
        """Store one received object as it arrived (a bare C-STORE data set gets the archive's File Meta, naming
        the peer); None when stored, else why not (the peer is told it failed)."""
        try:
            if received.part10:
                stream = received.stream
                expect = None
            else:
                meta = file_meta_bytes(sop_class_uid=received.sop_class_uid,
                                       sop_instance_uid=received.sop_instance_uid,
                                       transfer_syntax_uid=received.transfer_syntax, source_aet=received.calling)
                stream = io.BytesIO(meta + received.stream.read())
                expect = (received.sop_class_uid, received.sop_instance_uid)
            result = self.ingest.ingest(stream, source=self._source_name, expect=expect)
        except DicomVaultError as exc:
            log.warning("migration: a received object was not stored: %s", exc.message)
            return exc.message
        self._counters.add(result.study_uid, received.size)
        self.throttle.take(received.size)
        return None

    # -- one study ----------------------------------------------------------------------------------------

    def _present(self, study_uid: str) -> set[str]:
        return {r.sop_uid for r in self.index.instances(study_uid=study_uid)}

    def _study(self, peer: RemotePeer, study: RemoteStudy, row: MigrationStudy | None) -> StudyResult:
        uid = study.study_uid

        def finish(state: StudyState, reason: str | None, expected: int | None, attempted: bool,
                   present: int = 0) -> StudyResult:
            """Record the study's new state: ``received`` in the index is how many of the peer's instances are
            in the archive (``present``), bytes add up over attempts; the result counts what this run stored."""
            received, size = self._counters.of(uid)
            earlier_bytes = row.bytes if row is not None else 0
            self.state.record(peer.aet, uid, state, expected=expected, received=present,
                              bytes_=earlier_bytes + size, error=reason, attempted=attempted)
            return StudyResult(uid, state, expected, received, size, reason)

        try:
            instances = self.source.find_instances(peer, uid)
        except PeerUnreachable as exc:
            return finish(StudyState.FAILED, f"IMAGE-level query failed: {exc}", study.expected, False)
        wanted = {i.sop_uid for i in instances}
        if not wanted:
            return finish(StudyState.FAILED, "the peer lists no instance for this study at IMAGE level",
                          study.expected, False)
        expected = len(wanted)
        missing = wanted - self._present(uid)
        if not missing:
            tried_before = row is not None and row.attempts > 0
            if tried_before:  # an earlier run received it all but was stopped before recording it
                return finish(StudyState.DONE, None, expected, False, expected)
            return finish(StudyState.SKIPPED, "every instance the peer lists is already in the archive", expected,
                          False, expected)
        if len(missing) < expected:  # interrupted midway: ask for the missing instances only
            outcome = self.source.pull(peer, uid, [i for i in instances if i.sop_uid in missing], self._sink,
                                       only=True)
            still = wanted - self._present(uid)
            if still:  # the peer refused or ignored the list: the whole study, as on a first attempt
                log.info("study %s: %d of %d missing instances did not come by IMAGE-level retrieval (%s); asking "
                         "for the whole study", uid, len(still), len(missing), outcome.error or "no error")
                outcome = self.source.pull(peer, uid, _order(instances, still), self._sink)
        else:
            outcome = self.source.pull(peer, uid, _order(instances, missing), self._sink)
        missing = wanted - self._present(uid)
        if missing:
            reason = outcome.error or (f"{outcome.failed} instance(s) refused: {outcome.refused[0]}"
                                       if outcome.refused else "")
            reason = f"{len(missing)} of {expected} instances missing after retrieval" + (
                f" ({reason})" if reason else "")
            return finish(StudyState.FAILED, reason, expected, True, expected - len(missing))
        if outcome.error:
            log.info("study verified complete although the peer reported: %s", outcome.error)
        return finish(StudyState.DONE, None, expected, True, expected)

    # -- the run ------------------------------------------------------------------------------------------

    def run(self, aet: str, flt: StudyFilter, *, max_in_flight: int = 2,
            progress: Callable[[Tick], None] | None = None,
            stop: threading.Event | None = None) -> MigrationReport:
        """Migrate every study of peer ``aet`` that matches ``flt``; the report says what happened to each.
        ``NotFound`` for an unknown peer; a peer that cannot be queried gives a report with ``error`` set (and
        nothing changed). ``stop``: set it to stop handing out new studies (those in flight finish)."""
        peer = self.peers.get(aet)
        self._source_name = f"migrate:{peer.aet}"
        report = MigrationReport(peer=peer.aet, via=self.via.value, started_at=datetime.now(UTC))
        try:
            found = [s for s in self.source.find_studies(peer, flt) if flt.matches(s)]
        except PeerUnreachable as exc:
            report.error = f"STUDY-level query failed: {exc}"
            report.finished_at = datetime.now(UTC)
            return report
        for uid in sorted(set(flt.study_uids) - {s.study_uid for s in found}):
            self.state.record(peer.aet, uid, StudyState.FAILED, expected=None, received=0, bytes_=0,
                              error="the peer does not have this study", attempted=False)
            report.results.append(StudyResult(uid, StudyState.FAILED, reason="the peer does not have this study"))
        found.sort(key=lambda s: (s.study_date, s.study_uid))
        report.found = len(found)
        self.state.enqueue(peer.aet, found)
        rows = self.state.get(peer.aet, [s.study_uid for s in found])
        todo = []
        for s in found:
            row = rows.get(s.study_uid)
            if row is not None and row.state in FINISHED:
                report.results.append(StudyResult(s.study_uid, row.state, row.expected, row.received, row.bytes,
                                                  row.last_error, earlier=True))
            else:
                todo.append(s)
        log.info("migration from %s via %s: %d studies found, %d to do", peer.aet, self.via.value, len(found),
                 len(todo))
        if progress is not None:
            progress(Tick(0, len(todo), 0))
        if todo and self.receiver is not None:
            self.receiver.start(self._sink)
        try:
            self._run_studies(peer, todo, rows, report, max_in_flight, progress, stop)
        finally:
            if todo and self.receiver is not None:
                self.receiver.stop()
        report.finished_at = datetime.now(UTC)
        return report

    def _run_studies(self, peer: RemotePeer, todo: Sequence[RemoteStudy], rows: dict[str, MigrationStudy],
                     report: MigrationReport, max_in_flight: int, progress: Callable[[Tick], None] | None,
                     stop: threading.Event | None) -> None:
        finished = 0
        lock = threading.Lock()
        pending = iter(todo)

        def one(study: RemoteStudy) -> StudyResult:
            try:
                return self._study(peer, study, rows.get(study.study_uid))
            except DicomVaultError as exc:  # the index failed: the study stays as it was, the next run retries
                return StudyResult(study.study_uid, StudyState.FAILED, study.expected, reason=exc.message)

        with ThreadPoolExecutor(max_workers=max(1, max_in_flight), thread_name_prefix="migrate") as pool:
            running = set()
            for study in pending:  # keep at most max_in_flight submitted: a stop leaves the rest queued
                if stop is not None and stop.is_set():
                    break
                running.add(pool.submit(one, study))
                if len(running) < max(1, max_in_flight):
                    continue
                done = next(as_completed(running))
                running.discard(done)
                finished = self._collect(done.result(), report, lock, finished, len(todo), progress)
            for future in as_completed(running):
                finished = self._collect(future.result(), report, lock, finished, len(todo), progress)

    def _collect(self, result: StudyResult, report: MigrationReport, lock: threading.Lock, finished: int,
                 total: int, progress: Callable[[Tick], None] | None) -> int:
        with lock:
            report.results.append(result)
        if result.state == StudyState.FAILED:
            log.warning("study migration failed: %s", result.reason)
        if progress is not None:
            progress(Tick(finished + 1, total, self._counters.bytes, result))
        return finished + 1


def _order(instances: Sequence[RemoteInstance], missing: set[str]) -> list[RemoteInstance]:
    """The instances to ask for (all of the study's SOP classes count for C-GET's presentation contexts)."""
    return [i for i in instances if i.sop_uid in missing] + [i for i in instances if i.sop_uid not in missing]


__all__ = ["MigrationReport", "MigrationService", "StudyResult", "Tick"]
