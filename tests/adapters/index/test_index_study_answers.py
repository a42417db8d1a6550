"""The cached default QIDO-RS answer per study (table ``study_qido``): byte-identical to the answer built from
columns, rewritten in the transaction of every ingest/delete/replacement, ignored when missing or stale, removed
with its study, and filled in for studies indexed before migration 0004."""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import delete, func, select, update

from dicomvault.adapters.index import study_answers
from dicomvault.adapters.index.repository import SqlIndexRepository
from dicomvault.adapters.index.tables import studies, study_qido
from dicomvault.bootstrap import Archive
from dicomvault.domain.records import DuplicatePolicy
from dicomvault.domain.tags import Level
from dicomvault.services.ingest import IngestService
from tests.helpers import make_ct

#: Keys a QIDO-RS study search may carry; every one of them keeps the request on the cached path.
QUERIES: list[dict[str, str]] = [
    {},
    {"PatientName": "MÜL*"},
    {"PatientName": "smith*"},
    {"PatientID": "FR-2"},
    {"StudyDate": "20200101-20221231"},
    {"ModalitiesInStudy": "MR"},
    {"Modality": "CT"},  # a series-level key: matched with EXISTS, not returned
    {"StudyInstanceUID": "*"},
]


def _repo(archive: Archive) -> SqlIndexRepository:
    assert isinstance(archive.index, SqlIndexRepository)
    return archive.index


def _ingest(archive: Archive, **attrs: Any) -> None:
    archive.ingest.ingest(io.BytesIO(make_ct(**attrs)), source="test")


def _load(archive: Archive) -> dict[str, str]:
    """Studies with accents, a quote, empty and multi-valued attributes, several series and modalities."""
    uids = {name: generate_uid() for name in ("a", "b", "c", "d")}
    s1, s2 = generate_uid(), generate_uid()
    for i in range(3):
        _ingest(archive, study=uids["a"], series=s1, PatientID="FR-1", PatientName="Müller^Hans=ミュラー",
                SpecificCharacterSet="ISO_IR 192", StudyDate="20200105", AccessionNumber="A1",
                StudyDescription='Chest "CT" \\ low dose',
                ReferringPhysicianName="Who^Doctor", InstanceNumber=i + 1, seed=i)
    _ingest(archive, study=uids["a"], series=s2, PatientID="FR-1", PatientName="Müller^Hans=ミュラー",
            SpecificCharacterSet="ISO_IR 192", Modality="MR", StudyDate="20200105")
    _ingest(archive, study=uids["b"], PatientID="FR-2", PatientName="Smith^Anna", StudyDate="20221231",
            PatientBirthDate="19700101", PatientSex="F", StudyID="S-7")
    _ingest(archive, study=uids["c"], PatientID="FR-3", PatientName="", StudyDate="", StudyTime="")
    _ingest(archive, study=uids["d"], PatientID="FR-1", PatientName="Müller^Hans=ミュラー",
            SpecificCharacterSet="ISO_IR 192", Modality="US")
    return uids


def _both_paths(archive: Archive, keys: dict[str, str], **spec_args: Any) -> tuple[list[bytes], list[bytes]]:
    """(cached path, per-row path) answers to the same query, each result serialized."""
    query = archive.query
    encoded = query.search_page_encoded(query.build_spec(Level.STUDY, keys, **spec_args))
    assert encoded is not None
    slow, slow_last = query.search_page(query.build_spec(Level.STUDY, keys, **spec_args))
    assert encoded[1] == slow_last
    return [r.json for r in encoded[0]], [orjson.dumps(r) for r in slow]


def _assert_same(archive: Archive, keys: dict[str, str] | None = None) -> list[dict[str, Any]]:
    fast, slow = _both_paths(archive, keys or {})
    assert fast == slow
    return [orjson.loads(b) for b in fast]


def _by_uid(results: list[dict[str, Any]], uid: str) -> dict[str, Any]:
    return next(r for r in results if r["0020000D"]["Value"][0] == uid)


@pytest.mark.parametrize("keys", QUERIES, ids=[",".join(q) or "all" for q in QUERIES])
def test_cached_answers_equal_answers_built_from_columns(archive: Archive, keys: dict[str, str]) -> None:
    _load(archive)
    fast, slow = _both_paths(archive, keys)
    assert fast == slow  # byte for byte, same order
    assert fast or keys  # the unfiltered query finds everything


def test_paging_and_keyset_continuation_match(archive: Archive) -> None:
    _load(archive)
    assert _both_paths(archive, {}, limit=2) == _both_paths(archive, {}, limit=2)
    fast, slow = _both_paths(archive, {}, limit=2, offset=1)
    assert fast == slow and len(fast) == 2


def test_requests_beyond_the_cached_keys_take_the_per_row_path(archive: Archive) -> None:
    query = archive.query
    assert query.search_page_encoded(query.build_spec(Level.STUDY, {}, return_keys=["00081030"])) is not None
    for spec in (
        query.build_spec(Level.STUDY, {}, return_keys=["InstitutionName"]),
        query.build_spec(Level.STUDY, {}, include_all=True),
        query.build_spec(Level.STUDY, {"InstitutionName": "X*"}),  # not indexed: post-filtered
        query.build_spec(Level.STUDY, {"IssuerOfPatientID": ""}),  # indexed, but not a default key
        query.build_spec(Level.SERIES, {}),
    ):
        assert query.search_page_encoded(spec) is None


def test_fragment_follows_new_instances_series_and_deletes(archive: Archive) -> None:
    study, s1, s2 = generate_uid(), generate_uid(), generate_uid()
    _ingest(archive, study=study, series=s1, PatientID="X")
    first = _by_uid(_assert_same(archive), study)
    assert first["00201208"]["Value"] == [1] and first["00201206"]["Value"] == [1]
    assert first["00080061"]["Value"] == ["CT"]

    _ingest(archive, study=study, series=s1, PatientID="X", seed=1)
    assert _by_uid(_assert_same(archive), study)["00201208"]["Value"] == [2]

    _ingest(archive, study=study, series=s2, PatientID="X", Modality="MR")
    now = _by_uid(_assert_same(archive), study)
    assert now["00201208"]["Value"] == [3] and now["00201206"]["Value"] == [2]
    assert now["00080061"]["Value"] == ["CT", "MR"]

    archive.index.delete(study_uid=study, series_uid=s1)
    now = _by_uid(_assert_same(archive), study)
    assert now["00201208"]["Value"] == [1] and now["00201206"]["Value"] == [1]
    assert now["00080061"]["Value"] == ["MR"]

    archive.index.delete(study_uid=study)
    assert _assert_same(archive) == []


def test_replacement_into_another_study_refreshes_both(archive: Archive) -> None:
    index = _repo(archive)
    sop, study_a, study_b = generate_uid(), generate_uid(), generate_uid()
    _ingest(archive, study=study_a, sop=sop, PatientID="R")
    _ingest(archive, study=study_a, PatientID="R", seed=3)
    _ingest(archive, study=study_b, PatientID="R", seed=4)
    replaced = IngestService(index, archive.blobs, archive.remover, policy=DuplicatePolicy.REPLACE)
    replaced.ingest(io.BytesIO(make_ct(study=study_b, sop=sop, PatientID="R", seed=9)), source="test")
    results = _assert_same(archive)
    assert _by_uid(results, study_a)["00201208"]["Value"] == [1]
    assert _by_uid(results, study_b)["00201208"]["Value"] == [2]


def test_missing_or_stale_answers_are_not_served(archive: Archive) -> None:
    uids = _load(archive)
    engine = _repo(archive).engine
    before = _assert_same(archive)
    with engine.begin() as conn:
        study_a = select(studies.c.id).where(studies.c.study_uid == uids["a"]).scalar_subquery()
        conn.execute(delete(study_qido).where(study_qido.c.study_fk == study_a))
        # What a node running the previous version leaves behind: counters changed, fragment not rewritten.
        conn.execute(update(studies).where(studies.c.study_uid == uids["b"])
                     .values(num_instances=studies.c.num_instances + 1))
    after = _assert_same(archive)
    assert len(after) == len(before)
    assert _by_uid(after, uids["b"])["00201208"]["Value"] == [2]


def test_backfill_fills_what_migration_0004_found_empty(archive: Archive) -> None:
    _load(archive)
    engine = _repo(archive).engine
    answers = select(study_qido.c.study_fk, study_qido.c.answer, study_qido.c.num_instances)
    with engine.connect() as conn:
        expected = {r[0]: r[1:] for r in conn.execute(answers)}
        assert len(expected) == conn.execute(select(func.count()).select_from(studies)).scalar_one()
    with engine.begin() as conn:
        conn.execute(delete(study_qido))
        assert study_answers.backfill(conn) == len(expected)
        assert study_answers.backfill(conn) == 0
    with engine.connect() as conn:
        assert {r[0]: r[1:] for r in conn.execute(answers)} == expected


def test_answers_go_with_their_study(archive: Archive) -> None:
    uids = _load(archive)
    engine = _repo(archive).engine
    archive.index.delete(study_uid=uids["b"])
    with engine.connect() as conn:
        left = conn.execute(select(func.count()).select_from(study_qido)).scalar_one()
        assert left == conn.execute(select(func.count()).select_from(studies)).scalar_one() == 3
