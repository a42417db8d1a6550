"""The upload page and its zip endpoint: each member ingested and reported; zip bombs and non-DICOM refused."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from dicomvault.bootstrap import Archive, build_archive
from dicomvault.settings import Settings
from tests.helpers import make_ct
from tests.webui.browser_data import token
from tests.webui.pages_site import csrf_of, login, pages_client


def zipped(members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def post_zip(client, body: bytes, csrf: str):  # type: ignore[no-untyped-def]
    return client.post("/ui/api/upload-zip", content=body,
                       headers={"content-type": "application/zip", "x-csrf-token": csrf})


def test_the_page_needs_the_write_scope(archive: Archive) -> None:
    reader, writer = token(archive, "read"), token(archive, "read", "write", name="bob")
    with pages_client(archive) as client:
        login(client, reader)
        assert client.get("/ui/upload").status_code == 403
        assert 'href="/ui/upload"' not in client.get("/ui/studies").text
        assert post_zip(client, zipped({}), csrf_of(client)).status_code == 403
        login(client, writer)
        page = client.get("/ui/upload")
        assert page.status_code == 200 and 'src="/ui/static/upload.js"' in page.text
        assert "webkitdirectory" in page.text and 'href="/ui/upload"' in page.text
        assert client.get("/ui/static/upload.js").status_code == 200


def test_each_member_is_stored_and_reported(archive: Archive) -> None:
    first, second = make_ct(sop="1.2.3.1", study="1.2.3"), make_ct(sop="1.2.3.2", study="1.2.3", seed=1)
    archive.ingest.ingest(io.BytesIO(second), source="before")
    body = zipped({"CD/IMG1": first, "CD/IMG2": second, "CD/readme.txt": b"hello", "__MACOSX/._IMG1": b"x",
                   "CD/inner.zip": zipped({"a": first}), "CD/": b""})
    with pages_client(archive) as client:
        login(client, token(archive, "read", "write"))
        assert post_zip(client, body, "wrong").status_code == 403
        answer = post_zip(client, body, csrf_of(client))
        assert answer.status_code == 200, answer.text
        files = {f["name"]: f for f in answer.json()["files"]}
        assert files["CD/IMG1"]["status"] == "stored" and files["CD/IMG1"]["study_uid"] == "1.2.3"
        assert files["CD/IMG2"]["status"] == "duplicate"
        assert files["CD/readme.txt"]["status"] == "rejected" and files["CD/readme.txt"]["reason"]
        assert files["CD/inner.zip"]["status"] == "rejected" and "zip" in files["CD/inner.zip"]["reason"]
        assert files["__MACOSX/._IMG1"]["status"] == "skipped"
        assert "CD/" not in files
        assert answer.json()["counts"] == {"stored": 1, "duplicate": 1, "rejected": 2, "skipped": 1}
        assert archive.retrieve.locate(sop_uids=["1.2.3.1"])[0].blob.size == len(first)
        not_zip = post_zip(client, b"not a zip at all", csrf_of(client))
        assert not_zip.status_code == 400 and "zip" in not_zip.json()["error"]


@pytest.fixture
def small_limits(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_upload_bytes": 8 << 20})


def test_a_zip_bomb_is_refused_without_inflating_it(small_limits: Settings, tmp_path: Path) -> None:
    archive = build_archive(small_limits)
    try:
        bomb = zipped({"bomb.dcm": bytes(64 << 20), "ok.dcm": make_ct(sop="1.2.9")})
        assert len(bomb) < 200_000
        with pages_client(archive) as client:
            login(client, token(archive, "read", "write"))
            files = post_zip(client, bomb, csrf_of(client)).json()["files"]
            assert files[0]["status"] == "rejected" and "limit of 8388608 bytes" in files[0]["reason"]
            assert files[1]["status"] == "stored"
            many = zipped({f"f{i}.dcm": bytes(3 << 20) for i in range(4)})  # 12 MiB inflated in all
            statuses = [f["status"] for f in post_zip(client, many, csrf_of(client)).json()["files"]]
            assert statuses[:2] == ["rejected", "rejected"] and "zip's members" in post_zip(
                client, many, csrf_of(client)).json()["files"][2]["reason"]
            too_big = post_zip(client, bytes(9 << 20), csrf_of(client))
            assert too_big.status_code == 413
    finally:
        archive.close()
