"""Sorted pages of the query engine (``QuerySpec.order_by`` / ``descending``): indexed columns only, one page at
a time, and the id-order walk backwards with a keyset cursor."""

from __future__ import annotations

import io

import pytest

from dicomvault.bootstrap import Archive
from dicomvault.domain.errors import InvalidQuery
from dicomvault.domain.tags import Level
from tests.helpers import make_ct


def uids(results: list[dict]) -> list[str]:  # type: ignore[type-arg]
    return [r["0020000D"]["Value"][0] for r in results]


@pytest.fixture
def studies(archive: Archive) -> list[str]:
    out = []
    for i, (name, date) in enumerate([("b^x", "20200101"), ("A^y", "20220101"), ("c^z", "20210101")]):
        study = f"1.2.3.{i + 1}"
        archive.ingest.ingest(io.BytesIO(make_ct(study=study, PatientName=name, PatientID=f"P{i}", StudyDate=date)))
        out.append(study)
    return out


def test_sorted_pages(archive: Archive, studies: list[str]) -> None:
    def page(order_by: str | None, descending: bool, **kw: int) -> list[str]:
        spec = archive.query.build_spec(Level.STUDY, {}, **kw)  # type: ignore[arg-type]
        spec.order_by, spec.descending = order_by, descending
        return uids(archive.query.search_page(spec)[0])

    one, two, three = studies
    assert page("StudyDate", False) == [one, three, two]
    assert page("StudyDate", True) == [two, three, one]
    assert page("PatientName", False) == [two, one, three]  # the normalised name: case does not count
    assert page("PatientName", True, limit=1, offset=1) == [one]
    assert page(None, True) == [three, two, one]


def test_descending_keyset_and_refusals(archive: Archive, studies: list[str]) -> None:
    spec = archive.query.build_spec(Level.STUDY, {}, limit=1)
    spec.descending = True
    results, end = archive.query.search_page(spec)
    assert uids(results) == [studies[2]] and end.more
    spec.after_id = end.last_id
    assert uids(archive.query.search_page(spec)[0]) == [studies[1]]
    sorted_spec = archive.query.build_spec(Level.STUDY, {"InstitutionName": "X*"})
    sorted_spec.order_by = "StudyDate"
    with pytest.raises(InvalidQuery):
        archive.query.search_page(sorted_spec)  # a non-indexed key: matched in id-order scans
    stream_spec = archive.query.build_spec(Level.STUDY, {})
    stream_spec.order_by = "StudyDate"
    with pytest.raises(InvalidQuery):
        list(archive.query.stream(stream_spec, max_results=10))


def test_ignore_case_applies_to_the_named_wildcards_only(archive: Archive) -> None:
    """The pages' description search ignores case on every index; C-FIND and QIDO-RS keep DICOM's matching."""
    archive.ingest.ingest(io.BytesIO(make_ct(StudyDescription="Brain MR")), source="test")
    query = archive.query
    loose = query.build_spec(Level.STUDY, {"StudyDescription": "*BRAIN*"}, ignore_case=("StudyDescription",))
    assert [c.ignore_case for c in loose.conditions] == [True]
    assert len(query.search(loose)) == 1
    exact = query.build_spec(Level.STUDY, {"StudyDescription": "Brain MR"}, ignore_case=("StudyDescription",))
    assert [c.ignore_case for c in exact.conditions] == [False]  # a single value is not a wildcard
