"""The shared query engine (C-FIND, QIDO-RS, CLI) against a small, varied archive."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from pydicom.uid import generate_uid

from dicomvault.bootstrap import Archive
from dicomvault.domain.errors import InvalidQuery
from dicomvault.domain.tags import Level
from tests.helpers import make_ct

STUDIES = [
    # patient id, name, date, modality, description
    ("P1", "Müller^Hans", "20200105", "CT", "Chest CT"),
    ("P1", "Müller^Hans", "20210610", "MR", "Brain MR"),
    ("P2", "Smith^Anna", "20220101", "CT", "Abdomen"),
    ("P3", "O'Brien^Sean", "20230315", "US", "Liver US"),
]


@pytest.fixture
def loaded(archive: Archive) -> Iterator[tuple[Archive, list[str]]]:
    uids = []
    for pid, name, date, mod, desc in STUDIES:
        study = generate_uid()
        uids.append(study)
        for s in range(2):
            series = generate_uid()
            for i in range(3):
                archive.ingest.ingest(io.BytesIO(make_ct(
                    study=study, series=series, PatientID=pid, PatientName=name, StudyDate=date, Modality=mod,
                    StudyDescription=desc, SeriesNumber=s + 1, InstanceNumber=i + 1, seed=i,
                )))
    yield archive, uids


def find(archive: Archive, level: Level, **keys: str) -> list[dict]:  # type: ignore[type-arg]
    return archive.query.search(archive.query.build_spec(level, keys))


def values(results: list[dict], tag: str) -> list:  # type: ignore[type-arg]
    return [r[tag]["Value"][0] if "Value" in r[tag] else None for r in results]


def test_single_value_and_universal(loaded: tuple[Archive, list[str]]) -> None:
    archive, _ = loaded
    assert len(find(archive, Level.STUDY)) == 4
    assert len(find(archive, Level.STUDY, PatientID="P1")) == 2
    assert len(find(archive, Level.STUDY, PatientID="p1")) == 0, "LO matching is case-sensitive"


def test_person_name_matching_is_case_and_accent_insensitive(loaded: tuple[Archive, list[str]]) -> None:
    archive, _ = loaded
    assert len(find(archive, Level.STUDY, PatientName="muller*")) == 2
    assert len(find(archive, Level.STUDY, PatientName="SMITH^ANNA")) == 1
    assert len(find(archive, Level.STUDY, PatientName="*Bri?n*")) == 1


def test_fuzzy_person_name_matches_any_component(loaded: tuple[Archive, list[str]]) -> None:
    archive, _ = loaded
    spec = archive.query.build_spec(Level.STUDY, {"PatientName": "han"}, fuzzy=True)
    assert len(archive.query.search(spec)) == 2


def test_date_range_and_modalities(loaded: tuple[Archive, list[str]]) -> None:
    archive, _ = loaded
    assert len(find(archive, Level.STUDY, StudyDate="20210101-20221231")) == 2
    assert len(find(archive, Level.STUDY, StudyDate="-20201231")) == 1
    res = find(archive, Level.STUDY, ModalitiesInStudy="CT")
    assert len(res) == 2 and all(r["00080061"]["Value"] == ["CT"] for r in res)
    assert len(find(archive, Level.STUDY, ModalitiesInStudy="CT\\US")) == 3


def test_uid_list_and_counts(loaded: tuple[Archive, list[str]]) -> None:
    archive, uids = loaded
    res = find(archive, Level.STUDY, StudyInstanceUID="\\".join(uids[:2]))
    assert sorted(values(res, "0020000D")) == sorted(uids[:2])
    assert values(res, "00201206") == [2, 2] and values(res, "00201208") == [6, 6]
    series = find(archive, Level.SERIES, StudyInstanceUID=uids[0])
    assert values(series, "00201209") == [3, 3]


def test_patient_level_counts(loaded: tuple[Archive, list[str]]) -> None:
    archive, _ = loaded
    [p1] = find(archive, Level.PATIENT, PatientID="P1")
    assert p1["00201200"]["Value"] == [2] and p1["00201204"]["Value"] == [12]


def test_instance_level_and_non_indexed_return_keys(loaded: tuple[Archive, list[str]]) -> None:
    archive, uids = loaded
    spec = archive.query.build_spec(Level.IMAGE, {"StudyInstanceUID": uids[2], "InstanceNumber": "2"},
                                    return_keys=["PhotometricInterpretation"])
    res = archive.query.search(spec)
    assert len(res) == 2
    assert all(r["00280004"]["Value"] == ["MONOCHROME2"] for r in res)


def test_match_on_lower_level_attribute(loaded: tuple[Archive, list[str]]) -> None:
    archive, _ = loaded
    assert len(find(archive, Level.STUDY, Modality="MR")) == 1


def test_paging_is_stable(loaded: tuple[Archive, list[str]]) -> None:
    archive, _ = loaded
    full = values(find(archive, Level.SERIES), "0020000E")
    pages = []
    for offset in range(0, 8, 3):
        spec = archive.query.build_spec(Level.SERIES, {}, limit=3, offset=offset)
        pages += values(archive.query.search(spec), "0020000E")
    assert pages == full


def test_bad_queries_raise(loaded: tuple[Archive, list[str]]) -> None:
    archive, _ = loaded
    with pytest.raises(InvalidQuery):
        find(archive, Level.STUDY, StudyDate="2020-xx")
    with pytest.raises(InvalidQuery):
        archive.query.build_spec(Level.STUDY, {"NoSuchKeyword": "1"})
