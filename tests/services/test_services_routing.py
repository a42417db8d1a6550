"""Routing (issue #12 item 3): selection on store, durable deliveries per (destination, instance), retries with
backoff, stable studies, the operator's status and retry, storage commitment as SCU (pynetdicom destinations;
the real-peer tests are tests/dimse/test_dimse_routing.py). Runs on every index and store backend."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pydicom.uid import MRImageStorage, generate_uid

from dicomvault.bootstrap import Archive
from dicomvault.domain.errors import ConfigurationError
from dicomvault.domain.routing import DeliveryState, RouteFilter
from dicomvault.jobs.worker import Worker
from dicomvault.services.routing import ROUTE_DELIVER
from dicomvault.settings import Settings
from tests.helpers import make_ct
from tests.routing_support import destination, open_archive, route_worker, routed, routing_of, states, store, wait_for


def test_filters_on_source_modality_class_and_attributes() -> None:
    header = {"00080060": {"vr": "CS", "Value": ["CT"]}, "00080080": {"vr": "LO", "Value": ["General"]}}
    ct = "1.2.840.10008.5.1.4.1.1.2"
    assert RouteFilter().matches(ct, header, "")
    assert RouteFilter(sources=("CT1",)).matches(ct, header, "dimse:CT1")
    assert RouteFilter(sources=("dimse",)).matches(ct, header, "dimse:CT1")
    assert not RouteFilter(sources=("CT2",)).matches(ct, header, "dimse:CT1")
    assert RouteFilter(modalities=("CT",)).matches(ct, header, "")
    assert not RouteFilter(modalities=("MR",)).matches(ct, header, "")
    assert not RouteFilter(sop_classes=(MRImageStorage,)).matches(ct, header, "")
    assert RouteFilter(attributes=(("00080080", ("General", "Other")),)).matches(ct, header, "")
    assert not RouteFilter(attributes=(("00080080", ("Other",)),)).matches(ct, header, "")
    assert not RouteFilter(attributes=(("00100010", ("X",)),)).matches(ct, header, "")


def test_route_on_store_sends_what_it_selects_once(settings: Settings) -> None:
    with destination() as dest:
        archive = open_archive(routed(settings, {"name": "ct", "to": dest.aet, "when": {"modality": "CT",
                                                                                         "source": "CT1"}}),
                               dest.peer())
        try:
            study = generate_uid()
            cts = [make_ct(study=study, seed=i) for i in range(3)]
            uids = [store(archive, data) for data in cts]
            store(archive, make_ct(study=study, Modality="MR"))  # not CT
            store(archive, make_ct(study=study), source="dimse:CT2")  # another source
            with route_worker(archive):
                wait_for(lambda: set(dest.stores) == set(uids), what="the three CT delivered")
                store(archive, cts[0])  # a re-send (duplicate) selects it again: not sent again
                routing_of(archive).flush()
                wait_for(lambda: all(s == DeliveryState.CONFIRMED for s in states(archive, dest.aet).values()))
            assert dest.stores == {u: 1 for u in uids}
            [status] = routing_of(archive).status()
            assert status.destination == dest.aet and status.counts == {"confirmed": 3}
        finally:
            archive.close()


def test_destination_down_for_a_while_is_retried_and_delivered_once(settings: Settings) -> None:
    with destination(started=False) as dest:
        archive = open_archive(routed(settings, {"name": "all", "to": dest.aet}), dest.peer())
        try:
            study = generate_uid()
            uids = [store(archive, make_ct(study=study, seed=i)) for i in range(2)]
            with route_worker(archive, backoff=0.1):
                def retried() -> bool:
                    rows = routing_of(archive).ledger.deliveries(dest.aet)
                    return len(rows) == 2 and all(r.attempts >= 2 and r.last_error for r in rows)

                wait_for(retried, what="two failed attempts")
                [status] = routing_of(archive).status()
                assert status.last_error and "not established" in status.last_error
                assert status.counts.get("failed", 0) == 0
                dest.start()
                wait_for(lambda: all(s == DeliveryState.CONFIRMED for s in states(archive, dest.aet).values()),
                         what="delivery once the destination is back")
            assert dest.stores == {u: 1 for u in uids}
            [status] = routing_of(archive).status()
            assert status.counts == {"confirmed": 2} and status.last_error is None
        finally:
            archive.close()


def test_stable_route_waits_until_the_study_received_nothing_new(settings: Settings) -> None:
    with destination() as dest:
        archive = open_archive(routed(settings, {"name": "stable", "on": "stable", "stable_seconds": 1,
                                                 "to": dest.aet}), dest.peer())
        try:
            routing = routing_of(archive)
            study = generate_uid()
            first = store(archive, make_ct(study=study, seed=1))
            routing.flush()
            assert states(archive, dest.aet) == {first: DeliveryState.WAITING}
            assert routing.scan()["released"] == 0
            second = store(archive, make_ct(study=study, seed=2))  # pushes the wait back
            routing.flush()
            wait_for(lambda: routing.scan()["released"] == 1, timeout=5, what="the study released")
            with route_worker(archive):
                wait_for(lambda: set(dest.stores) == {first, second}, what="the stable study delivered")
            assert dest.stores == {first: 1, second: 1}
        finally:
            archive.close()


def test_last_attempt_marks_failed_and_retry_sends_again(settings: Settings) -> None:
    with destination(started=False) as dest:
        archive = open_archive(routed(settings, {"name": "all", "to": dest.aet}), dest.peer())
        try:
            routing = routing_of(archive)
            study = generate_uid()
            uid = store(archive, make_ct(study=study))
            routing.flush()
            with pytest.raises(Exception, match="not established"):
                routing.deliver(dest.aet, study, job_id=1, attempt=3, max_attempts=3)
            assert states(archive, dest.aet) == {uid: DeliveryState.FAILED}
            [status] = routing.status()
            assert status.counts == {"failed": 1} and "not established" in (status.last_error or "")
            dest.start()
            assert routing.retry(dest.aet) == 1
            with route_worker(archive):
                wait_for(lambda: states(archive, dest.aet) == {uid: DeliveryState.CONFIRMED})
            assert dest.stores == {uid: 1}
        finally:
            archive.close()


def test_two_jobs_of_one_study_never_send_an_instance_twice(settings: Settings) -> None:
    with destination() as dest:
        archive = open_archive(routed(settings, {"name": "all", "to": dest.aet}), dest.peer())
        try:
            routing = routing_of(archive)
            study = generate_uid()
            uids = [store(archive, make_ct(study=study, seed=i)) for i in range(12)]
            routing.flush()
            errors: list[BaseException] = []

            def job(n: int) -> None:
                try:
                    routing.deliver(dest.aet, study, job_id=1000 + n)
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=job, args=(n,)) for n in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert not errors
            assert dest.stores == {u: 1 for u in uids}
            routing.deliver(dest.aet, study, job_id=2000)  # a job run again after a crash: nothing left to send
            assert dest.stores == {u: 1 for u in uids}
        finally:
            archive.close()


def test_commitment_confirms_only_what_the_destination_committed(settings: Settings) -> None:
    with destination(commit=True) as dest:
        archive = open_archive(routed(settings, {"name": "committed", "to": dest.aet, "commitment": True}),
                               dest.peer())
        try:
            study = generate_uid()
            uids = [store(archive, make_ct(study=study, seed=i)) for i in range(2)]
            routing_of(archive).flush()  # both recorded before the job runs: one association, one commitment request
            with route_worker(archive):
                wait_for(lambda: states(archive, dest.aet) == dict.fromkeys(uids, DeliveryState.CONFIRMED),
                         what="both confirmed by N-EVENT-REPORT")
            [(transaction, refs)] = dest.commitment_requests
            assert sorted(i for _, i in refs) == sorted(uids)
            assert {d.commitment_uid for d in routing_of(archive).ledger.deliveries(dest.aet)} == {transaction}
        finally:
            archive.close()


def test_an_unknown_destination_is_refused_at_start_up_with_its_line(tmp_path: Path, settings: Settings) -> None:
    config = tmp_path / "config.toml"
    config.write_text('aet = "DV"\n\n[[route]]\nname = "to nowhere"\nto = "NOWHERE"\n')
    loaded = Settings.load(config, data_dir=settings.data_dir, index_url=settings.index_url,
                           storage_url=settings.storage_url)
    archive = open_archive(loaded)
    try:
        with pytest.raises(ConfigurationError) as refused:
            routing_of(archive).check_destinations()
        assert f"{config} line 5: [[route]] rule 1 ('to nowhere'), to: route 'to nowhere' sends to unknown " \
               "peer 'NOWHERE'" in refused.value.message
    finally:
        archive.close()


def test_a_worker_without_routes_registers_the_kind_but_no_scan(archive: Archive) -> None:
    from dicomvault.jobs.worker import periodic_tasks

    assert archive.routing is not None and not archive.routing.active
    assert "routing scan" not in {t.name for t in periodic_tasks(archive)}
    assert archive.jobs is not None
    assert ROUTE_DELIVER in Worker(archive.jobs, __import__("dicomvault.jobs.handlers").jobs.handlers
                                   .default_handlers(archive)).handlers
