"""DICOMweb DELETE with ``delete_grace_days``: a soft delete (gone from QIDO-RS and WADO-RS at once, blobs kept
and fixity clean, the caller in the deletion log), restored byte-identical; ``retention_min_days`` answers 409
with a JSON reason."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from pydicom.uid import generate_uid

from dicomvault.domain.trash import Deletion, DeletionAction
from tests.dicomweb.dw_live import DwServer
from tests.dicomweb.dw_wado_support import instance_url, store
from tests.helpers import make_ct


def test_delete_with_a_grace_period_is_a_soft_delete(make_dw_server: Callable[..., DwServer]) -> None:
    server = make_dw_server(delete_grace_days=7)
    archive, base = server.archive, server.dicomweb_url
    assert archive.trash is not None
    study = generate_uid()
    datas = [make_ct(study=study, seed=i) for i in range(2)]
    recs = [store(archive, d) for d in datas]

    assert httpx.delete(f"{base}/studies/{study}").status_code == 204
    found = httpx.get(f"{base}/studies", params={"StudyInstanceUID": study})
    assert found.status_code == 204 or (found.status_code == 200 and found.json() == [])
    assert httpx.get(f"{base}/studies/{study}").status_code == 404
    assert httpx.get(instance_url(base, recs[0])).status_code == 404
    assert all(archive.blobs.exists(r.blob.key) for r in recs)
    assert archive.fixity.check().clean
    entry = archive.trash.deletion_log(study)[0]
    assert (entry.action, entry.by, entry.instances) == (DeletionAction.SOFT_DELETE, "http:anonymous", 2)

    assert archive.trash.restore(study, deletion=Deletion("cli:op")).restored == 2
    for rec, data in zip(recs, datas, strict=True):
        resp = httpx.get(instance_url(base, rec), headers={"Accept": "multipart/related; type=\"application/dicom\""})
        assert resp.status_code == 200 and data in resp.content
    assert len(httpx.get(f"{base}/studies", params={"StudyInstanceUID": study}).json()) == 1


def test_retention_min_days_answers_409(make_dw_server: Callable[..., DwServer]) -> None:
    server = make_dw_server(retention_min_days=3650)
    rec = store(server.archive, make_ct(StudyDate="20990101"))
    resp = httpx.delete(f"{server.dicomweb_url}/studies/{rec.study_uid}")
    assert resp.status_code == 409
    body = resp.json()
    assert body["status"] == 409 and body["reason"] == "retention_min_days" and "retention" in body["error"]
    assert httpx.get(instance_url(server.dicomweb_url, rec) + "/metadata").status_code == 200
    old = store(server.archive, make_ct(StudyDate="19990101"))
    assert httpx.delete(f"{server.dicomweb_url}/studies/{old.study_uid}").status_code == 204
