"""The fast paths of DICOMweb reads against a real server: study searches answered from the cached per-study
objects (byte-identical to the per-row answer, current after STOW and DELETE), series metadata from the
per-process document cache (current after changes), and whole-study retrieval with a Content-Length."""

from __future__ import annotations

import hashlib

import httpx
import orjson
from pydicom.uid import generate_uid

from dicomvault.domain.tags import Level
from tests.dicomweb.dw_live import DwServer
from tests.dicomweb.dw_wado_support import parse_multipart, store
from tests.helpers import make_ct

JSON = {"Accept": "application/dicom+json"}
ANY_TS = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def _per_row_answer(server: DwServer, keys: dict[str, str]) -> bytes:
    """What the per-row path answers to a study search: the query service's objects plus their RetrieveURL."""
    query = server.archive.query
    results, _ = query.search_page(query.build_spec(Level.STUDY, keys, limit=10_000))
    for item in results:
        item["00081190"] = {"vr": "UR", "Value": [f"{server.dicomweb_url}/studies/{item['0020000D']['Value'][0]}"]}
    return orjson.dumps(results)


def test_study_search_from_cached_objects_is_byte_identical(dw_server: DwServer) -> None:
    archive = dw_server.archive
    for i in range(4):
        study = generate_uid()
        for s in range(i % 2 + 1):
            store(archive, make_ct(study=study, series=generate_uid(), PatientID=f"C{i}", seed=s,
                                   PatientName=f"Cache^Test{i}", Modality=("CT", "MR")[s]))
    for keys in ({}, {"PatientName": "cache*"}, {"ModalitiesInStudy": "MR"}, {"PatientID": "C2"}):
        resp = httpx.get(f"{dw_server.dicomweb_url}/studies", params=keys, headers=JSON)
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/dicom+json"
        assert resp.content == _per_row_answer(dw_server, keys), keys
    # includefield beyond the default keys: the per-row path, still the same RetrieveURL
    resp = httpx.get(f"{dw_server.dicomweb_url}/studies", params={"includefield": "InstitutionName"}, headers=JSON)
    assert all("00080080" in item and "00081190" in item for item in resp.json())


def test_study_search_and_metadata_follow_stow_and_delete(dw_server: DwServer) -> None:
    archive, base = dw_server.archive, dw_server.dicomweb_url
    study, series = generate_uid(), generate_uid()
    store(archive, make_ct(study=study, series=series, PatientID="FOLLOW"))
    meta_url = f"{base}/studies/{study}/series/{series}/metadata"
    with httpx.Client(headers=JSON) as http:
        assert len(http.get(meta_url).json()) == 1
        assert http.get(f"{base}/studies", params={"PatientID": "FOLLOW"}).json()[0]["00201208"]["Value"] == [1]

        extra = store(archive, make_ct(study=study, series=series, PatientID="FOLLOW", seed=1))
        assert len(http.get(meta_url).json()) == 2
        assert http.get(f"{base}/studies", params={"PatientID": "FOLLOW"}).json()[0]["00201208"]["Value"] == [2]

        assert http.delete(f"{base}/studies/{study}/series/{series}/instances/{extra.sop_uid}").status_code == 204
        assert len(http.get(meta_url).json()) == 1
        assert http.get(f"{base}/studies", params={"PatientID": "FOLLOW"}).json()[0]["00201208"]["Value"] == [1]

        assert http.delete(f"{base}/studies/{study}").status_code == 204
        assert http.get(meta_url).status_code == 404
        assert http.get(f"{base}/studies", params={"PatientID": "FOLLOW"}).json() == []


def test_whole_study_retrieval_announces_its_length(dw_server: DwServer) -> None:
    study = generate_uid()
    recs = [store(dw_server.archive, make_ct(study=study, series=generate_uid(), seed=i, rows=64, columns=64))
            for i in range(5)]
    resp = httpx.get(f"{dw_server.dicomweb_url}/studies/{study}", headers={"Accept": ANY_TS})
    assert resp.status_code == 200
    assert resp.headers["content-length"] == str(len(resp.content))
    parts = parse_multipart(resp)
    assert sorted(hashlib.sha256(body).hexdigest() for _, body in parts) == sorted(r.blob.sha256 for r in recs)
    assert resp.content.endswith(b"--\r\n")
