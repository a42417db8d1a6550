"""The query engine's bounds (issue #9): pages say whether more exists, walks with the keyset cursor through a
scan budget find every match exactly once, and streams stop past their maximum."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from pydicom.uid import generate_uid

from dicomvault.bootstrap import Archive
from dicomvault.domain.errors import QueryTooComplex, ResultLimitExceeded
from dicomvault.domain.query import QueryLimits
from dicomvault.domain.tags import Level
from dicomvault.services.query import PageEnd, QueryService
from tests.helpers import make_ct


def _load(archive: Archive) -> list[str]:
    """20 single-instance studies; InstitutionName "Match" on every third (7 of them): their study UIDs."""
    matching = []
    for i in range(20):
        study = generate_uid()
        archive.ingest.ingest(io.BytesIO(make_ct(study=study, rows=2, columns=2, PatientID=f"B-{i}",
                                                 InstitutionName="Match" if i % 3 == 0 else "Other")))
        if i % 3 == 0:
            matching.append(study)
    return matching


def _uids(results: list[dict]) -> list[str]:  # type: ignore[type-arg]
    return [r["0020000D"]["Value"][0] for r in results]


@pytest.mark.parametrize("level", [Level.STUDY, Level.SERIES, Level.IMAGE])
def test_walk_through_the_scan_budget_finds_every_match_once(archive: Archive, level: Level) -> None:
    matching = _load(archive)
    query = QueryService(archive.index, QueryLimits(max_scanned=4))
    spec = query.build_spec(level, {"InstitutionName": "Mat*"}, return_keys=["StudyInstanceUID"], limit=2)
    found: list[str] = []
    ends: list[PageEnd] = []
    for _ in range(20):
        results, end = query.search_page(spec)
        found += _uids(results)
        ends.append(end)
        if not end.more:
            break
        spec = replace(spec, after_id=end.last_id, offset=0)
    assert found == matching
    assert any(not e.complete for e in ends) and ends[-1] == PageEnd(ends[-1].last_id, more=False, complete=True)
    # with offset instead of a cursor, pages agree with the full list as far as the budget reaches
    results, end = query.search_page(query.build_spec(level, {"InstitutionName": "Mat*"},
                                                      return_keys=["StudyInstanceUID"], limit=1, offset=1))
    assert _uids(results) == matching[1:2] and end.more and end.complete


def test_pages_say_whether_more_exists(archive: Archive) -> None:
    _load(archive)
    query = archive.query
    for spec_args, more in (({"limit": 19}, True), ({"limit": 20}, False), ({"limit": 5, "offset": 15}, False)):
        spec = query.build_spec(Level.STUDY, {}, **spec_args)
        encoded = query.search_page_encoded(spec)
        assert encoded is not None and encoded[1].more is more
        results, end = query.search_page(query.build_spec(Level.STUDY, {}, **spec_args))
        assert end == encoded[1] and len(results) == len(encoded[0])


def test_stream_stops_past_its_maximum(archive: Archive) -> None:
    matching = _load(archive)
    query = archive.query
    assert len(list(query.stream(query.build_spec(Level.STUDY, {}), max_results=20))) == 20
    got: list[str] = []
    with pytest.raises(ResultLimitExceeded, match="More than 19 matches"):
        for result in query.stream(query.build_spec(Level.STUDY, {}), max_results=19):
            got.append(result["0020000D"]["Value"][0])
    assert len(got) == 19
    tight = QueryService(archive.index, QueryLimits(max_scanned=10))
    got = []
    with pytest.raises(ResultLimitExceeded, match="Examined 10 records"):
        for result in tight.stream(tight.build_spec(Level.STUDY, {"InstitutionName": "Match"}), max_results=100):
            got.append(result["0020000D"]["Value"][0])
    assert got == matching[:4]  # rows 1-10 hold matches 0, 3, 6, 9


def test_query_shape_limits(archive: Archive) -> None:
    query = QueryService(archive.index, QueryLimits(max_keys=2, max_values=3))
    query.build_spec(Level.STUDY, {"PatientID": "X", "StudyDate": "20200101", "StudyDescription": ""})
    with pytest.raises(QueryTooComplex, match="more than 2 matching keys"):
        query.build_spec(Level.STUDY, {"PatientID": "X", "StudyDate": "20200101", "AccessionNumber": "A"})
    with pytest.raises(QueryTooComplex, match="more than 3 values"):
        query.build_spec(Level.STUDY, {"StudyInstanceUID": "1.2\\1.3", "ModalitiesInStudy": "CT\\MR"})
