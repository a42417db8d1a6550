"""Soft delete, restore, purge, retention and delete rules (``services.trash``) on real components: a hot and a
cold store (folders, or the cold one on S3 with ``DV_TEST_STORAGE_URL=s3``), the index of ``DV_TEST_INDEX_URL``.

A soft-deleted study is gone from queries and retrieval, its blobs and copies stay (fixity clean); a restore
brings back identical bytes; the purge after the grace period removes the blobs from every store; an object
sent again survives the purge; a soft delete (with its purge) racing a re-send loses nothing (``race_rounds``);
``retention_min_days`` refuses; a delete rule soft-deletes the studies it matches and is logged ``rule:<name>``.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid

from dicomvault.bootstrap import Archive, build_archive
from dicomvault.domain.errors import IntegrityFailure, NotFound, Unavailable
from dicomvault.domain.records import DuplicatePolicy, StoreOutcome
from dicomvault.domain.tags import Level
from dicomvault.domain.trash import Deletion, DeletionAction, RetentionHeld
from dicomvault.jobs.handlers import TIER_KINDS, default_handlers
from dicomvault.jobs.worker import Worker, periodic_tasks
from dicomvault.services.trash import TrashService
from dicomvault.settings import Settings
from tests.conftest import free_port
from tests.helpers import make_ct
from tests.race_rounds import ACKNOWLEDGED, STORED, UNAVAILABLE, run_rounds, together

WHO = Deletion("tester", "test")
RULE = {"name": "ten years", "when": {"study_age_days": 3650}, "action": {"delete": True, "grace_days": 30}}


def _settings(tmp_path: Path, request: pytest.FixtureRequest, **extra: Any) -> Settings:
    index_url = os.environ.get("DV_TEST_INDEX_URL") or None
    if index_url and index_url.startswith("postgres"):
        index_url = str(request.getfixturevalue("pg_url"))
    cold = (str(request.getfixturevalue("s3_bucket_url")) if os.environ.get("DV_TEST_STORAGE_URL") == "s3"
            else f"file://{tmp_path / 'cold'}")
    stores = {"hot": {"url": f"file://{tmp_path / 'hot'}"}, "cold": {"url": cold}}
    return Settings.load(data_dir=tmp_path / "vault", index_url=index_url, ingest_store="hot", stores=stores,
                         dimse_port=free_port(), http_port=free_port(), tier_max_bytes_per_second=0,
                         delete_grace_days=7, **extra)


@pytest.fixture
def arc(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Archive]:
    a = build_archive(_settings(tmp_path, request))
    yield a
    a.close()


def _trash(a: Archive) -> TrashService:
    assert a.trash is not None
    return a.trash


def _study(a: Archive, n: int = 3, **attrs: Any) -> tuple[str, dict[str, bytes]]:
    study, series = generate_uid(), generate_uid()
    objects: dict[str, bytes] = {}
    for i in range(n):
        sop = generate_uid()
        data = make_ct(study=study, series=series, sop=sop, seed=i, **attrs)
        a.ingest.ingest(io.BytesIO(data), source="CTSCANNER")
        objects[sop] = data
    return study, objects


def _read_all(a: Archive, study: str) -> dict[str, bytes]:
    return {r.sop_uid: b"".join(a.retrieve.iter_bytes(r, verify=True)) for r in a.retrieve.locate(study_uid=study)}


def _keys(objects: dict[str, bytes]) -> list[str]:
    return sorted(hashlib.sha256(d).hexdigest() for d in objects.values())


def _on(a: Archive, store: str, key: str) -> bool:
    assert a.tiers is not None
    return a.tiers.store(store).exists(key)


def _qido(a: Archive, study: str) -> list[Any]:
    return a.query.search(a.query.build_spec(Level.STUDY, {"StudyInstanceUID": study}))


def _copy_to_cold(a: Archive, study: str) -> None:
    assert a.copier is not None
    for blob in a.index.study_blobs(study):
        assert a.copier.copy(blob.blob, blob.stores, "cold").copied


def test_soft_delete_then_restore_is_byte_identical(arc: Archive) -> None:
    trash = _trash(arc)
    study, objects = _study(arc)
    keep, _ = _study(arc, 1)
    _copy_to_cold(arc, study)
    outcome = trash.delete(study, deletion=WHO)
    assert outcome.soft and outcome.trashed == 3

    assert _qido(arc, study) == [] and arc.index.instances(study_uid=study) == []
    assert arc.retrieve.locate(study_uid=study) == []
    keys = _keys(objects)
    assert all(_on(arc, "hot", k) and _on(arc, "cold", k) for k in keys), "blobs kept on every store"
    report = arc.fixity.check()
    assert report.clean, report
    assert report.checked == 2 * 3 + 1, "the trashed copies are still checked"
    [listed] = trash.studies()
    assert (listed.study_uid, listed.instances, listed.deleted_by) == (study, 3, ("tester",))

    result = trash.restore(study, deletion=Deletion("cli:op"))
    assert (result.restored, result.untrashed, result.purged, result.failed) == (3, 3, 0, [])
    assert _read_all(arc, study) == objects
    assert len(_qido(arc, study)) == 1 and trash.studies() == []
    assert {b.stores for b in arc.index.study_blobs(study)} in ({("cold", "hot")}, {("hot", "cold")})
    assert [(e.action, e.by) for e in trash.deletion_log(study)] == [
        (DeletionAction.RESTORE, "cli:op"), (DeletionAction.SOFT_DELETE, "tester")]
    assert _read_all(arc, keep)
    with pytest.raises(NotFound):
        trash.restore(study, deletion=WHO)


def test_restore_of_one_series_and_one_instance(arc: Archive) -> None:
    trash = _trash(arc)
    study, objects = _study(arc)
    sops = list(objects)
    series = arc.index.instances(study_uid=study)[0].series_uid
    trash.delete(study, deletion=WHO)
    assert trash.restore(study, series, sops[1], deletion=WHO).restored == 1
    assert set(_read_all(arc, study)) == {sops[1]}
    assert trash.restore(study, series, deletion=WHO).restored == 2
    assert _read_all(arc, study) == objects


def test_purge_after_the_grace_period_removes_every_copy(arc: Archive) -> None:
    trash = _trash(arc)
    study, objects = _study(arc)
    _copy_to_cold(arc, study)
    trash.delete(study, deletion=WHO)
    keys = _keys(objects)
    assert trash.purge_due().purged == 0, "within the grace period"
    not_yet = trash.purge(study, deletion=WHO)
    assert (not_yet.purged, not_yet.not_due) == (0, 3)

    now = datetime.now(UTC)
    trash.clock = lambda: now + timedelta(days=7, minutes=1)
    result = trash.purge_due()
    assert (result.purged, result.removed, result.kept, result.left) == (3, 3, 0, 0)
    assert not any(_on(arc, s, k) for s in ("hot", "cold") for k in keys)
    assert arc.index.blob_copies(keys) == {}
    assert arc.fixity.check().clean
    assert trash.deletion_log(study)[0].action == DeletionAction.PURGE
    assert trash.deletion_log(study)[0].by == "system:grace-period"
    with pytest.raises(NotFound):
        trash.restore(study, deletion=WHO)


def test_forced_purge_and_an_object_sent_again(arc: Archive) -> None:
    trash = _trash(arc)
    study, objects = _study(arc, 2)
    trash.delete(study, deletion=WHO)
    sop, data = next(iter(objects.items()))
    assert arc.ingest.ingest(io.BytesIO(data), source="again").outcome == StoreOutcome.STORED
    result = trash.purge(study, force=True, deletion=WHO)
    assert (result.purged, result.removed, result.kept) == (2, 1, 1)
    assert _read_all(arc, study) == {sop: data}


def test_the_job_worker_purges_what_is_due(arc: Archive) -> None:
    trash = _trash(arc)
    study, objects = _study(arc, 1)
    trash.delete(study, deletion=WHO, grace_days=0.5)
    [task] = [t for t in periodic_tasks(arc) if t.name == "trash purge"]
    task.run()
    assert len(trash.items()) == 1
    now = datetime.now(UTC)
    trash.clock = lambda: now + timedelta(days=1)
    task.run()
    assert trash.items() == [] and not any(_on(arc, "hot", k) for k in _keys(objects))


def test_without_a_grace_period_delete_is_immediate_and_logged(arc: Archive) -> None:
    trash = _trash(arc)
    study, objects = _study(arc, 1)
    outcome = trash.delete(study, deletion=WHO, grace_days=0)
    assert not outcome.soft and outcome.removed is not None and outcome.removed.blobs_removed == 1
    assert trash.items() == [] and not _on(arc, "hot", _keys(objects)[0])
    assert trash.deletion_log(study)[0].action == DeletionAction.DELETE


def test_retention_min_days_refuses(arc: Archive) -> None:
    trash = _trash(arc)
    trash.retention_min_days = 3650
    young, _ = _study(arc, 1, StudyDate=datetime.now(UTC).strftime("%Y%m%d"))
    undated, _ = _study(arc, 1, StudyDate="")
    old, _ = _study(arc, 1, StudyDate="19990101")
    for study in (young, undated):
        with pytest.raises(RetentionHeld):
            trash.delete(study, deletion=WHO)
        assert arc.index.instances(study_uid=study)
    assert trash.delete(old, deletion=WHO).soft
    with pytest.raises(NotFound):
        trash.delete(generate_uid(), deletion=WHO)


def test_a_delete_rule_soft_deletes_matching_studies(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    copy_all = {"name": "replica", "when": {"min_study_bytes": 0}, "action": {"copy_to": "cold"}}
    held = {"name": "held", "when": {"modality": "MR"}, "action": {"delete": True}}
    a = build_archive(_settings(tmp_path, request, lifecycle=[copy_all, RULE, held], retention_min_days=365))
    try:
        assert a.tiering is not None and a.jobs is not None
        old, objects = _study(a, StudyDate="20000101")
        young, _ = _study(a, StudyDate="21000101")
        mr, _ = _study(a, 1, StudyDate=datetime.now(UTC).strftime("%Y%m%d"), Modality="MR")
        plans = {p.rule: p for p in a.tiering.plan()}
        assert (plans["ten years"].action, plans["ten years"].studies) == ("delete (grace 30 days)", 1)
        assert plans["held"].studies == 0, "the retention minimum is part of a delete rule's selection"
        a.tiering.schedule()
        worker = Worker(a.jobs, default_handlers(a), kinds=list(TIER_KINDS), poll_interval=0)
        while worker.run_once():
            pass
        assert a.index.instances(study_uid=old) == []
        assert {i.study_uid for i in _trash(a).items()} == {old}
        assert all(_on(a, "hot", k) for k in _keys(objects)) and not any(_on(a, "cold", k) for k in _keys(objects))
        entry = _trash(a).deletion_log(old)[0]
        assert (entry.action, entry.by, entry.instances) == (DeletionAction.SOFT_DELETE, "rule:ten years", 3)
        assert _trash(a).items()[0].purge_after > datetime.now(UTC) + timedelta(days=29)
        assert {b.stores for b in a.index.study_blobs(young)} in ({("hot", "cold")}, {("cold", "hot")})
        # the retention minimum keeps the MR study: the job skips the delete (and still replicates it)
        work = a.tiering.apply_study(mr)
        assert "retention" in work.skipped and work.deleted == 0
        assert a.index.instances(study_uid=mr)
        assert {b.stores for b in a.index.study_blobs(mr)} in ({("hot", "cold")}, {("cold", "hot")})
    finally:
        a.close()


def test_restore_under_keep_both_brings_back_prior_versions(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    a = build_archive(_settings(tmp_path, request, duplicate_policy=DuplicatePolicy.KEEP_BOTH))
    try:
        study, series, sop = generate_uid(), generate_uid(), generate_uid()
        first = make_ct(study=study, series=series, sop=sop, seed=1)
        second = make_ct(study=study, series=series, sop=sop, seed=2)
        for data in (first, second):
            a.ingest.ingest(io.BytesIO(data))
        _trash(a).delete(study, deletion=WHO)
        assert _trash(a).restore(study, deletion=WHO).restored == 2
        assert _read_all(a, study) == {sop: second}
        assert len(a.index.study_blobs(study)) == 2 and _trash(a).items() == []
    finally:
        a.close()


def _resend(a: Archive, data: bytes) -> str:
    try:
        outcome = a.ingest.ingest(io.BytesIO(data), source="race").outcome
    except Unavailable:
        return UNAVAILABLE
    return STORED if outcome == StoreOutcome.STORED else ACKNOWLEDGED


def _retrieve(a: Archive, sop: str) -> bytes | None:
    records = a.index.instances(sop_uids=[sop])
    if not records:
        return None
    try:
        return b"".join(a.retrieve.iter_bytes(records[0], verify=True))
    except (NotFound, IntegrityFailure):
        return None


def test_soft_delete_and_purge_racing_a_resend_lose_nothing(arc: Archive) -> None:
    """The rounds of tests/services/test_services_delete_race.py with a soft delete followed at once by a forced
    purge: the purge's pending removal meets the re-send (``services.lifecycle`` case i)."""
    trash = _trash(arc)

    def delete(study: str) -> None:
        try:
            trash.delete(study, deletion=WHO)
            trash.purge(study, force=True, deletion=WHO)
        except NotFound:
            pass

    tally = run_rounds(
        40, 3,
        store=lambda data: arc.ingest.ingest(io.BytesIO(data)).blob.sha256,
        delete=delete,
        resend=lambda datas: [_resend(arc, d) for d in datas],
        indexed=lambda study: {r.sop_uid for r in arc.index.instances(study_uid=study)},
        retrieve=lambda _st, _se, sop: _retrieve(arc, sop),
    )
    assert tally.losses == [], f"{len(tally.losses)} losses in {tally.rounds} rounds: {tally.losses[:5]}"
    assert tally.indexed > 0 and tally.gone > 0, f"both orders of delete and re-send must occur: {tally}"
    assert trash.items() == [] or all(arc.index.blob_referenced(i.blob.key) for i in trash.items())


def test_restore_racing_a_purge_never_indexes_a_missing_blob(arc: Archive) -> None:
    """A restore and a forced purge of the same study released together, in both orders: afterwards every
    instance the index answers for reads back its exact bytes, and the trash is empty (the purge took the rest)."""
    trash = _trash(arc)
    outcomes = {"restored": 0, "purged": 0}
    for n in range(15):
        study, objects = _study(arc, 2, InstanceNumber=n + 1)
        trash.delete(study, deletion=WHO)

        def restore(study: str = study) -> int:
            try:
                return trash.restore(study, deletion=WHO).restored
            except NotFound:
                return 0

        def purge(study: str = study) -> int:
            try:
                return trash.purge(study, force=True, deletion=WHO).removed
            except NotFound:
                return 0

        restored, _ = together(restore, purge, lead=(n % 5 - 2) * 0.002)
        outcomes["restored" if restored else "purged"] += 1
        for record in arc.index.instances(study_uid=study):
            assert _retrieve(arc, record.sop_uid) == objects[record.sop_uid], f"round {n}: indexed, blob lost"
        assert trash.items(study) == [] or all(arc.index.blob_referenced(i.blob.key) for i in trash.items(study))
    assert sum(outcomes.values()) == 15
