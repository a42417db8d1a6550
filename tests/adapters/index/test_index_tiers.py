"""The index side of storage tiers (``adapters.index.tiers``), on SQLite and PostgreSQL (``any_index_url``).

Copies recorded by ingest on both store paths (the plain-DBAPI hot path and the Core path), the add/drop
protocol a tier move relies on (the last copy is never dropped, also by two drops at once), the lifecycle
selection (``studies_needing``) condition by condition and for copy and move targets, read times, usage, the
paged walks, removal forgetting copies, migration 0008's backfill of an index written at revision 0007, and
``index migrate`` copying the new table and column.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from pydicom.uid import generate_uid
from sqlalchemy import Engine, delete, inspect, select, text

from dicomvault.adapters.index import tiers
from dicomvault.adapters.index.engine import alembic_config, create_index_engine, migrate
from dicomvault.adapters.index.tables import blob_copies, instance_versions, instances, series, studies
from dicomvault.adapters.index.times import aware
from dicomvault.adapters.index.transfer import copy_index
from dicomvault.bootstrap import Archive
from dicomvault.domain.records import BlobInfo, DuplicatePolicy, StoreOutcome
from tests.adapters.index.tiers_support import (
    ARCHIVE,
    COPY,
    EVERY_STUDY,
    _add,
    _archive,
    _drop,
    _entry,
    _index,
    _ingest,
    _stores,
)
from tests.helpers import make_ct

# -- ingest records copies -------------------------------------------------------------------------------------

def test_ingest_records_the_copy_on_the_store_it_wrote(arc: Archive, store_path: str) -> None:
    index = arc.index
    wrote = _entry(arc, make_ct(seed=1), store="fast")
    assert index.store_instance(wrote, DuplicatePolicy.REJECT).outcome == StoreOutcome.STORED
    assert _stores(arc, wrote.blob.key) == [("fast", True)], "written and hashed by ingest: verified"

    found = _entry(arc, make_ct(seed=2), created=False)
    index.store_instance(found, DuplicatePolicy.REJECT)
    assert _stores(arc, found.blob.key) == [("default", False)], "bytes found in place, no copy recorded yet"


def test_a_put_that_found_bytes_copied_elsewhere_records_nothing(arc: Archive, store_path: str) -> None:
    """A tier move left the blob on ``archive`` only; the instance is deleted (removal pending, copies kept) and
    sent again: a put that found bytes on ``default`` (about to be deleted by the move) must not record them."""
    index = arc.index
    data = make_ct(seed=3)
    entry = _entry(arc, data)
    index.store_instance(entry, DuplicatePolicy.REJECT)
    key = entry.blob.key
    assert _add(index, key, ARCHIVE, verified_at=datetime.now(UTC))
    assert _drop(index, key, "default")
    [released] = index.delete(study_uid=entry.study["study_uid"])
    assert released.key == key and _stores(arc, key) == [(ARCHIVE, True)]

    again = dataclasses.replace(_entry(arc, data), blob_created=False)
    assert index.store_instance(again, DuplicatePolicy.REJECT).outcome == StoreOutcome.STORED
    assert _stores(arc, key) == [(ARCHIVE, True)]
    assert index.blob_removal_round(key) is None, "the pending removal was cancelled by the store"

    index.delete(study_uid=entry.study["study_uid"])
    rewritten = _entry(arc, data)  # this time the put wrote the bytes: recorded
    index.store_instance(rewritten, DuplicatePolicy.REJECT)
    assert _stores(arc, key) == [(ARCHIVE, True), ("default", True)]


@pytest.mark.parametrize(("policy", "outcome"), [
    (DuplicatePolicy.REPLACE, StoreOutcome.REPLACED),
    (DuplicatePolicy.KEEP_BOTH, StoreOutcome.VERSIONED),
])
def test_replaced_and_versioned_stores_record_the_new_copy(
    tmp_path: Path, any_index_url: str, policy: DuplicatePolicy, outcome: StoreOutcome
) -> None:
    a = _archive(tmp_path, any_index_url, policy)
    try:
        sop, study = generate_uid(), generate_uid()
        first = _entry(a, make_ct(sop=sop, study=study, seed=1))
        a.index.store_instance(first, policy)
        assert a.index.store_instance(first, policy).outcome == StoreOutcome.DUPLICATE
        assert _stores(a, first.blob.key) == [("default", True)], "a duplicate adds nothing"
        second = _entry(a, make_ct(sop=sop, study=study, seed=2), store="fast")
        assert a.index.store_instance(second, policy).outcome == outcome
        assert _stores(a, second.blob.key) == [("fast", True)]
        # the old blob keeps its copy: a prior version references it, or its removal is pending (its deleter
        # forgets the copy when it finishes)
        assert _stores(a, first.blob.key) == [("default", True)]
        blobs = a.index.study_blobs(study)
        expected = {(sop, second.blob.key, ("fast",))}
        if policy == DuplicatePolicy.KEEP_BOTH:
            expected.add((sop, first.blob.key, ("default",)))
        assert {(b.sop_uid, b.blob.key, b.stores) for b in blobs} == expected
        assert blobs[0].blob == second.blob, "current instances first, then prior versions"
    finally:
        a.close()


# -- add and drop ----------------------------------------------------------------------------------------------

def test_add_and_drop_copies(tmp_path: Path, any_index_url: str) -> None:
    a = _archive(tmp_path, any_index_url, DuplicatePolicy.KEEP_BOTH)
    try:
        index = a.index
        at = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
        asked: list[str] = []

        def present() -> bool:
            asked.append("present")
            return True

        assert not index.add_blob_copy("0" * 64, ARCHIVE, verified_at=at, present=present), "unreferenced key"
        assert index.blob_copies(["0" * 64]) == {} and asked == [], "the store is not asked in vain"

        sop = generate_uid()
        old = _entry(a, make_ct(sop=sop, seed=1))
        index.store_instance(old, DuplicatePolicy.KEEP_BOTH)
        index.store_instance(_entry(a, make_ct(sop=sop, seed=2)), DuplicatePolicy.KEEP_BOTH)
        key = old.blob.key  # referenced by a prior version only now
        assert not _add(index, key, ARCHIVE, verified_at=at, present=False), "bytes not on the store"
        assert _stores(a, key) == [("default", True)]
        assert index.add_blob_copy(key, ARCHIVE, verified_at=at, present=present) and asked == ["present"]
        [archive, default] = index.blob_copies([key])[key]
        assert (archive.store, archive.verified_at, default.store) == (ARCHIVE, at, "default")
        later = at + timedelta(days=1)
        assert _add(index, key, ARCHIVE, verified_at=later)
        assert index.blob_copies([key])[key][0].verified_at == later, "a second add refreshes the time"

        deleted: list[str] = []
        assert not _drop(index, key, "nowhere", deleted), "nothing recorded there: nothing to drop"

        def failing() -> None:
            raise OSError("store unreachable")

        with pytest.raises(OSError):
            index.drop_blob_copy(key, "default", delete=failing)
        assert _stores(a, key) == [(ARCHIVE, True), ("default", True)], "a failed delete keeps the record"
        assert _drop(index, key, "default", deleted) and deleted == ["default"]
        assert not _drop(index, key, ARCHIVE, deleted), "the last copy is never dropped"
        assert deleted == ["default"], "bytes are deleted only when the record went"
        assert _stores(a, key) == [(ARCHIVE, True)]
        assert not _drop(index, "0" * 64, ARCHIVE, deleted)
    finally:
        a.close()


def _two_copies(a: Archive, seed: int) -> str:
    entry = _entry(a, make_ct(seed=seed))
    a.index.store_instance(entry, DuplicatePolicy.REJECT)
    assert _add(a.index, entry.blob.key, ARCHIVE, verified_at=datetime.now(UTC))
    return entry.blob.key


def _lock_copies(engine: Engine, key: str) -> Any:
    """A transaction holding what a drop of ``key`` must wait for (PostgreSQL: its copy rows; SQLite: the
    database's write lock)."""
    conn = engine.connect()
    if engine.dialect.name == "postgresql":
        conn.begin()
        conn.execute(select(blob_copies.c.store).where(blob_copies.c.key == key).with_for_update()).all()
    else:
        conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        conn.begin()
    return conn


def test_two_concurrent_drops_never_remove_both_copies(arc: Archive) -> None:
    """Both drops wait behind a transaction holding the key's copies, then run against each other: exactly one
    succeeds. Then rounds without a blocker, the two drops released together by a barrier."""
    index = _index(arc)
    key = _two_copies(arc, 10)
    blocker = _lock_copies(index.engine, key)
    results: dict[str, bool] = {}

    def drop(store: str, barrier: threading.Barrier | None = None) -> None:
        if barrier is not None:
            barrier.wait()
        results[store] = _drop(index, key, store)

    threads = [threading.Thread(target=drop, args=(s,)) for s in ("default", ARCHIVE)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    assert not results, "both drops wait for the transaction holding the copies"
    blocker.commit()
    blocker.close()
    for t in threads:
        t.join(20)
    assert sorted(results.values()) == [False, True]
    assert len(_stores(arc, key)) == 1

    for n in range(10):
        key = _two_copies(arc, 100 + n)
        results.clear()
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=drop, args=(s, barrier)) for s in ("default", ARCHIVE)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert sorted(results.values()) == [False, True], n
        assert len(_stores(arc, key)) == 1


def test_a_drop_waits_for_an_add_in_progress(arc: Archive) -> None:
    """An add asking ``present()`` holds the key's copy rows: a drop of the same key waits, then decides on what
    the add recorded (here: the add's copy lets the drop go)."""
    index = arc.index
    entry = _entry(arc, make_ct(seed=20))
    index.store_instance(entry, DuplicatePolicy.REJECT)
    key = entry.blob.key
    asking, answer = threading.Event(), threading.Event()
    results: dict[str, bool] = {}

    def present() -> bool:
        asking.set()
        answer.wait(20)
        return True

    def add() -> None:
        results["add"] = index.add_blob_copy(key, ARCHIVE, verified_at=datetime.now(UTC), present=present)

    def drop() -> None:
        results["drop"] = _drop(index, key, "default")

    adder = threading.Thread(target=add)
    adder.start()
    assert asking.wait(20)
    dropper = threading.Thread(target=drop)
    dropper.start()
    time.sleep(0.5)
    assert "drop" not in results, "the drop waits for the add"
    answer.set()
    adder.join(20)
    dropper.join(20)
    assert results == {"add": True, "drop": True}
    assert _stores(arc, key) == [(ARCHIVE, True)]


# -- reads, usage, walks ---------------------------------------------------------------------------------------

def test_note_study_reads(arc: Archive) -> None:
    index = _index(arc)
    uids = [_ingest(arc, seed=n).study_uid for n in range(3)]
    at = datetime(2025, 6, 7, 8, 9, 10, tzinfo=UTC)
    unknown = [generate_uid() for _ in range(1200)]  # more than two IN lists of 500
    index.note_study_reads([*unknown[:600], uids[0], *unknown[600:], uids[2], uids[0]], at)
    index.note_study_reads([], at)
    with index.engine.connect() as conn:
        got = dict(conn.execute(select(studies.c.study_uid, studies.c.last_read_at)).all())
    assert got[uids[1]] is None
    assert {aware(got[uids[0]]), aware(got[uids[2]])} == {at}
    assert index.metadata_version(study_uid=uids[0]) is not None


def test_store_usage(tmp_path: Path, any_index_url: str) -> None:
    a = _archive(tmp_path, any_index_url, DuplicatePolicy.KEEP_BOTH)
    try:
        index = a.index
        assert index.store_usage() == []
        sop, study = generate_uid(), generate_uid()
        r1 = _ingest(a, study=study, sop=sop, seed=1)
        r2 = _ingest(a, study=study, sop=sop, seed=2)  # r1's bytes: a prior version, counted too
        r3 = _ingest(a, study=study, Modality="MR", seed=3)
        r4 = _ingest(a, Modality="MR", seed=4, rows=32)
        gone = _ingest(a, Modality="US", seed=5)
        index.delete(study_uid=gone.study_uid)  # its copy row stays until its removal finishes: not counted
        assert _add(index, r3.blob.key, ARCHIVE, verified_at=datetime.now(UTC))
        usage = {u.store: u for u in index.store_usage()}
        assert sorted(usage) == [ARCHIVE, "default"]
        default = usage["default"]
        assert (default.studies, default.copies) == (2, 4)
        assert default.bytes == sum(r.blob.size for r in (r1, r2, r3, r4))
        assert default.by_modality == {"CT": (2, r1.blob.size + r2.blob.size),
                                       "MR": (2, r3.blob.size + r4.blob.size)}
        arch = usage[ARCHIVE]
        assert (arch.studies, arch.copies, arch.bytes, arch.by_modality) == (
            1, 1, r3.blob.size, {"MR": (1, r3.blob.size)})
    finally:
        a.close()


def test_iter_blob_copies_walks_a_store_in_key_order_by_pages(
    tmp_path: Path, any_index_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tiers, "PAGE", 2)
    a = _archive(tmp_path, any_index_url, DuplicatePolicy.KEEP_BOTH)
    try:
        index = a.index
        results = [_ingest(a, seed=n) for n in range(5)]
        prior = _ingest(a, sop=results[0].sop_instance_uid, study=results[0].study_uid, seed=50)
        gone = _ingest(a, seed=60)
        index.delete(study_uid=gone.study_uid)  # copy row without a reference: skipped
        for r in results[1:4]:
            assert _add(index, r.blob.key, ARCHIVE, verified_at=datetime.now(UTC))
        walked = list(index.iter_blob_copies("default"))
        expected = sorted([(r.sop_instance_uid, r.blob) for r in [*results, prior]], key=lambda p: p[1].key)
        assert [(sop, blob) for sop, blob, _ in walked] == expected
        stores = {blob.key: copies for _, blob, copies in walked}
        assert stores[results[1].blob.key] == (ARCHIVE, "default")
        assert stores[results[0].blob.key] == ("default",)
        assert [blob.key for _, blob, _ in index.iter_blob_copies(ARCHIVE)] == sorted(
            r.blob.key for r in results[1:4])
        assert list(index.iter_blob_copies("nowhere")) == []
    finally:
        a.close()


def test_iter_uncopied_blobs(tmp_path: Path, any_index_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An index row whose blob has no copy recorded (written by a node predating copies) is listed, prior
    versions included, across pages."""
    monkeypatch.setattr(tiers, "PAGE", 2)
    a = _archive(tmp_path, any_index_url, DuplicatePolicy.KEEP_BOTH)
    try:
        index = _index(a)
        results = [_ingest(a, seed=n) for n in range(6)]
        prior_of = _ingest(a, sop=results[5].sop_instance_uid, study=results[5].study_uid, seed=50)
        assert list(index.iter_uncopied_blobs()) == []
        lost = [results[0], results[3], results[4]]
        with index.engine.begin() as conn:
            conn.execute(delete(blob_copies).where(blob_copies.c.key.in_(
                [r.blob.key for r in lost] + [results[5].blob.key])))
        assert list(index.iter_uncopied_blobs()) == [
            *[(r.sop_instance_uid, r.blob) for r in lost],
            (results[5].sop_instance_uid, results[5].blob),  # the prior version, listed after the instances
        ]
        assert prior_of.blob.key not in {b.key for _, b in index.iter_uncopied_blobs()}
    finally:
        a.close()


# -- removal forgets copies ------------------------------------------------------------------------------------

def test_finished_removal_forgets_the_copies(arc: Archive) -> None:
    index = arc.index
    kept = _ingest(arc, seed=1)
    r = _ingest(arc, seed=2)
    other = _ingest(arc, seed=3)
    assert _add(index, r.blob.key, ARCHIVE, verified_at=datetime.now(UTC))
    index.delete(study_uid=r.study_uid)
    index.delete(study_uid=other.study_uid)
    claim = index.claim_blob_removals([r.blob.key], stale_after=300)
    assert claim.keys == (r.blob.key,)
    assert len(_stores(arc, r.blob.key)) == 2, "claimed, not finished: the copies stay"
    index.finish_blob_removals(claim.claim, [r.blob.key, other.blob.key])  # other: not this claim's
    assert index.blob_copies([r.blob.key, other.blob.key, kept.blob.key]) == {
        other.blob.key: index.blob_copies([other.blob.key])[other.blob.key],
        kept.blob.key: index.blob_copies([kept.blob.key])[kept.blob.key],
    }
    assert _stores(arc, other.blob.key) == [("default", True)]


# -- migration 0008 and index migrate --------------------------------------------------------------------------

def test_migration_0008_backfills_copies_of_an_index_at_0007(tmp_path: Path, any_index_url: str) -> None:
    """An index holding instances and prior versions is taken back to revision 0007 (the table and the column
    go; nothing else changes), then upgraded: every distinct referenced key gets one unverified 'default' copy."""
    a = _archive(tmp_path, any_index_url, DuplicatePolicy.KEEP_BOTH)
    try:
        sop, study = generate_uid(), generate_uid()
        refs = [_ingest(a, study=study, sop=sop, seed=1), _ingest(a, study=study, sop=sop, seed=2)]
        refs += [_ingest(a, study=study, seed=n) for n in range(3, 6)]
        a.index.note_study_reads([study], datetime.now(UTC))
    finally:
        a.close()
    engine = create_index_engine(any_index_url)
    try:
        def counts() -> tuple[int, ...]:
            with engine.connect() as conn:
                return tuple(conn.execute(text(f"SELECT count(*) FROM {t.name}")).scalar_one()
                             for t in (studies, series, instances, instance_versions))

        before = counts()
        assert before == (1, 4, 4, 1)
        command.downgrade(alembic_config(engine), "0007")
        schema = inspect(engine)
        assert "blob_copies" not in schema.get_table_names()
        assert "last_read_at" not in {c["name"] for c in schema.get_columns("studies")}
        assert counts() == before, "the downgrade leaves every other row in place (no cascading table rebuild)"
        migrate(engine)
        with engine.connect() as conn:
            rows = sorted(conn.execute(select(blob_copies)).all())
            read = conn.execute(select(studies.c.last_read_at)).scalar_one()
        assert rows == sorted((r.blob.key, "default", None) for r in refs)
        assert read is None
        assert counts() == before
    finally:
        engine.dispose()
    b = _archive(tmp_path, any_index_url)
    try:
        assert list(b.index.iter_uncopied_blobs()) == []
        assert {c.study_uid for c in b.index.studies_needing(EVERY_STUDY, COPY, now=datetime.now(UTC))} == {study}
    finally:
        b.close()


def test_index_migrate_copies_copies_and_read_times(tmp_path: Path, any_index_url: str) -> None:
    a = _archive(tmp_path, any_index_url)
    try:
        r = _ingest(a, seed=1)
        assert _add(a.index, r.blob.key, ARCHIVE, verified_at=datetime(2025, 1, 2, tzinfo=UTC))
        at = datetime(2025, 2, 3, 4, 5, 6, tzinfo=UTC)
        a.index.note_study_reads([r.study_uid], at)
        source = _index(a).engine
        target = create_index_engine(f"sqlite:///{tmp_path / 'target.sqlite'}")
        try:
            migrate(target)
            counts = copy_index(source, target)
            assert counts["blob_copies"] == 2
            with target.connect() as conn:
                copies = sorted((k, s, aware(v)) for k, s, v in conn.execute(select(blob_copies)))
                read = aware(conn.execute(select(studies.c.last_read_at)).scalar_one())
            assert copies[0][:2] == (r.blob.key, ARCHIVE) and copies[0][2] == datetime(2025, 1, 2, tzinfo=UTC)
            assert copies[1][:2] == (r.blob.key, "default")
            assert read == at
        finally:
            target.dispose()
    finally:
        a.close()


def test_blob_info_of_copies_matches_instances(arc: Archive) -> None:
    """``study_blobs`` answers the instance's blob as the index holds it."""
    r = _ingest(arc, seed=1)
    [blob] = arc.index.study_blobs(r.study_uid)
    assert blob.blob == BlobInfo(r.blob.key, r.blob.size, r.blob.sha256) and blob.sop_uid == r.sop_instance_uid
    assert arc.index.study_blobs(generate_uid()) == []
    with _index(arc).engine.connect() as conn:
        assert conn.execute(select(series.c.modality)).scalar_one() == "CT"
