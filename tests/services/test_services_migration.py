"""Migration from a legacy PACS (issue #12 item 5) against a real Orthanc: C-MOVE, C-GET and DICOMweb pull every
instance as the peer stores it (implicit VR and RLE included), verified at IMAGE level; a second run fetches
nothing; filters are honoured; a peer that fails leaves studies ``failed`` with the reason, and the next run
completes them. On SQLite or PostgreSQL, folder or S3 (``DV_TEST_INDEX_URL`` / ``DV_TEST_STORAGE_URL``)."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence

import pydicom
import pytest

from dicomvault.adapters.remote.store_listener import LeanStoreScp
from dicomvault.adapters.remote.store_scp import PynetdicomStoreScp
from dicomvault.bootstrap import Archive, build_migration
from dicomvault.domain.migration import PullOutcome, RemoteInstance, RemoteStudy, StudyFilter, StudyState, Via
from dicomvault.domain.peers import RemotePeer
from dicomvault.ports.migration import Received, Sink
from dicomvault.services.migration import MigrationService
from tests.conftest import free_port
from tests.helpers import make_ct
from tests.orthanc_peer import CorpusStudy, LegacyPacs, legacy_pacs, small_corpus

MOVE_AET = "DVMIGRATE"
MOVE_PORT = free_port()


@pytest.fixture(scope="module")
def pacs() -> Iterator[tuple[LegacyPacs, list[CorpusStudy]]]:
    studies, objects = small_corpus(studies=6, per_study=40)  # 240 instances
    with legacy_pacs({MOVE_AET: MOVE_PORT}) as orthanc:
        orthanc.load(objects)
        yield orthanc, studies


def _migration(archive: Archive, orthanc: LegacyPacs, via: Via, **kwargs: object) -> MigrationService:
    assert archive.peers is not None
    archive.peers.add(RemotePeer(aet="ORTHANC", host="127.0.0.1", port=orthanc.dimse_port,
                                 dicomweb_url=orthanc.dicomweb))
    options: dict[str, object] = {"listen_port": MOVE_PORT, "listen_host": "127.0.0.1", "move_aet": MOVE_AET}
    options.update(kwargs)
    return build_migration(archive, via=via, **({} if via != Via.MOVE else options))  # type: ignore[arg-type]


def _stored(archive: Archive, study_uid: str) -> dict[str, bytes]:
    out = {}
    for record in archive.index.instances(study_uid=study_uid):
        with archive.retrieve.open(record) as f:
            out[record.sop_uid] = f.read()
    return out


def _data_set(part10: bytes) -> bytes:
    """The bytes after the File Meta group (what travels in a C-STORE)."""
    from dicomvault.services.part10 import dataset_offset

    return part10[dataset_offset(part10[:1 << 16]):]


@pytest.mark.parametrize("via", [Via.MOVE, Via.GET, Via.DICOMWEB])
def test_every_instance_arrives_as_stored_and_a_second_run_fetches_nothing(
        archive: Archive, pacs: tuple[LegacyPacs, list[CorpusStudy]], via: Via) -> None:
    orthanc, studies = pacs
    chosen = studies[:3]  # 120 instances: keeps three transports under the time budget
    flt = StudyFilter(study_uids=tuple(s.uid for s in chosen))
    report = _migration(archive, orthanc, via).run("ORTHANC", flt, max_in_flight=2)
    assert report.ok, report.text()
    assert sorted(r.study_uid for r in report.migrated) == sorted(s.uid for s in chosen)
    assert sum(r.received for r in report.migrated) == 120
    for study in chosen:
        theirs, ours = orthanc.files(study.uid), _stored(archive, study.uid)
        assert set(ours) == set(theirs)
        for uid, data in theirs.items():
            if via == Via.DICOMWEB:  # WADO-RS sends Orthanc's file, File Meta included
                assert ours[uid] == data
            else:  # a C-STORE carries the data set only: ours has the archive's File Meta in front of it
                assert _data_set(ours[uid]) == _data_set(data)
    assert archive.migration_state is not None
    rows = archive.migration_state.list("ORTHANC")
    assert {r.state for r in rows} == {StudyState.DONE} and all(r.received == r.expected == 40 for r in rows)

    moves_before = orthanc.moves_per_study()
    again = _migration(archive, orthanc, via).run("ORTHANC", flt)
    assert again.ok and len(again.earlier) == 3 and not again.migrated and not again.skipped
    assert orthanc.moves_per_study() == moves_before, "no study asked for again"


def test_filters_are_honoured(archive: Archive, pacs: tuple[LegacyPacs, list[CorpusStudy]]) -> None:
    orthanc, studies = pacs
    # dates 2015..2020, CT on even years from 2015: 2016-2019 → studies 1..4; MR → 1 and 3
    report = _migration(archive, orthanc, Via.DICOMWEB).run(
        "ORTHANC", StudyFilter(since="20160101", until="20191231", modality="MR"))
    assert report.ok, report.text()
    assert sorted(r.study_uid for r in report.migrated) == sorted([studies[1].uid, studies[3].uid])
    assert {r.study_uid for r in report.results} == {studies[1].uid, studies[3].uid}
    for study in studies:
        present = archive.index.instances(study_uid=study.uid)
        assert len(present) == (40 if study.uid in (studies[1].uid, studies[3].uid) else 0)


def test_studies_already_present_are_skipped(archive: Archive, pacs: tuple[LegacyPacs, list[CorpusStudy]]) -> None:
    orthanc, studies = pacs
    import io

    for data in orthanc.files(studies[5].uid).values():
        archive.ingest.ingest(io.BytesIO(data), source="test")
    flt = StudyFilter(study_uids=(studies[4].uid, studies[5].uid, "1.2.3.999"))
    report = _migration(archive, orthanc, Via.GET).run("ORTHANC", flt)
    assert [r.study_uid for r in report.migrated] == [studies[4].uid]
    assert [r.study_uid for r in report.skipped] == [studies[5].uid]
    assert [(r.study_uid, r.reason) for r in report.failed] == [("1.2.3.999", "the peer does not have this study")]
    assert orthanc.moves_per_study().get(studies[5].uid, 0) == 0


def test_a_failing_peer_leaves_failed_studies_with_the_reason_and_the_next_run_completes_them(
        archive: Archive, pacs: tuple[LegacyPacs, list[CorpusStudy]]) -> None:
    orthanc, studies = pacs
    flt = StudyFilter(study_uids=(studies[0].uid, studies[2].uid))
    # the peer does not know this move destination: C-MOVE fails (0xA801 by the standard; Orthanc says 0xC000)
    report = _migration(archive, orthanc, Via.MOVE, move_aet="NOBODY").run("ORTHANC", flt)
    assert not report.ok and len(report.failed) == 2
    assert all("move destination AE title 'NOBODY'" in (r.reason or "") for r in report.failed)
    assert all((r.reason or "").startswith("40 of 40 instances missing after retrieval") for r in report.failed)
    assert archive.migration_state is not None
    rows = archive.migration_state.list("ORTHANC", [StudyState.FAILED])
    assert len(rows) == 2 and all(r.attempts == 1 and "NOBODY" in (r.last_error or "") for r in rows)

    # the peer is down: nothing can be asked, nothing changes
    assert archive.peers is not None
    archive.peers.add(RemotePeer(aet="ORTHANC", host="127.0.0.1", port=free_port()))
    down = build_migration(archive, via=Via.GET).run("ORTHANC", flt)
    assert down.error is not None and "did not answer" in down.error and not down.ok
    assert len(archive.migration_state.list("ORTHANC", [StudyState.FAILED])) == 2

    fixed = _migration(archive, orthanc, Via.MOVE).run("ORTHANC", flt)
    assert fixed.ok, fixed.text()
    assert len(fixed.migrated) == 2
    rows = archive.migration_state.list("ORTHANC")
    assert all(r.state == StudyState.DONE and r.last_error is None and r.attempts == 2 for r in rows)


@pytest.mark.parametrize("via", [Via.MOVE, Via.GET])
def test_a_study_partly_present_gets_only_its_missing_instances(
        archive: Archive, pacs: tuple[LegacyPacs, list[CorpusStudy]], via: Via) -> None:
    orthanc, studies = pacs
    study = studies[4]
    files = orthanc.files(study.uid)
    kept = sorted(files)[:30]  # as if a run had been killed after 30 of the 40 instances
    for uid in kept:
        archive.ingest.ingest(io.BytesIO(files[uid]), source="test")
    moves_before = orthanc.moves_per_study()
    report = _migration(archive, orthanc, via).run("ORTHANC", StudyFilter(study_uids=(study.uid,)))
    assert report.ok, report.text()
    [result] = report.migrated
    assert result.received == 10, "only the 10 missing instances were sent"
    assert set(_stored(archive, study.uid)) == set(files)
    assert orthanc.moves_per_study().get(study.uid, 0) == moves_before.get(study.uid, 0), "no study-level move"


def test_a_peer_ignoring_the_instance_list_gets_asked_for_the_whole_study(archive: Archive) -> None:
    objects = [make_ct(study="1.2.826.0.1.3680043.9.7.1", series="1.2.826.0.1.3680043.9.7.2", rows=8, columns=8,
                       seed=i, InstanceNumber=i + 1) for i in range(4)]
    instances = []
    for data in objects:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        instances.append(RemoteInstance(str(ds.SOPInstanceUID), str(ds.SOPClassUID), str(ds.SeriesInstanceUID)))
    archive.ingest.ingest(io.BytesIO(objects[0]), source="test")
    calls: list[tuple[bool, int]] = []

    class Ignoring:
        def find_studies(self, peer: RemotePeer, flt: StudyFilter) -> list[RemoteStudy]:
            return [RemoteStudy("1.2.826.0.1.3680043.9.7.1", "20200101", "P", ("CT",), 4)]

        def find_instances(self, peer: RemotePeer, study_uid: str) -> list[RemoteInstance]:
            return instances

        def pull(self, peer: RemotePeer, study_uid: str, asked: Sequence[RemoteInstance], sink: Sink, *,
                 only: bool = False) -> PullOutcome:
            calls.append((only, len(asked)))
            if only:  # answers success and sends nothing
                return PullOutcome()
            for data in objects:
                assert sink(Received(stream=io.BytesIO(data), size=len(data), part10=True)) is None
            return PullOutcome(received=len(objects))

    assert archive.peers is not None and archive.migration_state is not None
    archive.peers.add(RemotePeer(aet="OLD", host="127.0.0.1", port=104))
    service = MigrationService(archive.peers, archive.ingest, archive.index, archive.migration_state, Ignoring(),
                               via=Via.GET)
    report = service.run("OLD", StudyFilter())
    assert report.ok, report.text()
    assert calls == [(True, 3), (False, 4)]
    assert len(archive.index.instances(study_uid="1.2.826.0.1.3680043.9.7.1")) == 4


@pytest.mark.parametrize("lean", [True, False])
def test_the_move_receiver_follows_dimse_fast_store(archive: Archive, lean: bool) -> None:
    """The C-MOVE storage SCP receives on the lean path like the DIMSE server, pynetdicom's with
    ``dimse_fast_store = false``."""
    archive.settings = archive.settings.model_copy(update={"dimse_fast_store": lean})
    service = build_migration(archive, via=Via.MOVE, listen_port=free_port(), listen_host="127.0.0.1")
    assert isinstance(service.receiver, LeanStoreScp if lean else PynetdicomStoreScp)
