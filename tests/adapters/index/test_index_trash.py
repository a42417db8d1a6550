"""The index side of soft delete (``adapters.index.trash``), on SQLite and PostgreSQL (``any_index_url``).

A soft delete removes the rows as a delete does and puts the released blobs in the trash in the same
transaction; a trashed key is referenced for every check (claims, ``blob_referenced``, copies, the walks);
the purge turns trash rows into pending removals unless an instance references the key again; a restore is an
ingest followed by ``untrash_restored``; every change leaves its deletion log row; migration 0009 from 0008.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from pydicom.uid import generate_uid
from sqlalchemy import inspect, select, text

from dicomvault.adapters.index.engine import alembic_config, create_index_engine, migrate
from dicomvault.adapters.index.repository import SqlIndexRepository
from dicomvault.adapters.index.tables import blob_removals, deletion_log, trash
from dicomvault.bootstrap import Archive, build_archive
from dicomvault.domain.records import DuplicatePolicy
from dicomvault.domain.tiers import StudyCondition
from dicomvault.domain.trash import Deletion, DeletionAction
from dicomvault.services.ingest import IngestResult
from dicomvault.settings import Settings
from tests.helpers import make_ct

WHO = Deletion("alice", "test")
LATER = datetime.now(UTC) + timedelta(days=7)


def _archive(tmp_path: Path, url: str, policy: DuplicatePolicy = DuplicatePolicy.REJECT) -> Archive:
    return build_archive(Settings.load(data_dir=tmp_path / "v", index_url=url, storage_url="memory://",
                                       duplicate_policy=policy))


@pytest.fixture
def arc(tmp_path: Path, any_index_url: str) -> Iterator[Archive]:
    a = _archive(tmp_path, any_index_url)
    yield a
    a.close()


def _ingest(a: Archive, **kw: Any) -> IngestResult:
    return a.ingest.ingest(io.BytesIO(make_ct(**kw)), source="test")


def _resend(a: Archive, rec: IngestResult) -> IngestResult:
    """The same object sent again (its bytes read back from the store, where the trash keeps them)."""
    return a.ingest.ingest(io.BytesIO(a.blobs.open(rec.blob.key).read()), source="test")


def _rows(a: Archive, table: Any) -> list[Any]:
    assert isinstance(a.index, SqlIndexRepository)
    with a.index.engine.connect() as conn:
        return list(conn.execute(select(table)).all())


def _study(a: Archive, n: int = 2) -> list[IngestResult]:
    study, series = generate_uid(), generate_uid()
    return [_ingest(a, study=study, series=series, seed=i) for i in range(n)]


def test_soft_delete_moves_released_blobs_to_the_trash(arc: Archive) -> None:
    index = arc.index
    recs = _study(arc)
    other = _ingest(arc, seed=9)
    keys = sorted(r.blob.key for r in recs)
    trashed = index.soft_delete(study_uid=recs[0].study_uid, purge_after=LATER, deletion=WHO)
    assert sorted(b.key for b in trashed) == keys

    # gone from every query, counters included
    assert index.instances(study_uid=recs[0].study_uid) == []
    assert index.study_facts(recs[0].study_uid) is None
    assert index.stats().instances == 1
    # … but referenced for every blob decision, copies kept, nothing pending
    assert all(index.blob_referenced(k) for k in keys)
    assert _rows(arc, blob_removals) == []
    claim = index.claim_blob_removals(keys, stale_after=300, unreferenced_found=True)
    assert claim.keys == () and sorted(claim.referenced) == keys
    assert _rows(arc, blob_removals) == [], "a refused claim leaves nothing behind"
    assert sorted(index.blob_copies(keys)) == keys
    assert {b.key for _, b in index.iter_blob_refs()} == {*keys, other.blob.key}
    walked = {(sop, b.key) for sop, b, _ in index.iter_blob_copies("default")}
    assert walked == {(r.sop_instance_uid, r.blob.key) for r in [*recs, other]}
    assert index.add_blob_copy(keys[0], "elsewhere", verified_at=datetime.now(UTC), present=lambda: True)

    items = index.trash_items(study_uid=recs[0].study_uid)
    assert sorted(i.blob.key for i in items) == keys
    item = items[0]
    assert (item.study_uid, item.deleted_by, item.reason, item.superseded) == (recs[0].study_uid, "alice", "test",
                                                                               False)
    assert abs((item.purge_after - LATER).total_seconds()) < 1
    assert {i.sop_uid for i in items} == {r.sop_instance_uid for r in recs}
    assert index.trash_items(sop_uid=recs[1].sop_instance_uid)[0].blob == recs[1].blob
    [entry] = index.deletion_log()
    assert (entry.action, entry.study_uid, entry.series_uid, entry.instances, entry.by) == (
        DeletionAction.SOFT_DELETE, recs[0].study_uid, None, 2, "alice")


def test_purge_records_pending_removals_when_due(arc: Archive) -> None:
    index = arc.index
    recs = _study(arc)
    keys = sorted(r.blob.key for r in recs)
    index.soft_delete(study_uid=recs[0].study_uid, purge_after=LATER, deletion=WHO)
    assert index.trash_due(now=datetime.now(UTC), limit=10) == []
    assert index.purge_trash(keys, due_at=datetime.now(UTC), deletion=WHO).purged == 0, "not due"
    assert sorted(index.trash_due(now=LATER + timedelta(seconds=1), limit=10)) == keys

    batch = index.purge_trash(keys, due_at=LATER + timedelta(seconds=1), deletion=Deletion("system", "grace"))
    assert (batch.purged, sorted(batch.remove), batch.referenced) == (2, keys, ())
    assert index.trash_items() == []
    assert sorted(r.key for r in _rows(arc, blob_removals)) == keys
    assert not any(index.blob_referenced(k) for k in keys)
    claim = index.claim_blob_removals(keys, stale_after=300)
    assert sorted(claim.keys) == keys
    entry = index.deletion_log()[0]
    assert (entry.action, entry.instances, entry.by) == (DeletionAction.PURGE, 2, "system")
    assert index.purge_trash(keys, due_at=None, deletion=WHO).purged == 0, "purged twice: nothing left"


def test_purge_keeps_a_blob_that_was_sent_again(arc: Archive) -> None:
    index = arc.index
    [rec] = _study(arc, 1)
    index.soft_delete(study_uid=rec.study_uid, purge_after=LATER, deletion=WHO)
    again = _resend(arc, rec)
    assert again.blob.key == rec.blob.key and again.sop_instance_uid == rec.sop_instance_uid
    batch = index.purge_trash([rec.blob.key], due_at=None, deletion=WHO)
    assert (batch.purged, batch.remove, batch.referenced) == (1, (), (rec.blob.key,))
    assert _rows(arc, blob_removals) == [] and index.trash_items() == []
    assert index.instances(study_uid=rec.study_uid)[0].blob.key == rec.blob.key


def test_a_delete_of_an_object_sent_again_leaves_its_blob_in_the_trash(arc: Archive) -> None:
    """Trashed, sent again, deleted for good: the key stays referenced by the trash (no pending removal), and a
    second soft delete trashes it again with the new times."""
    index = arc.index
    [rec] = _study(arc, 1)
    index.soft_delete(study_uid=rec.study_uid, purge_after=LATER, deletion=WHO)
    _resend(arc, rec)
    assert index.delete(study_uid=rec.study_uid, deletion=Deletion("bob")) == []
    assert _rows(arc, blob_removals) == [] and [i.blob.key for i in index.trash_items()] == [rec.blob.key]
    _resend(arc, rec)
    later = LATER + timedelta(days=3)
    assert [b.key for b in index.soft_delete(study_uid=rec.study_uid, purge_after=later,
                                             deletion=Deletion("carol"))] == [rec.blob.key]
    [item] = index.trash_items()
    assert item.deleted_by == "carol" and abs((item.purge_after - later).total_seconds()) < 1
    assert [(e.action, e.by) for e in index.deletion_log(study_uid=rec.study_uid)] == [
        (DeletionAction.SOFT_DELETE, "carol"), (DeletionAction.DELETE, "bob"), (DeletionAction.SOFT_DELETE, "alice")]


def test_restore_is_an_ingest_then_untrash(arc: Archive) -> None:
    index = arc.index
    recs = _study(arc)
    index.soft_delete(study_uid=recs[0].study_uid, series_uid=recs[0].series_uid, purge_after=LATER, deletion=WHO)
    first = recs[0].blob.key
    arc.ingest.ingest(arc.blobs.open(first), source="restore")
    n = index.untrash_restored([first, recs[1].blob.key], study_uid=recs[0].study_uid, series_uid=None, sop_uid=None,
                               instances_count=1, deletion=Deletion("cli:op"))
    assert n == 1, "only the key an instance references again leaves the trash"
    assert [i.blob.key for i in index.trash_items()] == [recs[1].blob.key]
    assert [r.sop_uid for r in index.instances(study_uid=recs[0].study_uid)] == [recs[0].sop_instance_uid]
    entry = index.deletion_log()[0]
    assert (entry.action, entry.instances, entry.by) == (DeletionAction.RESTORE, 1, "cli:op")


def test_prior_versions_are_trashed_as_superseded(tmp_path: Path, any_index_url: str) -> None:
    a = _archive(tmp_path, any_index_url, DuplicatePolicy.KEEP_BOTH)
    try:
        study, series, sop = generate_uid(), generate_uid(), generate_uid()
        old = _ingest(a, study=study, series=series, sop=sop, seed=1)
        new = _ingest(a, study=study, series=series, sop=sop, seed=2)
        a.index.soft_delete(study_uid=study, purge_after=LATER, deletion=WHO)
        flags = {i.blob.key: i.superseded for i in a.index.trash_items(study_uid=study)}
        assert flags == {old.blob.key: True, new.blob.key: False}
        assert a.index.deletion_log()[0].instances == 1
    finally:
        a.close()


def test_an_immediate_delete_is_logged(arc: Archive) -> None:
    rec = _ingest(arc, seed=3)
    arc.index.delete(study_uid=rec.study_uid, sop_uid=rec.sop_instance_uid, deletion=Deletion("dave", "why"))
    arc.index.delete(study_uid=rec.study_uid)  # nothing left: no row
    [row] = _rows(arc, deletion_log)
    assert (row.action, row.by, row.reason, row.sop_uid, row.instances) == ("delete", "dave", "why",
                                                                           rec.sop_instance_uid, 1)


def test_studies_matching_selects_every_matching_study(arc: Archive) -> None:
    old = _ingest(arc, seed=1, StudyDate="20000101")
    _ingest(arc, seed=2, StudyDate=datetime.now(UTC).strftime("%Y%m%d"))
    got = arc.index.studies_matching(StudyCondition(study_age_days=365), now=datetime.now(UTC))
    assert [c.study_uid for c in got] == [old.study_uid]


def test_migration_0009_from_0008(tmp_path: Path, any_index_url: str) -> None:
    a = _archive(tmp_path, any_index_url)
    try:
        keep = _ingest(a, seed=1)
        gone = _ingest(a, seed=2)
        a.index.soft_delete(study_uid=gone.study_uid, purge_after=LATER, deletion=WHO)
    finally:
        a.close()
    engine = create_index_engine(any_index_url)
    try:
        command.downgrade(alembic_config(engine), "0008")
        names = inspect(engine).get_table_names()
        assert "trash" not in names and "deletion_log" not in names
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM instances")).scalar_one() == 1
        migrate(engine)
        with engine.connect() as conn:
            assert conn.execute(select(trash)).all() == [] and conn.execute(select(deletion_log)).all() == []
            assert conn.execute(text("SELECT count(*) FROM instances")).scalar_one() == 1
    finally:
        engine.dispose()
    b = _archive(tmp_path, any_index_url)
    try:
        assert [r.sop_uid for r in b.index.instances(study_uid=keep.study_uid)] == [keep.sop_instance_uid]
        b.index.soft_delete(study_uid=keep.study_uid, purge_after=LATER, deletion=WHO)
        assert len(b.index.trash_items()) == 1
    finally:
        b.close()
