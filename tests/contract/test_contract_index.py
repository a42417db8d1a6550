"""The IndexRepository contract, run identically on SQLite and PostgreSQL (``any_index_url``)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from dicomvault.bootstrap import Archive, build_archive
from dicomvault.domain.errors import BlobRemovalRace, Conflict, Unavailable
from dicomvault.domain.records import BlobClaim, BlobInfo, DuplicatePolicy, InstanceEntry, StoreOutcome
from dicomvault.domain.tags import Level
from dicomvault.services.fixity import FixityService
from dicomvault.services.ingest import IngestResult, IngestService
from dicomvault.services.lifecycle import BlobRemover
from dicomvault.settings import Settings
from tests.helpers import make_ct


def _archive(tmp_path: Path, url: str, policy: DuplicatePolicy = DuplicatePolicy.REJECT) -> Archive:
    return build_archive(Settings.load(data_dir=tmp_path / "v", index_url=url, storage_url="memory://",
                                       duplicate_policy=policy))


@pytest.fixture
def arc(tmp_path: Path, any_index_url: str) -> Iterator[Archive]:
    a = _archive(tmp_path, any_index_url)
    yield a
    a.close()


def store(a: Archive, **kw: object) -> str:
    return a.ingest.ingest(io.BytesIO(make_ct(**kw)), source="contract").sop_instance_uid  # type: ignore[arg-type]


def find(a: Archive, level: Level, **keys: str) -> list[dict]:  # type: ignore[type-arg]
    return a.query.search(a.query.build_spec(level, keys))


def first_values(rows: list[dict], tag: str) -> list:  # type: ignore[type-arg]
    return sorted((r[tag]["Value"][0] if "Value" in r.get(tag, {}) else None) for r in rows)


@pytest.fixture
def loaded(arc: Archive) -> tuple[Archive, dict[str, str]]:
    """Three patients, four studies, six series, twelve instances with varied, matchable attributes."""
    plan = [
        # key, PatientID, PatientName, StudyDate, Modality per series, description, accession, referring
        ("a", "PAT-001", "Müller^Hans", "20200105", ("CT", "SR"), "Chest CT low dose", "ACC1001", "House^Greg"),
        ("b", "PAT-001", "Müller^Hans", "20210610", ("MR",), "Brain MR", "ACC1002", "Wilson^James"),
        ("c", "PAT-002", "Smith^Anna", "20220101", ("CT", "CT"), "Abdomen", "XY-77", "House^Greg"),
        ("d", "ID-777", "O'Brien^Sean", "20230315", ("US",), "Liver US", "ACC2001", ""),
    ]
    studies: dict[str, str] = {}
    for key, pid, name, date, mods, desc, acc, ref in plan:
        study = generate_uid()
        studies[key] = study
        for n, mod in enumerate(mods):
            series = generate_uid()
            for i in range(2):
                store(arc, study=study, series=series, PatientID=pid, PatientName=name, StudyDate=date,
                      Modality=mod, StudyDescription=desc, AccessionNumber=acc, ReferringPhysicianName=ref,
                      SeriesNumber=n + 1, InstanceNumber=i + 1, SeriesDescription=f"{desc} series {n + 1}",
                      seed=i)
    return arc, studies


def test_counters_and_stats(loaded: tuple[Archive, dict[str, str]]) -> None:
    a, studies = loaded
    st = a.index.stats()
    assert (st.patients, st.studies, st.series, st.instances) == (3, 4, 6, 12)
    assert st.by_modality["CT"][0] == 6 and st.by_modality["MR"][0] == 2
    [pat] = find(a, Level.PATIENT, PatientID="PAT-001")
    assert [pat[t]["Value"][0] for t in ("00201200", "00201202", "00201204")] == [2, 3, 6]
    [c] = find(a, Level.STUDY, StudyInstanceUID=studies["c"])
    assert c["00201206"]["Value"] == [2] and c["00201208"]["Value"] == [4]
    assert c["00080061"]["Value"] == ["CT"]
    [sa] = find(a, Level.STUDY, StudyInstanceUID=studies["a"])
    assert sorted(sa["00080061"]["Value"]) == ["CT", "SR"]


@pytest.mark.parametrize(("keys", "expected"), [
    ({"PatientID": "PAT-001"}, 2),                    # single value
    ({"PatientID": "PAT-*"}, 3),                      # prefix wildcard
    ({"PatientID": "*-777"}, 1),                      # suffix wildcard
    ({"PatientID": "*T-00?"}, 3),                     # infix + ?
    ({"PatientID": "pat-001"}, 0),                    # LO is case-sensitive
    ({"PatientName": "muller*"}, 2),                  # PN: case- and accent-insensitive
    ({"PatientName": "*bri?n*"}, 1),
    ({"AccessionNumber": "ACC1*"}, 2),
    ({"AccessionNumber": "*77"}, 1),
    ({"StudyDescription": "*dose*"}, 1),
    ({"ReferringPhysicianName": "*house*"}, 2),
    ({"StudyDate": "20210101-20221231"}, 2),          # closed range
    ({"StudyDate": "-20201231"}, 1),                  # open start
    ({"StudyDate": "20230101-"}, 1),                  # open end
    ({"ModalitiesInStudy": "CT"}, 2),
    ({"ModalitiesInStudy": "MR\\US"}, 2),             # multi-value
    ({"Modality": "SR"}, 1),                          # attribute below the level (EXISTS)
    ({"SeriesDescription": "*series 2"}, 2),
])
def test_study_matching(loaded: tuple[Archive, dict[str, str]], keys: dict[str, str], expected: int) -> None:
    a, _ = loaded
    assert len(find(a, Level.STUDY, **keys)) == expected


def test_uid_list_and_levels(loaded: tuple[Archive, dict[str, str]]) -> None:
    a, studies = loaded
    rows = find(a, Level.STUDY, StudyInstanceUID=f"{studies['a']}\\{studies['d']}")
    assert first_values(rows, "0020000D") == sorted([studies["a"], studies["d"]])
    assert len(find(a, Level.SERIES, StudyInstanceUID=studies["c"])) == 2
    assert len(find(a, Level.IMAGE, StudyInstanceUID=studies["c"], Modality="CT")) == 4
    assert len(find(a, Level.PATIENT, PatientName="*")) == 3


def test_paging_is_stable(loaded: tuple[Archive, dict[str, str]]) -> None:
    a, _ = loaded
    spec_all = a.query.build_spec(Level.IMAGE, {})
    everything = a.query.search(spec_all)
    pages = [a.query.search(a.query.build_spec(Level.IMAGE, {}, limit=5, offset=o)) for o in (0, 5, 10)]
    assert [len(p) for p in pages] == [5, 5, 2]
    uid = "00080018"
    assert [r[uid]["Value"][0] for p in pages for r in p] == [r[uid]["Value"][0] for r in everything]


def test_delete_cascades_and_releases_blobs(loaded: tuple[Archive, dict[str, str]]) -> None:
    a, studies = loaded
    one_sop = a.index.instances(study_uid=studies["b"])[0].sop_uid
    released = a.index.delete(study_uid=studies["b"], sop_uid=one_sop)
    assert len(released) == 1
    [pat] = find(a, Level.PATIENT, PatientID="PAT-001")
    assert pat["00201204"]["Value"] == [5]
    released = a.index.delete(study_uid=studies["b"])
    assert len(released) == 1
    [pat] = find(a, Level.PATIENT, PatientID="PAT-001")
    assert [pat[t]["Value"][0] for t in ("00201200", "00201202", "00201204")] == [1, 2, 4]
    for key in ("a",):
        a.index.delete(study_uid=studies[key])
    assert find(a, Level.PATIENT, PatientID="PAT-001") == [], "a patient left without studies is removed"
    st = a.index.stats()
    assert (st.patients, st.studies, st.series, st.instances) == (2, 2, 3, 6)
    assert a.index.delete(study_uid=generate_uid()) == []


def test_iter_blob_refs_and_lookups(loaded: tuple[Archive, dict[str, str]]) -> None:
    a, _ = loaded
    refs = list(a.index.iter_blob_refs())
    assert len(refs) == 12 and len({b.key for _, b in refs}) == 12
    sop, blob = refs[0]
    assert a.index.instance_checksum(sop) == blob.sha256
    assert a.index.blob_referenced(blob.key)
    assert not a.index.blob_referenced("0" * 64)
    assert a.index.instance_checksum(generate_uid()) is None
    assert a.index.representative_metadata(study_uid=a.index.instances(sop_uids=[sop])[0].study_uid)
    a.index.ping()


@pytest.mark.parametrize(("policy", "outcome", "refs"), [
    (DuplicatePolicy.REJECT, None, 1),
    (DuplicatePolicy.REPLACE, StoreOutcome.REPLACED, 1),
    (DuplicatePolicy.KEEP_BOTH, StoreOutcome.VERSIONED, 2),
])
def test_duplicate_policies(
    tmp_path: Path, any_index_url: str, policy: DuplicatePolicy, outcome: StoreOutcome | None, refs: int
) -> None:
    a = _archive(tmp_path, any_index_url, policy)
    try:
        sop, study, series = generate_uid(), generate_uid(), generate_uid()
        first = make_ct(sop=sop, study=study, series=series, seed=1)
        assert a.ingest.ingest(io.BytesIO(first)).outcome == StoreOutcome.STORED
        assert a.ingest.ingest(io.BytesIO(first)).outcome == StoreOutcome.DUPLICATE
        second = make_ct(sop=sop, study=study, series=series, seed=2)
        if outcome is None:
            with pytest.raises(Conflict):
                a.ingest.ingest(io.BytesIO(second))
        else:
            assert a.ingest.ingest(io.BytesIO(second)).outcome == outcome
        assert len(list(a.index.iter_blob_refs())) == refs
        st = a.index.stats()
        assert (st.studies, st.series, st.instances) == (1, 1, 1), "counters are not doubled by a duplicate"
        [row] = find(a, Level.STUDY, StudyInstanceUID=study)
        assert row["00201208"]["Value"] == [1]
        if policy == DuplicatePolicy.KEEP_BOTH:
            released = a.index.delete(study_uid=study)
            assert len(released) == 2, "deleting the instance releases its prior versions too"
    finally:
        a.close()


def test_replace_blob_key(loaded: tuple[Archive, dict[str, str]]) -> None:
    a, _ = loaded
    sop, blob = next(iter(a.index.iter_blob_refs()))
    new = BlobInfo("f" * 64, blob.size, blob.sha256)
    assert a.index.replace_blob_key(blob.key, new) == 1
    assert a.index.instances(sop_uids=[sop])[0].blob.key == new.key


def test_nul_padded_values_are_indexed_on_both_dialects(arc: Archive) -> None:
    store(arc, PatientID="NUL-1", StudyDescription="Padded\x00")
    [row] = find(arc, Level.STUDY, PatientID="NUL-1")
    assert row["00081030"]["Value"] == ["Padded"] or row["00081030"]["Value"] == ["Padded\x00"]
    assert len(find(arc, Level.STUDY, StudyDescription="Padded")) == 1


# -- blob removal claims (services.lifecycle explains the protocol; both dialects) --------------------------


def _stored(a: Archive, data: bytes) -> tuple[str, str, str]:
    """Ingest ``data``; (study, SOP Instance UID, blob key)."""
    res = a.ingest.ingest(io.BytesIO(data), source="contract")
    return res.study_uid, res.sop_instance_uid, res.blob.key


def _retrievable(a: Archive, sop: str) -> bytes:
    [rec] = a.index.instances(sop_uids=[sop])
    return b"".join(a.retrieve.iter_bytes(rec, verify=True))


def _ingest_in_thread(a: Archive, data: bytes) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(a.ingest.ingest(io.BytesIO(data), source="contract"))
        except Exception as exc:  # handed to the test thread
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_pending_removal_is_cancelled_by_a_store_of_the_same_bytes(arc: Archive) -> None:
    data = make_ct(seed=31)
    study, sop, key = _stored(arc, data)
    assert [b.key for b in arc.index.delete(study_uid=study)] == [key]  # released: recorded as pending
    assert arc.ingest.ingest(io.BytesIO(data)).outcome == StoreOutcome.STORED  # the blob is still there
    claim = arc.index.claim_blob_removals([key], stale_after=300)
    assert claim.keys == () and claim.referenced == (key,), "the re-send resurrected the blob: nothing to delete"
    assert arc.remover.remove([key]).removed == 0
    assert _retrievable(arc, sop) == data


def test_claimed_removal_makes_a_store_wait_then_write_again(arc: Archive) -> None:
    data = make_ct(seed=32)
    study, sop, key = _stored(arc, data)
    arc.index.delete(study_uid=study)
    claim = arc.index.claim_blob_removals([key], stale_after=300)
    assert claim.keys == (key,)
    with pytest.raises(BlobRemovalRace) as refused:  # what the index answers the store while the claim holds
        arc.index.store_instance(_entry(arc, data), DuplicatePolicy.REJECT)
    assert not refused.value.finished
    thread, out = _ingest_in_thread(arc, data)  # finds the blob present, is refused, waits
    time.sleep(0.3)
    assert thread.is_alive() and out == [], "a store must not be acknowledged while its blob is being removed"
    arc.blobs.delete(key)
    arc.index.finish_blob_removals(claim.claim, [key])
    thread.join(10)
    [result] = out
    assert isinstance(result, IngestResult) and result.outcome == StoreOutcome.STORED
    assert _retrievable(arc, sop) == data, "the bytes were written again after the removal"
    assert arc.index.blob_removal_round(key) is None, "the accepted tombstone is gone"


def test_finished_removal_refuses_a_store_once_then_accepts_it(arc: Archive) -> None:
    data = make_ct(seed=33)
    study, sop, key = _stored(arc, data)
    arc.index.delete(study_uid=study)
    assert arc.remover.remove([key]).removed == 1
    assert arc.index.blob_removal_round(key) is not None and arc.index.blob_removal_round(key).finished  # type: ignore[union-attr]
    entry = _entry(arc, data)
    with pytest.raises(BlobRemovalRace) as refused:  # its put may have found the blob before it was deleted
        arc.index.store_instance(entry, DuplicatePolicy.REJECT)
    assert refused.value.finished
    with pytest.raises(BlobRemovalRace):  # another claim's tombstone is not accepted
        arc.index.store_instance(entry, DuplicatePolicy.REJECT, accept_removal="0" * 32)
    assert arc.ingest.ingest(io.BytesIO(data)).outcome == StoreOutcome.STORED  # writes again, then accepted
    assert _retrievable(arc, sop) == data


def test_unfinished_claim_past_the_wait_is_unavailable(tmp_path: Path, any_index_url: str) -> None:
    a = _archive(tmp_path, any_index_url)
    try:
        data = make_ct(seed=34)
        study, sop, key = _stored(a, data)
        a.index.delete(study_uid=study)
        a.index.claim_blob_removals([key], stale_after=300)  # a deleter that then died
        impatient = IngestService(a.index, a.blobs, a.remover, policy=DuplicatePolicy.REJECT, removal_wait=0.2)
        with pytest.raises(Unavailable):
            impatient.ingest(io.BytesIO(data))
        assert a.index.instances(sop_uids=[sop]) == [], "refused, never acknowledged"
    finally:
        a.close()


def test_sweep_finishes_stale_claims_and_pending_removals(arc: Archive) -> None:
    crashed_after_claim, crashed_after_commit, fresh = make_ct(seed=35), make_ct(seed=36), make_ct(seed=37)
    keys = []
    for data in (crashed_after_claim, crashed_after_commit, fresh):
        study, _, key = _stored(arc, data)
        arc.index.delete(study_uid=study)
        keys.append(key)
    arc.index.claim_blob_removals([keys[0]], stale_after=300)
    time.sleep(0.2)
    arc.index.delete(study_uid=_stored(arc, fresh)[0])  # released again just now: not stale
    sweeper = BlobRemover(arc.index, arc.blobs, stale_after=0.15)
    report = sweeper.sweep()
    assert report.removed == 2
    assert [arc.blobs.exists(k) for k in keys] == [False, False, True]
    assert all(arc.index.blob_removal_round(k).finished for k in keys[:2])  # type: ignore[union-attr]
    again = arc.ingest.ingest(io.BytesIO(crashed_after_claim))
    assert again.outcome == StoreOutcome.STORED
    assert _retrievable(arc, again.sop_instance_uid) == crashed_after_claim


def test_orphan_removal_respects_a_concurrent_resend(arc: Archive) -> None:
    fixity = FixityService(arc.index, arc.blobs, arc.remover)
    kept, raced = make_ct(seed=38), make_ct(seed=39)
    orphans = [arc.blobs.put(io.BytesIO(d)).info.key for d in (kept, raced)]  # a crash between put and commit
    report = fixity.check()
    assert sorted(report.orphans) == sorted(orphans)
    sop_kept = arc.ingest.ingest(io.BytesIO(kept)).sop_instance_uid  # re-sent before the repair ran
    assert fixity.remove_orphans(report) == 1, "only the orphan nobody references is deleted"
    assert _retrievable(arc, sop_kept) == kept
    # A re-send arriving while the repair holds the claim waits for it and writes the bytes again.
    arc.blobs.put(io.BytesIO(raced))
    claim = arc.index.claim_blob_removals([orphans[1]], stale_after=300, unreferenced_found=True)
    assert claim.keys == (orphans[1],)
    thread, out = _ingest_in_thread(arc, raced)
    time.sleep(0.3)
    assert thread.is_alive()
    arc.blobs.delete(orphans[1])
    arc.index.finish_blob_removals(claim.claim, list(claim.keys))
    thread.join(10)
    [result] = out
    assert isinstance(result, IngestResult) and result.outcome == StoreOutcome.STORED
    assert _retrievable(arc, result.sop_instance_uid) == raced


def _entry(a: Archive, data: bytes) -> InstanceEntry:
    """The index entry ingest would build for ``data`` (blob present in the store)."""
    from dicomvault.services import header as hdr

    stream = io.BytesIO(data)
    parsed = hdr.parse_header(stream, a.ingest.limits)
    cols = hdr.index_columns(hdr.json_dict(parsed.dataset, parsed), parsed.transfer_syntax_uid)
    parsed.close()
    stream.seek(0)
    blob = a.blobs.put(stream).info
    return InstanceEntry(patient=cols[Level.PATIENT], study=cols[Level.STUDY], series=cols[Level.SERIES],
                         instance=cols[Level.IMAGE], blob=blob, metadata_json="{}")


def test_claim_of_an_orphan_waits_for_a_store_in_flight(arc: Archive) -> None:
    """Case d of services.lifecycle: a store that has written its row and found no removal row, but not yet
    committed, when an orphan claim for the same bytes starts. The claim must not be granted (PostgreSQL: it
    waits for the transactions in flight and checks again; SQLite: it waits for the writer)."""
    from dicomvault.adapters.index.repository import SqlIndexRepository

    index = arc.index
    assert isinstance(index, SqlIndexRepository)
    data = make_ct(seed=40)
    entry = _entry(arc, data)  # the blob is in the store, unreferenced: an orphan
    with index.engine.connect() as conn:
        conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        tx = conn.begin()
        index._store_in(conn, entry, DuplicatePolicy.REJECT, None)  # a store paused just before its COMMIT
        claims: list[object] = []
        claimer = threading.Thread(target=lambda: claims.append(index.claim_blob_removals(
            [entry.blob.key], stale_after=300, unreferenced_found=True)))
        claimer.start()
        time.sleep(0.5)
        assert claimer.is_alive(), "the claim waits for the store in flight"
        tx.commit()
    claimer.join(30)
    [claim] = claims
    assert isinstance(claim, BlobClaim) and claim.keys == () and claim.referenced == (entry.blob.key,)
    assert arc.index.blob_removal_round(entry.blob.key) is None
    assert _retrievable(arc, entry.instance["sop_uid"]) == data


def test_storage_tier_methods(arc: Archive) -> None:
    """The tier methods of the port in one round: ingest records a verified copy on the ingest store, a move to
    another store is add then drop (never the last), selection, facts, read times, usage and the walks follow.
    Engine-specific cases (concurrency, paging, every condition) are in tests/adapters/index/test_index_tiers.py."""
    from datetime import UTC, datetime

    from dicomvault.domain.tiers import DEFAULT_STORE, CopyTarget, StudyCondition

    result = arc.ingest.ingest(io.BytesIO(make_ct(seed=70, Modality="MR")), source="dimse:MRI")
    key, now = result.blob.key, datetime.now(UTC)
    [copy] = arc.index.blob_copies([key])[key]
    assert copy.store == DEFAULT_STORE and copy.verified_at is not None
    move = CopyTarget(("cold",), exclusive=True)
    condition = StudyCondition(modalities=("MR",), sources=("MRI",))
    assert [c.study_uid for c in arc.index.studies_needing(condition, move, now=now)] == [result.study_uid]
    assert arc.index.add_blob_copy(key, "cold", verified_at=now, present=lambda: True)
    deleted: list[str] = []
    assert arc.index.drop_blob_copy(key, DEFAULT_STORE, delete=lambda: deleted.append(DEFAULT_STORE))
    assert not arc.index.drop_blob_copy(key, "cold", delete=lambda: deleted.append("cold"))
    assert deleted == [DEFAULT_STORE]
    assert arc.index.studies_needing(condition, move, now=now) == []
    [blob] = arc.index.study_blobs(result.study_uid)
    assert (blob.sop_uid, blob.blob.key, blob.stores) == (result.sop_instance_uid, key, ("cold",))
    arc.index.note_study_reads([result.study_uid], now)
    facts = arc.index.study_facts(result.study_uid)
    assert facts is not None and facts.last_activity == now and "MR" in facts.modalities
    [usage] = arc.index.store_usage()
    assert (usage.store, usage.studies, usage.copies, usage.bytes) == ("cold", 1, 1, result.blob.size)
    assert [(sop, b.key, stores) for sop, b, stores in arc.index.iter_blob_copies("cold")] == [
        (result.sop_instance_uid, key, ("cold",))]
    assert list(arc.index.iter_uncopied_blobs()) == []
