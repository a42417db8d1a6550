"""QIDO-RS against the real server (dicomweb-client + httpx): every level, every matching kind, paging, errors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import generate_uid

from dicomvault.settings import Settings
from tests.dicomweb.dw_live import DwServer, running
from tests.helpers import make_ct


@dataclass
class Loaded:
    server: DwServer
    client: DICOMwebClient
    studies: dict[str, dict[str, Any]]  # study uid -> attributes used to build it
    corpus_instances: int


PATIENTS = [
    # (PatientID, PatientName, StudyDate, Modality, StudyDescription, series count, instances per series)
    ("QIDO-1", "Müller^Jürgen", "20240105", "CT", "Chest CT", 2, 3),
    ("QIDO-2", "MULLER^Hans", "20240120", "MR", "Brain MR", 1, 2),
    ("QIDO-3", "Doe^John", "20231231", "CT", "Abdomen", 1, 4),
    ("QIDO-4", "Smith^Anna^Marie", "20240301", "US", "Thyroid US", 3, 1),
]


@pytest.fixture(scope="module")
def loaded(dw_module_settings: Settings, corpus: list[Path]) -> Iterator[Loaded]:
    with running(dw_module_settings) as server:
        studies: dict[str, dict[str, Any]] = {}
        parts: list[bytes] = []
        for pid, name, date, mod, desc, n_series, n_inst in PATIENTS:
            study = generate_uid()
            series_uids = [generate_uid() for _ in range(n_series)]
            studies[study] = {"PatientID": pid, "series": series_uids, "instances": n_series * n_inst}
            for s_no, series in enumerate(series_uids, start=1):
                for i in range(n_inst):
                    parts.append(make_ct(study=study, series=series, PatientID=pid, PatientName=name,
                                         StudyDate=date, Modality=mod, StudyDescription=desc, SeriesNumber=s_no,
                                         InstanceNumber=i + 1, SliceThickness="2.5", AccessionNumber=f"A-{pid}",
                                         SeriesDescription=f"{desc} series {s_no}"))
        parts += [p.read_bytes() for p in corpus]
        boundary = "qido-boundary"
        body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
                        for p in parts) + f"--{boundary}--".encode()
        r = httpx.post(server.dicomweb_url + "/studies", content=body, timeout=120,
                       headers={"Content-Type": f"multipart/related; type=application/dicom; boundary={boundary}"})
        assert r.status_code == 200, r.text
        yield Loaded(server, DICOMwebClient(url=server.dicomweb_url), studies, len(corpus))


def get(loaded: Loaded, path: str, **params: Any) -> httpx.Response:
    return httpx.get(loaded.server.dicomweb_url + path, params=params, timeout=30)


def values(results: list[dict[str, Any]], tag: str) -> list[Any]:
    out = []
    for r in results:
        v = r.get(tag, {}).get("Value", [None])[0]
        out.append(v["Alphabetic"] if isinstance(v, dict) else v)
    return out


def qido_ids(loaded: Loaded, **filters: Any) -> set[str]:
    res = loaded.client.search_for_studies(search_filters={"PatientID": "QIDO-*", **filters})
    return set(values(res, "00100020"))


def test_every_level_and_scope(loaded: Loaded) -> None:
    c = loaded.client
    ours = sum(s["instances"] for s in loaded.studies.values())
    assert len(c.search_for_instances()) == ours + loaded.corpus_instances
    study, info = next(iter(loaded.studies.items()))
    series = c.search_for_series(study_instance_uid=study)
    assert set(values(series, "0020000E")) == set(info["series"])
    assert all(s["00081190"]["Value"][0].endswith(f"/studies/{study}/series/{s['0020000E']['Value'][0]}")
               for s in series)
    assert len(c.search_for_instances(study_instance_uid=study)) == info["instances"]
    per_series = c.search_for_instances(study_instance_uid=study, series_instance_uid=info["series"][0])
    assert len(per_series) == info["instances"] // len(info["series"])
    assert all("/instances/" in i["00081190"]["Value"][0] for i in per_series)
    # Unscoped series and instance searches carry the study's (and series') identifying attributes.
    all_series = c.search_for_series(search_filters={"PatientID": "QIDO-4"})
    assert len(all_series) == 3 and all(s["0020000D"]["Value"] for s in all_series)
    inst = c.search_for_instances(search_filters={"PatientID": "QIDO-3"})
    assert len(inst) == 4 and all(i["0020000E"]["Value"] and i["0020000D"]["Value"] for i in inst)
    studies = c.search_for_studies(search_filters={"PatientID": "QIDO-1"})
    assert values(studies, "00201206") == [2] and values(studies, "00201208") == [6]
    assert values(studies, "00080061") == ["CT"]


def test_single_value_by_keyword_and_tag(loaded: Loaded) -> None:
    for key in ("PatientID", "00100020", "0010,0020"):
        r = get(loaded, "/studies", **{key: "QIDO-2"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/dicom+json"
        assert values(r.json(), "00100020") == ["QIDO-2"]
    assert qido_ids(loaded, AccessionNumber="A-QIDO-3") == {"QIDO-3"}
    assert qido_ids(loaded, ModalitiesInStudy="US") == {"QIDO-4"}
    assert qido_ids(loaded, Modality="MR") == {"QIDO-2"}  # a series attribute matched at study level


def test_wildcards(loaded: Loaded) -> None:
    assert qido_ids(loaded, PatientName="doe*") == {"QIDO-3"}  # PN matching ignores case
    assert qido_ids(loaded, StudyDescription="*MR") == {"QIDO-2"}
    assert qido_ids(loaded, PatientID="QIDO-?") == {"QIDO-1", "QIDO-2", "QIDO-3", "QIDO-4"}
    assert qido_ids(loaded, StudyDescription="*o*") == {"QIDO-3", "QIDO-4"}  # case-sensitive (not PN)
    assert qido_ids(loaded, StudyDescription="*t*") == {"QIDO-1"}


def test_date_ranges(loaded: Loaded) -> None:
    assert qido_ids(loaded, StudyDate="20240101-20240131") == {"QIDO-1", "QIDO-2"}
    assert qido_ids(loaded, StudyDate="20240201-") == {"QIDO-4"}
    assert qido_ids(loaded, StudyDate="-20231231") == {"QIDO-3"}
    assert qido_ids(loaded, StudyDate="20240105") == {"QIDO-1"}


def test_uid_lists(loaded: Loaded) -> None:
    uids = list(loaded.studies)[:2]
    expected = {loaded.studies[u]["PatientID"] for u in uids}
    r = get(loaded, "/studies", StudyInstanceUID=",".join(uids))
    assert set(values(r.json(), "00100020")) == expected
    r = get(loaded, "/studies", StudyInstanceUID="\\".join(uids))
    assert set(values(r.json(), "00100020")) == expected
    # Repeating the key lists too.
    r = httpx.get(loaded.server.dicomweb_url + "/studies",
                  params=[("StudyInstanceUID", uids[0]), ("StudyInstanceUID", uids[1])])
    assert set(values(r.json(), "00100020")) == expected


def test_universal_matching_returns_the_key(loaded: Loaded) -> None:
    r = get(loaded, "/studies", PatientID="QIDO-3", PatientBirthDate="", ReferringPhysicianName="*")
    (study,) = r.json()
    assert study["00100030"] == {"vr": "DA"}
    assert "00080090" in study


def test_fuzzy_person_names(loaded: Loaded) -> None:
    # Case- and accent-insensitive: "muller" finds Müller and MULLER.
    assert qido_ids(loaded, PatientName="muller*") == {"QIDO-1", "QIDO-2"}
    res = loaded.client.search_for_studies(fuzzymatching=True, search_filters={"PatientName": "jurg"})
    assert values(res, "00100020") == ["QIDO-1"]
    res = loaded.client.search_for_studies(fuzzymatching=True, search_filters={"PatientName": "marie"})
    assert values(res, "00100020") == ["QIDO-4"]
    res = loaded.client.search_for_studies(fuzzymatching=False, search_filters={"PatientName": "jurg"})
    assert res == []


def test_includefield_forms(loaded: Loaded) -> None:
    # As OHIF sends it: one comma list.
    r = get(loaded, "/studies", PatientID="QIDO-1", includefield="00081030,00080060,00080090,00100030")
    (s,) = r.json()
    assert s["00081030"]["Value"] == ["Chest CT"] and "00100030" in s
    # URL-encoded commas and repeated parameters, keywords and tags mixed.
    url = loaded.server.dicomweb_url + "/studies/{}/series?includefield=00080021%2C0008103E&includefield=SeriesNumber"
    study = next(u for u, i in loaded.studies.items() if i["PatientID"] == "QIDO-1")
    series = httpx.get(url.format(study)).json()
    assert sorted(values(series, "0008103E")) == ["Chest CT series 1", "Chest CT series 2"]
    assert all("00080021" in x for x in series)
    # A non-indexed attribute comes from the cached header.
    inst = loaded.client.search_for_instances(study_instance_uid=study, fields=["SliceThickness"])
    assert set(values(inst, "00180050")) == {2.5}
    # includefield=all
    (full,) = get(loaded, "/studies", PatientID="QIDO-2", includefield="all").json()
    assert full["00081030"]["Value"] == ["Brain MR"] and "00080050" in full
    assert not any("BulkDataURI" in v for v in full.values())


def test_paging_walks_the_full_list(loaded: Loaded) -> None:
    full = get(loaded, "/instances").json()
    sops = values(full, "00080018")
    assert len(sops) == len(set(sops))
    walked: list[str] = []
    offset = 0
    while True:
        page = get(loaded, "/instances", limit=7, offset=offset).json()
        if not page:
            break
        assert len(page) <= 7
        walked += values(page, "00080018")
        offset += len(page)
    assert walked == sops
    # The walk left keyset cursors (query signature, next offset) -> last row id for every page boundary.
    cursors = loaded.server.app.state.qido_keyset._map
    assert {off for (_sig, off) in cursors} >= set(range(7, len(sops), 7))
    # The walk left keyset cursors; a cold jump to an offset gives the same page as the cursor path.
    cold = get(loaded, "/instances", limit=5, offset=13, includefield="SOPInstanceUID").json()
    assert values(cold, "00080018") == sops[13:18]
    # dicomweb-client's own paging (get_remaining) agrees.
    remaining = loaded.client.search_for_instances(limit=10, get_remaining=True)
    assert values(remaining, "00080018") == sops


def test_empty_result_is_200_empty_array(loaded: Loaded) -> None:
    r = get(loaded, "/studies", PatientID="NOBODY")
    assert r.status_code == 200 and r.json() == []
    assert loaded.client.search_for_series(search_filters={"Modality": "XX"}) == []


@pytest.mark.parametrize("params", [
    {"foo": "1"},
    {"limit": "ten"},
    {"limit": "-1"},
    {"offset": "x"},
    {"fuzzymatching": "maybe"},
    {"StudyDate": "2024-01-01"},
    {"StudyInstanceUID": "not-a-uid"},
    {"includefield": "NoSuchKeyword"},
    {"PatientID": ["a", "b"]},
])
def test_bad_parameters_are_400(loaded: Loaded, params: dict[str, Any]) -> None:
    r = get(loaded, "/studies", **params)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["status"] == 400 and body["error"]


def test_bad_path_uid_accept_and_methods(loaded: Loaded) -> None:
    assert get(loaded, "/studies/1.2.x/series").status_code == 400
    r = httpx.get(loaded.server.dicomweb_url + "/studies", headers={"Accept": "application/dicom+xml"})
    assert r.status_code == 406 and r.json()["status"] == 406
    r = httpx.put(loaded.server.dicomweb_url + "/studies")
    assert r.status_code == 405 and r.json() == {"error": "method not allowed on this resource", "status": 405}
    r = httpx.get(loaded.server.base_url + "/dicom-web/nothing/here")
    assert r.status_code == 404 and r.json()["status"] == 404
    # Weasis sends an empty key ("?&includefield=…"): ignored.
    r = httpx.get(loaded.server.dicomweb_url + "/studies?&PatientID=QIDO-1")
    assert r.status_code == 200 and len(r.json()) == 1


def test_openapi_lists_the_routes(loaded: Loaded) -> None:
    doc = httpx.get(loaded.server.base_url + "/openapi.json").json()
    assert "/dicom-web/studies" in doc["paths"]
    assert "/dicom-web/studies/{study}/series/{series}/instances" in doc["paths"]


def test_matches_cfind_engine(loaded: Loaded) -> None:
    """QIDO-RS and the shared engine (used by C-FIND) agree."""
    from dicomvault.domain.tags import Level

    q = loaded.server.archive.query
    direct = q.search(q.build_spec(Level.STUDY, {"PatientName": "MULLER*"}))
    via_http = get(loaded, "/studies", PatientName="MULLER*").json()
    assert values(direct, "0020000D") == values(via_http, "0020000D")
    assert pydicom.Dataset.from_json(via_http[0]).PatientID in ("QIDO-1", "QIDO-2")
