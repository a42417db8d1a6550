"""Login to the web pages: the session cookie then authenticates the pages and the viewer's DICOMweb requests."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from dicomvault.bootstrap import Archive
from dicomvault.dicomweb.app import create_app
from dicomvault.services.sessions import SESSION_COOKIE
from dicomvault.webui.page_auth import safe_next
from dicomvault.webui.pages import mount_pages
from dicomvault.webui.viewer import mount_viewer
from tests.webui.live_server import LiveServer
from tests.webui.pages_site import csrf_of, login, new_client, pages_client


def token(archive: Archive, *scopes: str) -> str:
    assert archive.tokens is not None
    return archive.tokens.create("alice", list(scopes))[1]


def test_pages_send_a_visitor_without_access_to_the_login_page(archive: Archive) -> None:
    token(archive, "read")  # a token exists: anonymous access is off
    with pages_client(archive) as client:
        answer = client.get("/ui/")
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/login?next=%2Fui%2F"
        page = client.get("/ui/login")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "content-security-policy" in page.headers and 'name="token"' in page.text


def test_a_wrong_token_gets_the_login_page_again_with_the_reason(archive: Archive) -> None:
    token(archive, "read")
    with pages_client(archive) as client:
        answer = client.post("/ui/login", data={"token": "dv_wrong"})
        assert answer.status_code == 401 and "invalid, expired or revoked" in answer.text
        assert SESSION_COOKIE not in answer.cookies


def test_login_then_pages_and_dicomweb_accept_the_session(archive: Archive) -> None:
    secret = token(archive, "read")
    with pages_client(archive) as client:
        assert client.get("/dicom-web/studies").status_code == 401
        assert login(client, secret, "/dicom-web/studies") == "/dicom-web/studies"
        assert client.get("/ui/").status_code in (200, 303)
        assert client.get("/dicom-web/studies").status_code in (200, 204)
        assert client.get("/ui/session").json()["name"] == "alice"


def test_changing_requests_with_the_cookie_need_the_csrf_token(archive: Archive) -> None:
    secret = token(archive, "read", "write", "delete")
    with pages_client(archive) as client:
        login(client, secret)
        headers = {"content-type": 'multipart/related; type="application/dicom"; boundary=b'}
        refused = client.post("/dicom-web/studies", content=b"--b--\r\n", headers=headers)
        assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["error"]
        assert client.delete("/dicom-web/studies/1.2.3", headers={"X-CSRF-Token": "wrong"}).status_code == 403
        accepted = client.delete("/dicom-web/studies/1.2.3", headers={"X-CSRF-Token": csrf_of(client)})
        assert accepted.status_code == 404  # authenticated and allowed: the study does not exist


def test_logout_needs_the_csrf_token_and_ends_the_session_everywhere(archive: Archive) -> None:
    secret = token(archive, "read")
    with pages_client(archive) as client:
        login(client, secret)
        stolen = client.cookies[SESSION_COOKIE]
        assert client.post("/ui/logout", data={"csrf_token": "nope"}).status_code == 403
        answer = client.post("/ui/logout", data={"csrf_token": csrf_of(client)})
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/login"
        with new_client(client) as other:
            other.cookies.set(SESSION_COOKIE, stolen)
            assert other.get("/dicom-web/studies").status_code == 401
            assert other.get("/ui/").status_code == 303


def test_errors_on_pages_are_html_and_on_the_api_json(archive: Archive) -> None:
    with pages_client(archive) as client:  # no token: anonymous read on loopback
        page = client.get("/ui/no-such-page")
        assert page.status_code == 404 and "text/html" in page.headers["content-type"]
        api = client.get("/dicom-web/studies/1.2.3/metadata")
        assert api.status_code == 404 and api.headers["content-type"].startswith("application/json")


def test_anonymous_visitors_cannot_submit_changing_forms(archive: Archive) -> None:
    with pages_client(archive) as client:
        assert client.get("/ui/session").json()["authenticated"] is False
        assert client.post("/ui/logout", data={"csrf_token": ""}).status_code == 403


@pytest.mark.parametrize("value", ["//evil.example/x", "https://evil.example", "/\\evil", "", None, "ui"])
def test_login_never_sends_the_browser_to_another_site(value: str | None) -> None:
    assert safe_next(value) == "/ui/"
    assert safe_next("/ui/studies?x=1") == "/ui/studies?x=1"


def test_the_viewer_sends_a_visitor_to_the_login_page_and_works_after_it(archive: Archive, tmp_path: Path) -> None:
    build = tmp_path / "ohif"
    build.mkdir()
    (build / "index.html").write_text("<!doctype html><title>OHIF</title>")
    (build / "app.0123456789abcdef.js").write_text("console.log(1)")
    secret = token(archive, "read")
    app = create_app(archive)
    mount_pages(app)
    assert mount_viewer(app, archive.settings.model_copy(update={"viewer_dir": build}))
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        shell = client.get("/viewer", params={"StudyInstanceUIDs": "1.2.3"})
        assert shell.status_code == 303
        assert shell.headers["location"] == "/ui/login?next=%2Fviewer%3FStudyInstanceUIDs%3D1.2.3"
        assert client.get("/app.0123456789abcdef.js").status_code == 200  # files hold no data
        assert login(client, secret, "/viewer?StudyInstanceUIDs=1.2.3") == "/viewer?StudyInstanceUIDs=1.2.3"
        assert client.get("/viewer", params={"StudyInstanceUIDs": "1.2.3"}).status_code == 200
