"""DICOMweb over a cold (GLACIER, moto) store: 503 + Retry-After + reason before the recall, the admin recall
route, then the same requests served, without restarting anything."""

from __future__ import annotations

from pathlib import Path

import httpx

from dicomvault.dicomweb.errors import RETRY_REASONS
from dicomvault.domain.errors import NotRestored
from tests.dicomweb.dw_live import WIDE_ANONYMOUS, running
from tests.recall_support import cold_settings, store_study


def _accept(url: str) -> dict[str, str]:
    return {"Accept": "image/jpeg"} if url.endswith("/rendered") else {}


def test_not_restored_answers_503_then_recall_serves(tmp_path: Path, s3_bucket_url: str) -> None:
    settings = cold_settings(tmp_path, s3_bucket_url, anonymous_scopes=WIDE_ANONYMOUS)
    with running(settings) as server:
        study, objects = store_study(server.archive, 2)
        record = server.archive.retrieve.locate(study_uid=study)[0]
        series, sop = record.series_uid, record.sop_uid
        base = f"{server.base_url}/dicom-web/studies/{study}"
        urls = [base, f"{base}/series/{series}", f"{base}/series/{series}/instances/{sop}",
                f"{base}/series/{series}/instances/{sop}/frames/1",
                f"{base}/series/{series}/instances/{sop}/rendered"]
        with httpx.Client(timeout=30) as client:
            for url in urls:
                r = client.get(url, headers=_accept(url))
                assert r.status_code == 503, (url, r.status_code)
                assert r.headers["Retry-After"] == "3600"
                body = r.json()
                assert body["status"] == 503 and body["reason"] == RETRY_REASONS[NotRestored]
                assert "cold storage class" in body["reason"] and body["restoring"] is False
            assert client.get(f"{base}/metadata").status_code == 200  # the index answers metadata

            recall = f"{server.base_url}/admin/studies/{study}/recall"
            assert client.post(recall).status_code == 403  # admin is never anonymous
            assert server.archive.tokens is not None
            _, secret = server.archive.tokens.create("ops", ["admin"])
            admin = {"Authorization": f"Bearer {secret}"}  # once a token exists, anonymous access ends
            r = client.post(recall, headers=admin)
            assert r.status_code == 202, r.text
            answer = r.json()
            assert (answer["blobs"], answer["requested"]) == (2, 2) and answer["job_id"] is not None

            for url in urls:
                assert client.get(url, headers={**admin, **_accept(url)}).status_code == 200, url
            single = client.get(f"{base}/series/{series}/instances/{sop}",
                                headers={**admin, "Accept": "application/dicom; transfer-syntax=*"})
            assert single.content == objects[sop]
            again = client.post(recall, headers=admin)
            assert again.status_code == 200 and again.json()["readable_all"] is True
