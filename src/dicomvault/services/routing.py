"""Routing (issue #12 item 3): forward what the archive stores to peers, as durable jobs, at most once per
destination.

The path of an instance:

1. **Selection, in memory** (``on_stored``, chained to ``IngestService.after_store`` by ``bootstrap``): the routes'
   filters run on the header ingest already parsed; selected instances are appended to a list and a drain thread
   is woken. Nothing is written on the C-STORE's path: the hot path costs a few dictionary lookups.
2. **Drain** (``flush``, the drain thread, a batch of what accumulated, gathered for ``GATHER`` seconds after the
   first selection): one transaction writes a row per (destination, instance) in ``route_deliveries``
   (``queued``; ``waiting`` for routes on stable studies, whose study's wait in ``route_stable`` is pushed back)
   and one ``route-deliver`` job per (destination, study) (deduplicated per destination and study). One
   transaction, so one fsync on SQLite: a sequential sender's stores and the routing's writes share the single
   writer, and each commit the drain makes is one the stores wait behind. Under load a batch holds many
   instances, so routing adds far fewer transactions than stores.
3. **Stable studies**: the routing scan (a periodic task of every node's job worker, ``scan``) releases studies
   whose wait has passed (their ``waiting`` rows become ``queued``) and enqueues their jobs. The wait lives in the
   index, so a restart or another node's scan loses nothing.
4. **Delivery** (``deliver``, the ``route-deliver`` job): the job *claims* the study's queued rows for the
   destination (``sending``, tagged with the job: two jobs never send the same row), sends them on one
   association (C-STORE) or in one STOW-RS request, records each outcome, and claims again until nothing is left.
   A failure puts the rows back to ``queued`` with the error and raises, so the worker retries the job with
   exponential backoff (``DELIVERY_MAX_ATTEMPTS``); the last attempt marks them ``failed`` (``dicomvault routes
   retry`` queues them again). Rows ``sent`` or ``confirmed`` are never claimed again: a re-sent object, another
   route selecting the same instance, a job run twice after a crash — none sends it again to that destination.
5. **Commitment** (routes with ``commitment = true``): after the C-STOREs, an N-ACTION asks the destination to
   commit to the instances sent (rows ``sent`` under its Transaction UID); the N-EVENT-REPORT — on the same
   association, or on one the destination opens to the archive's storage commitment SCP — makes them
   ``confirmed`` (or ``failed`` with the reason). Without commitment a successful C-STORE confirms.

6. **Reconciliation** (``reconcile``, from the routing scan at start-up, then about once a minute): instances
   selected in memory but not yet drained when their process died (kill -9, node loss; the sender was answered,
   so it will not send them again) would never be routed. The reconciliation reads back the instances stored in
   the last ``route_reconcile_window`` seconds (keyset-paged by instance id, from a mark kept in memory: each
   instance is read about once per node), runs the same filters on what ``on_stored`` saw (the cached DICOM JSON,
   the SOP class and source columns), and records those that have no row for the destination. It looks only at
   instances stored ``RECONCILE_SETTLE`` seconds ago or more, so it does not race a live node's drain (a race
   would be harmless: recording is idempotent).

Other crash windows: rows whose job died mid-send (``sending`` for more than ``STALE_SENDING``) or whose job was
lost are found by the scan's sweep (``STALE_QUEUED``) and enqueued again.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from pydicom.uid import generate_uid

from dicomvault.domain.errors import ConfigurationError, DicomVaultError, NotFound, Unavailable
from dicomvault.domain.peers import RemotePeer
from dicomvault.domain.records import InstanceRecord
from dicomvault.domain.routing import (
    CommitmentResult,
    Delivery,
    DeliveryState,
    DestinationStatus,
    Route,
    Selected,
    first_value,
)
from dicomvault.ports.forwarding import Outbound, RemoteStore, RemoteStow, SendReport
from dicomvault.ports.jobs import JobQueue
from dicomvault.ports.route_deliveries import DeliveryJob, DeliveryLedger, Outcome, StoredInstance
from dicomvault.services.coercion import Coercion
from dicomvault.services.peers import PeerService
from dicomvault.services.retrieve import RetrieveService

log = logging.getLogger(__name__)

#: The job kind that sends one study's queued instances to one destination.
ROUTE_DELIVER = "route-deliver"
#: Attempts of a delivery job before its instances are marked failed: with the worker's backoff (5 s doubling,
#: capped at an hour) about 11 hours of a destination being down.
DELIVERY_MAX_ATTEMPTS = 20
#: Instances claimed (and sent on one association) at a time.
BATCH = 200
#: Seconds a queued row may wait before the scan enqueues its job again (its enqueue was lost in a crash).
STALE_QUEUED = 60.0
#: Seconds a row may stay ``sending`` before the scan takes it back (its job's worker died).
STALE_SENDING = 900.0
#: Seconds between two sweeps of stale rows (the stable-study release runs on every scan).
SWEEP_INTERVAL = 60.0
#: Seconds a commitment request waits for the N-EVENT-REPORT on its own association before releasing it (Orthanc
#: reports on an association of its own, received by the DIMSE server, so a long wait only holds the job).
COMMITMENT_WAIT = 3.0
#: Selected instances kept in memory before ``on_stored`` drains them itself (back-pressure on a stalled index).
MAX_PENDING = 50_000
#: Seconds the drain thread waits after being woken before it records, so that a sequential sender's next stores
#: join the batch (each batch is one fsync'd transaction competing with the stores for SQLite's single writer).
GATHER = 0.02
#: Default seconds of stored instances the reconciliation reads back at start-up (``route_reconcile_window``).
RECONCILE_WINDOW = 3600.0
#: Seconds after its store before the reconciliation looks at an instance: by then the process that stored it
#: has recorded its selection (in milliseconds), unless it died.
RECONCILE_SETTLE = 10.0
#: Seconds between reconciliations once caught up (sooner when instances it could not look at yet settle first).
RECONCILE_INTERVAL = 60.0
#: Instances read back per page, and pages per reconciliation (the rest on the next scan, a second later).
RECONCILE_PAGE = 500
RECONCILE_PAGES = 20
STUDY_UID = "0020000D"
UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")


class RetryLater(Exception):
    """Some instances were refused by the destination: the job is retried (with backoff) for those."""


@dataclass(frozen=True)
class ConfiguredRoute:
    """A route and its position among ``[[route]]`` entries (for messages naming the line at fault)."""

    position: int
    route: Route


class _Files:
    """``ports.forwarding.OutboundFiles`` over stored records: as stored when the peer accepts it, else converted;
    then, for instances whose route names coercion rules (``coerce``: SOP Instance UID → rule names), coerced."""

    def __init__(self, retrieve: RetrieveService, records: dict[str, InstanceRecord], preferred: Sequence[str],
                 coerce: dict[str, tuple[str, ...]] | None = None, coercion: Coercion | None = None,
                 holder: str = "") -> None:
        self.retrieve, self.records, self.preferred = retrieve, records, list(preferred)
        self.coerce, self.coercion, self.holder = coerce or {}, coercion, holder

    def choose(self, item: Outbound, accepted: set[str]) -> str | None:
        stored = item.transfer_syntax_uid
        for ts in (*self.preferred, stored, *UNCOMPRESSED, *sorted(accepted)):
            if ts in accepted and (ts == stored or self.retrieve.can_transcode(stored, ts)):
                return ts
        return None

    @contextlib.contextmanager
    def file(self, item: Outbound, transfer_syntax: str) -> Iterator[Path]:
        record = self.records[item.sop_uid]
        names = self.coerce.get(item.sop_uid, ())
        with contextlib.ExitStack() as stack:
            if transfer_syntax == record.transfer_syntax_uid:
                path = stack.enter_context(self.retrieve.as_file(record))
            else:
                path = stack.enter_context(self.retrieve.transcoded_file(record, transfer_syntax))
            if names and self.coercion is not None:
                path = stack.enter_context(self.coercion.coerced_copy(path, names, holder=self.holder,
                                                                      limits=self.retrieve.limits))
            yield path


class RoutingService:
    def __init__(self, routes: Sequence[ConfiguredRoute], ledger: DeliveryLedger, jobs: JobQueue | None,
                 peers: PeerService, retrieve: RetrieveService, *, dimse: RemoteStore | None = None,
                 dicomweb: RemoteStow | None = None, where: Callable[[int, str], str] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 commitment_wait: float = COMMITMENT_WAIT, reconcile_window: float = RECONCILE_WINDOW,
                 reconcile_settle: float = RECONCILE_SETTLE, gather: float = GATHER,
                 coercion: Coercion | None = None, holder: str = "") -> None:
        self.configured = list(routes)
        self.routes = [c.route for c in self.configured]
        #: the ``[[coercion]]`` rules routes may name (``coerce``), and the archive's AE title they record
        self.coercion = coercion
        self.holder = holder
        self._coerce_by_route = {r.name: r.coerce for r in self.routes if r.coerce}
        self.ledger = ledger
        self.jobs = jobs
        self.peers = peers
        self.retrieve = retrieve
        self.dimse = dimse
        self.dicomweb = dicomweb
        self.commitment_wait = commitment_wait
        self._where = where or (lambda position, key: f"[[route]] rule {position + 1}, {key}")
        self._clock = clock
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._pending: list[Selected] = []
        self._wake = threading.Event()
        self._closed = False
        self._drainer: threading.Thread | None = None
        self._last_sweep = 0.0
        self.reconcile_window = reconcile_window
        self.reconcile_settle = reconcile_settle
        self.gather = gather
        #: the highest instance id the reconciliation has looked at (None: not yet placed in the window)
        self._mark: int | None = None
        self._reconcile_due = 0.0  # time.monotonic() of the next reconciliation

    @property
    def active(self) -> bool:
        return bool(self.routes)

    # -- start-up ------------------------------------------------------------------------------------------

    def check_destinations(self) -> None:
        """Refuse to start (``ConfigurationError``, one line per fault naming the configuration line) when a route
        sends to an unknown peer, or by a protocol the peer has no address for."""
        problems = []
        for c in self.configured:
            route, where = c.route, self._where(c.position, "to")
            try:
                peer = self.peers.get(route.destination)
            except NotFound:
                known = ", ".join(p.aet for p in self.peers.all()) or "none"
                problems.append(f"{where}: route {route.name!r} sends to unknown peer {route.destination!r} "
                                f"(known peers: {known}; dicomvault peers add)")
                continue
            if route.via == "dimse" and not peer.reachable:
                problems.append(f"{where}: route {route.name!r}: peer {route.destination!r} has no host and port")
            if route.via == "dicomweb" and not peer.dicomweb_url:
                problems.append(f"{where}: route {route.name!r}: peer {route.destination!r} has no DICOMweb URL")
        rule_names = self.coercion.names() if self.coercion is not None else set()
        for c in self.configured:
            unknown = [n for n in c.route.coerce if n not in rule_names]
            if unknown:
                problems.append(f"{self._where(c.position, 'coerce')}: route {c.route.name!r} names unknown "
                                f"coercion rules {', '.join(map(repr, unknown))} (known: "
                                f"{', '.join(map(repr, sorted(rule_names))) or 'none'}; [[coercion]] name = …)")
        if problems:
            raise ConfigurationError("\n".join(problems))

    # -- 1. selection (the C-STORE's thread) ---------------------------------------------------------------

    def on_stored(self, sop_class: str, sop_uid: str, data: dict[str, Any], source: str) -> None:
        """``IngestService.after_store``: note the instance for every route that selects it; never raises."""
        if not self.routes:
            return
        try:
            study = first_value(data, STUDY_UID) or ""
            selected = [Selected(r, study, sop_class, sop_uid) for r in self.routes
                        if r.filter.matches(sop_class, data, source)]
        except Exception:  # a filter must never fail a store
            log.exception("routing: selection failed for a stored instance")
            return
        if not selected or not study:
            return
        with self._lock:
            self._pending.extend(selected)
            backlog = len(self._pending)
            if self._drainer is None and not self._closed:
                self._drainer = threading.Thread(target=self._drain, name="dicomvault-routing", daemon=True)
                self._drainer.start()
        if backlog >= MAX_PENDING:
            with contextlib.suppress(Exception):
                self.flush()  # the index is slow: the stores that caused the backlog wait for it
        self._wake.set()

    # -- 2. drain ------------------------------------------------------------------------------------------

    def _drain(self) -> None:
        while True:
            self._wake.wait()
            if self.gather > 0 and not self._closed:
                time.sleep(self.gather)  # let the sender's next stores join this batch
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:
                log.warning("routing: cannot record selected instances (%s); trying again in 1 s", type(exc).__name__)
                log.debug("routing drain failure", exc_info=True)
                time.sleep(1.0)
                self._wake.set()
            with self._lock:
                if self._closed and not self._pending:
                    return

    def flush(self) -> int:
        """Record what was selected since the last flush and enqueue the delivery jobs; returns how many
        (destination, instance) pairs were recorded."""
        with self._flushing:  # one flush at a time: on return, whatever was noted before the call is recorded
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return 0
            try:
                return self._record(batch)
            except BaseException:
                with self._lock:
                    self._pending[:0] = batch  # kept for the next attempt, in order
                raise

    def _record(self, batch: Sequence[Selected]) -> int:
        """One transaction: the batch's rows, the stable waits they push back, and the jobs that will send them."""
        now = self._clock()
        deliveries: list[Delivery] = []
        stable: list[tuple[str, str, datetime]] = []
        due: dict[tuple[str, str], None] = {}
        for s in batch:
            r = s.route
            state = DeliveryState.QUEUED if r.on == "stored" else DeliveryState.WAITING
            deliveries.append(Delivery(destination=r.destination, sop_uid=s.sop_uid, study_uid=s.study_uid,
                                       sop_class_uid=s.sop_class_uid, route=r.name, via=r.via,
                                       transfer_syntax=r.transfer_syntax, commitment=r.commitment, state=state))
            if r.on == "stable":
                stable.append((r.destination, s.study_uid, now + timedelta(seconds=r.stable_seconds)))
            else:
                due[(r.destination, s.study_uid)] = None
        jobs = [self._job(destination, study) for destination, study in due] if self.jobs is not None else []
        self.ledger.record(deliveries, stable, jobs)
        return len(deliveries)

    @staticmethod
    def _job(destination: str, study: str) -> DeliveryJob:
        return DeliveryJob(ROUTE_DELIVER, {"destination": destination, "study_uid": study},
                           dedupe_key=f"route:{destination}:{study}"[:200], max_attempts=DELIVERY_MAX_ATTEMPTS)

    def _enqueue(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Jobs for rows already recorded (released, swept, retried), through the ledger: the dedupe rule and its
        follow-up for a running job are decided in one transaction (a job seen running, then found done by a
        second look, used to leave the rows to the sweep)."""
        if self.jobs is None or not pairs:
            return
        self.ledger.record((), (), [self._job(destination, study) for destination, study in pairs])

    # -- 3. the routing scan (job worker, periodic) --------------------------------------------------------

    def scan(self) -> dict[str, int]:
        """Release stable studies, (every ``SWEEP_INTERVAL``) re-enqueue stale rows and (when due) reconcile;
        idempotent, safe on every node at once."""
        self.flush()
        reconciled = self.reconcile() if time.monotonic() >= self._reconcile_due else 0
        now = self._clock()
        released = self.ledger.release_stable(now)
        self._enqueue(released)
        swept: list[tuple[str, str]] = []
        if time.monotonic() - self._last_sweep >= SWEEP_INTERVAL:
            self._last_sweep = time.monotonic()
            swept = self.ledger.stale(now - timedelta(seconds=STALE_QUEUED), now - timedelta(seconds=STALE_SENDING))
            self._enqueue(swept)
        if released or swept:
            log.info("routing scan: %d stable studies released, %d stale queued studies enqueued again",
                     len(released), len(swept))
        return {"released": len(released), "swept": len(swept), "reconciled": reconciled}

    # -- 6. reconciliation (the routing scan, when due) ----------------------------------------------------

    def reconcile(self) -> int:
        """Record the deliveries of instances stored (in the window) that routes select and that have no row for
        the destination: selections a process lost when it died before recording them. Reads at most
        ``RECONCILE_PAGES`` pages; schedules the next run (next scan when behind, when the first instance not yet
        looked at settles, at the latest ``RECONCILE_INTERVAL``). Returns how many deliveries it recorded."""
        if not self.routes or self.reconcile_window <= 0:
            self._reconcile_due = float("inf")
            return 0
        now = self._clock()
        if self._mark is None:
            self._mark = self.ledger.last_stored_before(now - timedelta(seconds=self.reconcile_window))
        settled = now - timedelta(seconds=self.reconcile_settle)
        recorded, wait = 0, RECONCILE_INTERVAL
        for _ in range(RECONCILE_PAGES):
            page = self.ledger.stored_after(self._mark, RECONCILE_PAGE)
            ready = list(itertools.takewhile(lambda i: i.stored_at <= settled, page))
            if ready:
                recorded += self._reconcile_page(ready)
                self._mark = ready[-1].id
            if len(ready) < len(page):  # the rest is too recent: look again once it settles
                wait = min(wait, max((page[len(ready)].stored_at - settled).total_seconds(), 0.0) + 0.1)
                break
            if len(page) < RECONCILE_PAGE:
                break
        else:
            wait = 0.0  # behind: go on at the next scan
        self._reconcile_due = time.monotonic() + wait
        if recorded:
            log.warning("routing: %d deliveries of instances stored but never recorded (their process stopped "
                        "first) are recorded now", recorded)
        return recorded

    def _reconcile_page(self, stored: Sequence[StoredInstance]) -> int:
        selected: list[Selected] = []
        for inst in stored:
            try:
                data = orjson.loads(inst.header_json)
                study = first_value(data, STUDY_UID)
                if study:
                    selected.extend(Selected(r, study, inst.sop_class_uid, inst.sop_uid) for r in self.routes
                                    if r.filter.matches(inst.sop_class_uid, data, inst.source))
            except Exception:  # one unreadable header must not stop the reconciliation of the others
                log.warning("routing: reconciliation skipped instance %d (unreadable cached header)", inst.id)
                log.debug("reconciliation failure", exc_info=True)
        if not selected:
            return 0
        have = self.ledger.recorded(sorted({(s.route.destination, s.sop_uid) for s in selected}))
        missing = [s for s in selected if (s.route.destination, s.sop_uid) not in have]
        return self._record(missing) if missing else 0

    # -- 4. delivery (the route-deliver job) ---------------------------------------------------------------

    def deliver(self, destination: str, study_uid: str, *, job_id: int, attempt: int = 1,
                max_attempts: int = DELIVERY_MAX_ATTEMPTS) -> dict[str, int]:
        """Send the study's queued instances to ``destination`` until none is left. Raises (after putting the
        rows back) when the destination cannot be reached or refused some: the job is retried with backoff."""
        claimer = f"job:{job_id}"
        last = attempt >= max_attempts
        totals = {"sent": 0, "confirmed": 0, "failed": 0, "retry": 0}
        try:
            peer = self.peers.get(destination)
        except NotFound:
            peer = None
        while rows := self.ledger.claim(destination, study_uid, claimer, BATCH):
            if peer is None:
                self._settle(destination, rows, DeliveryState.FAILED, f"no peer {destination!r} is known any more")
                totals["failed"] += len(rows)
                continue
            try:
                outcomes = self._send(peer, rows, last=last)
            except Exception as exc:
                reason = exc.message if isinstance(exc, DicomVaultError) else f"{type(exc).__name__}: {exc}"
                self._settle(destination, rows, DeliveryState.FAILED if last else DeliveryState.QUEUED, reason)
                log.warning("routing: delivery to %s failed (%s)%s", destination, reason,
                            "; instances marked failed" if last else "; retried later")
                raise
            self.ledger.settle(destination, outcomes, self._clock())
            for o in outcomes:
                key = {DeliveryState.SENT: "sent", DeliveryState.CONFIRMED: "confirmed",
                       DeliveryState.FAILED: "failed"}.get(o.state, "retry")
                totals[key] += 1
            if totals["retry"]:
                break  # refused ones wait for the job's next attempt (backoff), not for this loop
            self._commit(peer, rows, outcomes)
        if totals["retry"]:
            raise RetryLater(f"{totals['retry']} instances refused by {destination}; retried later")
        return totals

    def _settle(self, destination: str, rows: Sequence[Delivery], state: DeliveryState, reason: str) -> None:
        self.ledger.settle(destination, [Outcome(d.sop_uid, state, reason) for d in rows], self._clock())

    def _send(self, peer: Any, rows: Sequence[Delivery], *, last: bool) -> list[Outcome]:
        records = {r.sop_uid: r for r in self.retrieve.locate(sop_uids=[d.sop_uid for d in rows])}
        outcomes = [Outcome(d.sop_uid, DeliveryState.FAILED, "no longer stored") for d in rows
                    if d.sop_uid not in records]
        present = [d for d in rows if d.sop_uid in records]
        if not present:
            return outcomes
        first = present[0]
        preferred = [*([first.transfer_syntax] if first.transfer_syntax else []), *peer.transfer_syntaxes]
        coerce = {d.sop_uid: self._coerce_by_route[d.route] for d in present if d.route in self._coerce_by_route}
        files = _Files(self.retrieve, records, preferred, coerce, self.coercion, self.holder)
        items = [Outbound(records[d.sop_uid].sop_class_uid, d.sop_uid, records[d.sop_uid].transfer_syntax_uid)
                 for d in present]
        by_uid = {d.sop_uid: d for d in present}
        if first.via == "dicomweb":
            if self.dicomweb is None or not peer.dicomweb_url:
                raise Unavailable(f"peer {peer.aet} has no DICOMweb URL")
            report = self.dicomweb.stow(peer, items, files)
        else:
            if self.dimse is None or not peer.reachable:
                raise Unavailable(f"peer {peer.aet} has no host and port")
            report = self.dimse.send(peer, items, files, preferred=preferred)
        transaction = generate_uid() if any(d.commitment for d in present) else None
        for uid in report.sent:
            committed = by_uid[uid].commitment
            outcomes.append(Outcome(uid, DeliveryState.SENT if committed else DeliveryState.CONFIRMED,
                                    commitment_uid=transaction if committed else None))
        for uid, reason in report.failed.items():
            outcomes.append(Outcome(uid, DeliveryState.FAILED if last else DeliveryState.QUEUED, reason))
        for d in present:  # neither sent nor failed: the association ended before its turn
            if d.sop_uid not in report.sent and d.sop_uid not in report.failed:
                outcomes.append(Outcome(d.sop_uid, DeliveryState.FAILED if last else DeliveryState.QUEUED,
                                        "not sent: the association ended early"))
        return outcomes

    # -- 5. storage commitment (SCU side) ------------------------------------------------------------------

    def _commit(self, peer: Any, rows: Sequence[Delivery], outcomes: Sequence[Outcome]) -> None:
        sent = [o for o in outcomes if o.state == DeliveryState.SENT and o.commitment_uid]
        if not sent or self.dimse is None:
            return
        classes = {d.sop_uid: d.sop_class_uid for d in rows}
        transaction = sent[0].commitment_uid or ""
        try:
            result = self.dimse.request_commitment(peer, [(classes[o.sop_uid], o.sop_uid) for o in sent],
                                                   transaction, wait=self.commitment_wait)
        except DicomVaultError as exc:  # the instances were sent: they stay "sent", unconfirmed
            log.warning("routing: storage commitment request to %s failed: %s", peer.aet, exc.message)
            return
        if result is not None:
            self.commitment_report(result)

    def commitment_report(self, result: CommitmentResult) -> int:
        """An N-EVENT-REPORT from a destination (on the request's association, or received by the archive's
        storage commitment SCP): confirms or fails the rows sent under its Transaction UID."""
        failed = {uid: f"storage commitment refused (failure reason 0x{code:04X})"
                  for uid, code in result.failed.items()}
        changed = self.ledger.commitment_report(result.transaction_uid, result.committed, failed, self._clock())
        log.info("routing: storage commitment %s: %d committed, %d failed (%d deliveries updated)",
                 result.transaction_uid, len(result.committed), len(result.failed), changed)
        return changed

    # -- operators -----------------------------------------------------------------------------------------

    def send_now(self, peer: RemotePeer, sop_uids: Sequence[str], *, via: str) -> SendReport:
        """Send these stored instances to ``peer`` now, outside the routes and their ledger (``dicomvault send``),
        by the path a delivery takes (``_send``: the peer's preferred syntaxes first, converted when it accepts
        none the archive holds) on one association (``via`` dimse) or one STOW-RS request (dicomweb). Instances no
        longer stored are failed. Raises ``Unavailable`` when the peer cannot be reached at all."""
        rows = [Delivery(destination=peer.aet, sop_uid=uid, study_uid="", sop_class_uid="", route="", via=via,
                         transfer_syntax=None, commitment=False, state=DeliveryState.QUEUED) for uid in sop_uids]
        report = SendReport()
        for outcome in self._send(peer, rows, last=True):
            if outcome.state in (DeliveryState.SENT, DeliveryState.CONFIRMED):
                report.sent[outcome.sop_uid] = 0
            else:
                report.failed[outcome.sop_uid] = outcome.error or "not sent"
        return report

    def send_study(self, destination: str, study_uid: str, *, requested_by: str) -> tuple[int, int]:
        """Queue a whole study for ``destination`` as a durable delivery (the study page's "Send"): the same rows,
        job, retries and "never twice" rule as a route, under the route name ``manual:<who>``. Returns
        ``(queued, already)``: instances newly queued, and those the destination already has or has queued (a
        failed one is sent again by ``routes retry``). Raises ``NotFound`` (no such peer or study) or
        ``Unavailable`` (the peer has neither an address nor a DICOMweb URL, or there is no job queue)."""
        peer = self.peers.get(destination)
        via = "dimse" if peer.reachable else "dicomweb" if peer.dicomweb_url else ""
        if not via:
            raise Unavailable(f"peer {peer.aet} has neither a host and port nor a DICOMweb URL")
        if self.jobs is None:
            raise Unavailable("this archive has no job queue to send with")
        records = self.retrieve.locate(study_uid=study_uid)
        if not records:
            raise NotFound(f"no study {study_uid}")
        known = self.ledger.recorded([(peer.aet, r.sop_uid) for r in records])
        route = f"manual:{requested_by}"[:64]
        fresh = [Delivery(destination=peer.aet, sop_uid=r.sop_uid, study_uid=study_uid,
                          sop_class_uid=r.sop_class_uid, route=route, via=via, transfer_syntax=None,
                          commitment=False, state=DeliveryState.QUEUED)
                 for r in records if (peer.aet, r.sop_uid) not in known]
        if fresh:
            self.ledger.record(fresh, [], [self._job(peer.aet, study_uid)])
        log.info("routing: %d instances of a study queued for %s by %s (%d already known)", len(fresh), peer.aet,
                 requested_by, len(known))
        return len(fresh), len(known)

    def status(self) -> list[DestinationStatus]:
        return self.ledger.status()

    def retry(self, destination: str | None = None) -> int:
        """Queue failed deliveries again (of one destination, or all); returns how many studies were enqueued."""
        pairs = self.ledger.retry(destination.strip() if destination else None, self._clock())
        self._enqueue(pairs)
        return len(pairs)

    def close(self) -> None:
        """Stop the drain thread after a last flush (bounded: a dead index does not hold the shutdown)."""
        with self._lock:
            self._closed = True
            drainer = self._drainer
        self._wake.set()
        if drainer is not None:
            drainer.join(5.0)


__all__ = ["DELIVERY_MAX_ATTEMPTS", "ROUTE_DELIVER", "ConfiguredRoute", "RetryLater", "RoutingService"]
