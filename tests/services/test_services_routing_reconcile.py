"""Routing's reconciliation (issue #12 item 3, "survives restarts and node loss"): an instance stored and
acknowledged, selected by a route, but not yet recorded when its process died, is recorded after a restart by the
reconciliation and delivered exactly once; what was recorded is not recorded twice; what no route selects is never
sent. Also: the rows and the delivery job of a batch are one transaction. Runs on every index and store backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydicom.uid import generate_uid

from dicomvault.bootstrap import Archive
from dicomvault.domain.routing import DeliveryState
from dicomvault.services.routing import ROUTE_DELIVER, RoutingService
from dicomvault.settings import Settings
from tests.helpers import make_ct
from tests.routing_support import destination, open_archive, route_worker, routed, routing_of, states, store, wait_for


def _crash_before_recording(archive: Archive) -> None:
    """What kill -9 does to routing: the drain thread is gone, so what ``on_stored`` noted stays in memory."""
    routing_of(archive).close()  # the drain thread ends; on_stored starts no other: selections are only noted


def _lose_memory_and_close(archive: Archive) -> None:
    routing = routing_of(archive)
    with routing._lock:
        routing._pending.clear()  # the process died: its memory with it
    archive.close()


def test_instances_selected_but_never_recorded_are_routed_once_after_a_restart(settings: Settings) -> None:
    with destination("NOW") as now_dest, destination("LATER") as later_dest:
        routes = routed(settings, {"name": "ct now", "to": now_dest.aet, "when": {"modality": "CT"}},
                        {"name": "ct later", "to": later_dest.aet, "on": "stable", "stable_seconds": 1,
                         "when": {"modality": "CT"}})
        first = open_archive(routes, now_dest.peer(), later_dest.peer())
        study = generate_uid()
        recorded = store(first, make_ct(study=study, seed=1))
        routing_of(first).flush()  # recorded before the crash
        _crash_before_recording(first)
        lost = [store(first, make_ct(study=study, seed=i)) for i in range(2, 5)]
        store(first, make_ct(study=study, seed=9, Modality="MR"))  # selected by no route
        assert routing_of(first)._pending, "the stores were selected in memory"
        assert set(states(first, now_dest.aet)) == {recorded}
        _lose_memory_and_close(first)

        second = open_archive(routes)  # the restart
        try:
            routing = routing_of(second)
            routing.reconcile_settle = 0.0  # everything stored so far has settled
            assert routing.scan()["reconciled"] == 2 * len(lost)  # both destinations
            assert routing.scan()["reconciled"] == 0  # a mark in memory: each instance is read once
            assert set(states(second, now_dest.aet)) == {recorded, *lost}
            assert set(states(second, later_dest.aet)) == {recorded, *lost}
            with route_worker(second):
                wait_for(lambda: now_dest.stores == {u: 1 for u in (recorded, *lost)}, what="delivered now")
                # the stable route's study: released by the scan once its wait is over, then delivered
                wait_for(lambda: bool(routing.scan()) and later_dest.stores == {u: 1 for u in (recorded, *lost)},
                         what="the stable study delivered")
                wait_for(lambda: set(states(second, now_dest.aet).values()) == {DeliveryState.CONFIRMED})
            # another restart reads the same window again: nothing is recorded or sent twice
            fresh = RoutingService(routing.configured, routing.ledger, second.jobs, routing.peers, second.retrieve,
                                   reconcile_settle=0.0)
            assert fresh.reconcile() == 0
            assert now_dest.stores == {u: 1 for u in (recorded, *lost)}
            assert later_dest.stores == {u: 1 for u in (recorded, *lost)}
        finally:
            second.close()


def test_the_window_bounds_what_a_restart_reads_back(settings: Settings) -> None:
    with destination() as dest:
        archive = open_archive(routed(settings, {"name": "all", "to": dest.aet}), dest.peer())
        try:
            routing = routing_of(archive)
            _crash_before_recording(archive)
            uids = [store(archive, make_ct(study=generate_uid(), seed=i)) for i in range(3)]
            routing._pending.clear()
            ledger = routing.ledger
            now = datetime.now(UTC)
            assert ledger.last_stored_before(now - timedelta(hours=1)) == 0  # all three are in the window
            newest = ledger.last_stored_before(now + timedelta(seconds=1))
            assert newest > 0 and ledger.stored_after(newest, 10) == []  # none is: the mark is past them
            assert [i.sop_uid for i in ledger.stored_after(0, 10)] == uids
            # a clock an hour and more ahead: every instance is older than the window, none is read back
            later = RoutingService(routing.configured, ledger, archive.jobs, routing.peers, archive.retrieve,
                                   clock=lambda: now + timedelta(hours=2), reconcile_settle=0.0)
            assert later.reconcile() == 0 and states(archive, dest.aet) == {}
            # too recent (not settled): left for a later run, which a settled clock then does
            recent = RoutingService(routing.configured, ledger, archive.jobs, routing.peers, archive.retrieve)
            assert recent.reconcile() == 0 and states(archive, dest.aet) == {}
            recent._clock = lambda: now + timedelta(seconds=30)
            assert recent.reconcile() == 3
            assert set(states(archive, dest.aet)) == set(uids)
            # off: route_reconcile_window = 0
            off = RoutingService(routing.configured, ledger, archive.jobs, routing.peers, archive.retrieve,
                                 reconcile_window=0)
            assert off.reconcile() == 0
        finally:
            archive.close()


def test_rows_and_their_job_are_written_together(settings: Settings) -> None:
    with destination() as dest:
        archive = open_archive(routed(settings, {"name": "all", "to": dest.aet}), dest.peer())
        try:
            routing = routing_of(archive)
            assert archive.jobs is not None
            study = generate_uid()
            uids = [store(archive, make_ct(study=study, seed=i)) for i in range(3)]
            routing.flush()
            assert set(states(archive, dest.aet)) == set(uids)
            jobs = [j for j in archive.jobs.list() if j.kind == ROUTE_DELIVER]
            assert [j.payload for j in jobs] == [{"destination": dest.aet, "study_uid": study}]
            store(archive, make_ct(study=study, seed=7))
            routing.flush()
            assert len([j for j in archive.jobs.list() if j.kind == ROUTE_DELIVER]) == 1  # one per study
            with route_worker(archive):
                wait_for(lambda: len(dest.stores) == 4, what="the study delivered")
            assert set(dest.stores.values()) == {1}
        finally:
            archive.close()
