"""The IndexRepository contract, run identically on SQLite and PostgreSQL (``any_index_url``)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from dicomvault.bootstrap import Archive, build_archive
from dicomvault.domain.errors import Conflict
from dicomvault.domain.records import BlobInfo, DuplicatePolicy, StoreOutcome
from dicomvault.domain.tags import Level
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
