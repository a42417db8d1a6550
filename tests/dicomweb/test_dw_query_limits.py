"""QIDO-RS stays bounded (issue #9, defects 2 and 5), over real HTTP (httpx):

* a wildcard pattern that made the former regex backtrack for minutes answers at once, and ``/healthz`` answers
  while it runs;
* oversized patterns, too many wildcards or values are a 400 naming the key;
* no ``limit`` gives the configured default, a ``limit`` above the maximum is reduced, and the PS3.18 Warning says
  when the server's own limit cut the list short;
* keys the index does not hold are matched page by page with one metadata read per page (not one query per
  result), ``offset``/``limit`` give the right page, and the scan budget ends a page early with a Warning that says
  where to continue.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import Any

import httpx
from pydicom.uid import generate_uid

from dicomvault.bootstrap import Archive
from dicomvault.dicomweb.qido import MORE_RESULTS
from tests.dicomweb.dw_live import DwServer
from tests.helpers import PATHOLOGICAL_WILDCARD as PATHOLOGICAL
from tests.helpers import count_selects, make_ct


def _ingest(archive: Archive, **attrs: Any) -> str:
    study = generate_uid()
    archive.ingest.ingest(io.BytesIO(make_ct(study=study, rows=2, columns=2, **attrs)))
    return study


def _uids(results: list[dict[str, Any]], tag: str = "0020000D") -> list[str]:
    return [r[tag]["Value"][0] for r in results]


def test_pathological_wildcard_answers_while_healthz_keeps_answering(dw_server: DwServer) -> None:
    target = _ingest(dw_server.archive, InstitutionName="A" * 63 + "B")
    _ingest(dw_server.archive, InstitutionName="A" * 64)
    outcome: dict[str, Any] = {}

    def query() -> None:
        try:
            outcome["response"] = httpx.get(dw_server.dicomweb_url + "/studies",
                                            params={"InstitutionName": PATHOLOGICAL}, timeout=60)
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=query)
    thread.start()
    probes = 0
    try:
        while thread.is_alive() or probes < 3:
            # A stalled server (the regex held the GIL) lets this time out instead of answering.
            assert httpx.get(dw_server.base_url + "/healthz", timeout=10).status_code == 200
            probes += 1
    finally:
        thread.join(timeout=120)
    assert "error" not in outcome, outcome
    r = outcome["response"]
    assert r.status_code == 200 and _uids(r.json()) == [target]


def test_oversized_patterns_and_lists_are_400_naming_the_key(make_dw_server: Callable[..., DwServer]) -> None:
    server = make_dw_server(query_max_values=3)
    url = server.dicomweb_url + "/studies"
    for params, key in (
        ({"InstitutionName": "A" * 64 + "*"}, "InstitutionName"),  # default: 64 characters
        ({"PatientName": "*A" * 17}, "PatientName"),  # default: 16 wildcards
        ({"StudyDescription": "*A*\\*B*\\" + "?" * 13}, "StudyDescription"),  # counted over all values
    ):
        r = httpx.get(url, params=params, timeout=30)
        assert r.status_code == 400 and r.json()["status"] == 400 and key in r.json()["error"], r.text
    r = httpx.get(url, params={"StudyInstanceUID": "1.2.1,1.2.2,1.2.3,1.2.4"}, timeout=30)
    assert r.status_code == 400 and "more than 3 values" in r.json()["error"]
    assert httpx.get(url, params={"StudyInstanceUID": "1.2.1,1.2.2,1.2.3"}, timeout=30).status_code == 200


def test_default_and_maximum_limit_with_the_ps318_warning(make_dw_server: Callable[..., DwServer]) -> None:
    server = make_dw_server(query_max_results=5, qido_default_limit=3)
    studies = [_ingest(server.archive, PatientID=f"LIM-{i}") for i in range(7)]

    def get(path: str = "/studies", **params: Any) -> httpx.Response:
        r = httpx.get(server.dicomweb_url + path, params=params, timeout=30)
        assert r.status_code == 200, r.text
        return r

    r = get()  # no limit: the default, cut short by the server → Warning
    assert _uids(r.json()) == studies[:3] and r.headers["warning"] == MORE_RESULTS
    r = get(limit=100)  # above the maximum: reduced to it
    assert _uids(r.json()) == studies[:5] and r.headers["warning"] == MORE_RESULTS
    r = get(limit=100, offset=5)  # the rest: nothing more, no Warning
    assert _uids(r.json()) == studies[5:] and "warning" not in r.headers
    for limit in (4, 5):  # a limit the client chose within the maximum: no Warning (it pages itself)
        r = get(limit=limit)
        assert len(r.json()) == limit and "warning" not in r.headers
    # the per-row path (a non-default return key) and the other levels behave the same
    r = get(includefield="InstitutionName")
    assert _uids(r.json()) == studies[:3] and r.headers["warning"] == MORE_RESULTS
    r = get("/instances", limit=6)
    assert len(r.json()) == 5 and r.headers["warning"] == MORE_RESULTS
    r = get(PatientID="LIM-1")  # everything fits: no Warning
    assert _uids(r.json()) == [studies[1]] and "warning" not in r.headers


def test_non_indexed_key_pages_with_few_statements(dw_server: DwServer) -> None:
    archive = dw_server.archive
    matching: list[str] = []
    for i in range(30):
        hit = i % 3 == 0
        study = _ingest(archive, PatientID=f"NI-{i}", InstitutionName="Match General" if hit else "Other",
                        PerformingPhysicianName="Müller^Hans" if hit else "Smith^Anna")
        if hit:
            matching.append(study)
    url = dw_server.dicomweb_url
    with count_selects(archive) as selects:
        r = httpx.get(url + "/studies", params={"InstitutionName": "Match*", "limit": 3, "offset": 2}, timeout=30)
    assert r.status_code == 200 and _uids(r.json()) == matching[2:5]
    assert "warning" not in r.headers
    # One page of candidates and one read of their cached metadata (was: one query per candidate study).
    assert len(selects) <= 3, selects
    with count_selects(archive) as selects:
        r = httpx.get(url + "/series", params={"InstitutionName": "Match*", "limit": 2, "offset": 1,
                                               "includefield": "InstitutionName"}, timeout=30)
    assert r.status_code == 200 and _uids(r.json()) == matching[1:3] and len(selects) <= 3, selects
    assert {x["00080080"]["Value"][0] for x in r.json()} == {"Match General"}
    # PN keys the index does not hold compare case- and accent-folded, like indexed ones
    r = httpx.get(url + "/instances", params={"PerformingPhysicianName": "MULLER*"}, timeout=30)
    assert sorted(_uids(r.json())) == sorted(matching)


def test_scan_budget_ends_the_page_early_and_the_next_offset_resumes(
    make_dw_server: Callable[..., DwServer],
) -> None:
    server = make_dw_server(query_max_scanned=5)
    matching: list[str] = []
    for i in range(12):
        study = _ingest(server.archive, PatientID=f"SB-{i}", InstitutionName="Match" if i in (0, 7, 8) else "Other")
        if i in (0, 7, 8):
            matching.append(study)
    params: dict[str, Any] = {"InstitutionName": "Match"}
    found: list[str] = []
    warnings: list[str] = []
    offset = 0
    for _ in range(5):
        r = httpx.get(server.dicomweb_url + "/studies", params={**params, "offset": offset}, timeout=30)
        assert r.status_code == 200, r.text
        page = _uids(r.json())
        found += page
        offset += len(page)
        if "warning" not in r.headers:
            break
        warnings.append(r.headers["warning"])
    assert found == matching
    # rows 1-5 examined: 1 match; rows 6-10: 2 more; rows 11-12: the end, no Warning
    assert len(warnings) == 2 and "examined the maximum of 5 records" in warnings[0]
    assert "offset=1" in warnings[0] and "offset=3" in warnings[1]
