"""DELETE of instances, series and studies: 204, then gone from WADO-RS and QIDO-RS, blobs removed; 404 when
nothing matched; the ``delete`` scope is required."""

from __future__ import annotations

import httpx
import pytest
from dicomweb_client import DICOMwebClient
from pydicom.uid import generate_uid
from requests.exceptions import HTTPError

from tests.dicomweb.dw_live import DwServer
from tests.dicomweb.dw_wado_support import instance_url, store
from tests.helpers import make_ct


def test_delete_instance_series_study(dw_server: DwServer) -> None:
    archive = dw_server.archive
    study, s1, s2 = generate_uid(), generate_uid(), generate_uid()
    recs = [store(archive, make_ct(study=study, series=s, seed=i)) for i, s in enumerate((s1, s1, s2, s2))]
    client = DICOMwebClient(dw_server.dicomweb_url)
    base = dw_server.dicomweb_url

    client.delete_instance(study, s1, recs[0].sop_uid)
    assert httpx.get(instance_url(base, recs[0])).status_code == 404
    assert not archive.blobs.exists(recs[0].blob.key)
    assert archive.blobs.exists(recs[1].blob.key)
    found = {i["00080018"]["Value"][0] for i in client.search_for_instances(study_instance_uid=study)}
    assert found == {r.sop_uid for r in recs[1:]}

    resp = httpx.delete(f"{base}/studies/{study}/series/{s1}")
    assert resp.status_code == 204 and resp.content == b""
    assert {s["0020000E"]["Value"][0] for s in client.search_for_series(study_instance_uid=study)} == {s2}

    assert httpx.delete(f"{base}/studies/{study}").status_code == 204
    assert client.search_for_studies(search_filters={"StudyInstanceUID": study}) == []
    assert httpx.get(f"{base}/studies/{study}/metadata").status_code == 404
    assert not any(archive.blobs.exists(r.blob.key) for r in recs)

    for url in (f"{base}/studies/{study}", f"{base}/studies/{study}/series/{s2}", instance_url(base, recs[3])):
        resp = httpx.delete(url)
        assert resp.status_code == 404 and resp.json()["status"] == 404
    with pytest.raises(HTTPError):
        client.delete_study(study)


def test_delete_leaves_other_studies_untouched(dw_server: DwServer) -> None:
    keep = store(dw_server.archive, make_ct(seed=5))
    gone = store(dw_server.archive, make_ct(seed=6))
    assert httpx.delete(f"{dw_server.dicomweb_url}/studies/{gone.study_uid}").status_code == 204
    assert httpx.get(instance_url(dw_server.dicomweb_url, keep) + "/metadata").status_code == 200
    assert dw_server.archive.blobs.exists(keep.blob.key)


def test_delete_needs_the_delete_scope(make_dw_server) -> None:
    server = make_dw_server(allow_anonymous=False)
    assert server.archive.tokens is not None
    _, reader = server.archive.tokens.create("reader", ["read"])
    _, deleter = server.archive.tokens.create("deleter", ["delete"])
    rec = store(server.archive, make_ct())
    url = f"{server.dicomweb_url}/studies/{rec.study_uid}"
    assert httpx.delete(url).status_code == 401
    assert httpx.delete(url, headers={"Authorization": f"Bearer {reader}"}).status_code == 403
    assert httpx.get(url + "/metadata", headers={"Authorization": f"Bearer {reader}"}).status_code == 200
    assert httpx.delete(url, headers={"Authorization": f"Bearer {deleter}"}).status_code == 204
