"""The share link pages: create a link for a study (once-shown link, password, de-identification refused), list
and revoke links (anti-CSRF token), and open a link (password form, lockout, refusal pages that are recorded)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import httpx
import pytest

from dicomvault.bootstrap import Archive
from dicomvault.services.sessions import SESSION_COOKIE
from tests.helpers import make_ct
from tests.webui.pages_site import csrf_of, login, new_client, pages_client

STUDY = "1.2.826.0.1.3680043.8.498.77"


@pytest.fixture
def owner(archive: Archive) -> Iterator[httpx.Client]:
    """A browser logged in with a token that may share (``write``, the default ``share_links_scope``)."""
    assert archive.tokens is not None
    archive.ingest.ingest(io.BytesIO(make_ct(study=STUDY, PatientName="Roe^Jane", StudyDescription="CT HEAD")),
                          source="test")
    _, secret = archive.tokens.create("alice", ["read", "write"])
    with pages_client(archive) as client:
        login(client, secret)
        yield client


def create(client: httpx.Client, **fields: str) -> httpx.Response:
    data = {"study": STUDY, "days": "7", "csrf_token": csrf_of(client), **fields}
    return client.post("/ui/shares", data=data)


def link_of(page: httpx.Response) -> str:
    found = re.search(r'value="(http://[^"]+/share/(dvl_[^"]+))"', page.text)
    assert found is not None, page.text
    return "/share/" + found.group(2)


def test_the_new_link_form_names_the_study(owner: httpx.Client) -> None:
    page = owner.get(f"/ui/shares/new?study={STUDY}")
    assert page.status_code == 200 and "Roe^Jane" in page.text and "CT HEAD" in page.text
    assert 'name="csrf_token"' in page.text and 'name="deidentify"' in page.text
    assert owner.get("/ui/shares/new?study=1.2.3.4").status_code == 404


def test_create_shows_the_link_once_and_it_opens_the_viewer_on_the_study(owner: httpx.Client) -> None:
    page = create(owner)
    assert page.status_code == 201, page.text
    assert "/ui/static/shares.js" in page.text and 'id="copy-share"' in page.text
    path = link_of(page)
    listing = owner.get("/ui/shares")
    assert listing.status_code == 200 and "Roe^Jane" in listing.text and "alice" in listing.text
    assert path.split("/")[-1] not in listing.text  # the secret is never shown again
    with new_client(owner) as visitor:
        opened = visitor.get(path)
        assert opened.status_code == 303 and opened.headers["location"] == f"/viewer?StudyInstanceUIDs={STUDY}"
        cookie = opened.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie
        assert SESSION_COOKIE in visitor.cookies
        info = visitor.get("/ui/session").json()
        assert info["study"] == STUDY and info["scopes"] == ["read"]
    assert re.search(r'<td class="num">1</td>', owner.get("/ui/shares").text)  # one use


def test_create_refuses_deidentification_and_needs_the_csrf_token(owner: httpx.Client, archive: Archive) -> None:
    refused = create(owner, deidentify="yes")
    assert refused.status_code == 400 and "de-identification is not available yet" in refused.text
    assert owner.post("/ui/shares", data={"study": STUDY, "days": "7"}).status_code == 403
    assert create(owner, days="400").status_code == 400
    assert create(owner, days="soon").status_code == 400
    assert archive.shares is not None and archive.shares.all() == []


def test_read_only_users_may_not_share(archive: Archive, owner: httpx.Client) -> None:
    assert archive.tokens is not None
    _, reader = archive.tokens.create("bob", ["read"])
    with new_client(owner) as client:
        login(client, reader)
        assert client.get("/ui/shares").status_code == 403
        assert client.get(f"/ui/shares/new?study={STUDY}").status_code == 403
        refused = client.post("/ui/shares", data={"study": STUDY, "days": "1", "csrf_token": csrf_of(client)})
        assert refused.status_code == 403 and "text/html" in refused.headers["content-type"]


def test_revoke_from_the_list_ends_the_visitor_s_access(owner: httpx.Client, archive: Archive) -> None:
    path = link_of(create(owner))
    assert archive.shares is not None
    [link] = archive.shares.all()
    with new_client(owner) as visitor:
        assert visitor.get(path).status_code == 303
        assert visitor.get(f"/dicom-web/studies/{STUDY}/metadata").status_code == 200
        assert owner.post(f"/ui/shares/{link.id}/revoke", data={}).status_code == 403  # no csrf
        done = owner.post(f"/ui/shares/{link.id}/revoke", data={"csrf_token": csrf_of(owner)})
        assert done.status_code == 303 and done.headers["location"] == "/ui/shares"
        assert visitor.get(f"/dicom-web/studies/{STUDY}/metadata").status_code == 401
        again = visitor.get(path)
        assert again.status_code == 410 and "revoked" in again.text and "text/html" in again.headers["content-type"]
    detail = owner.get(f"/ui/shares/{link.id}")
    assert detail.status_code == 200 and "revoked" in detail.text and "opened" in detail.text
    assert owner.get("/ui/shares/999").status_code == 404


def test_a_password_link_asks_for_it_and_locks_after_wrong_ones(owner: httpx.Client, archive: Archive) -> None:
    path = link_of(create(owner, password="open sesame"))
    with new_client(owner) as visitor:
        form = visitor.get(path)
        assert form.status_code == 200 and 'type="password"' in form.text and SESSION_COOKIE not in visitor.cookies
        for _ in range(archive.settings.share_password_attempts - 1):
            wrong = visitor.post(path, data={"password": "guess"})
            assert wrong.status_code == 401 and "wrong password" in wrong.text
        locked = visitor.post(path, data={"password": "guess"})
        assert locked.status_code == 429 and "locked" in locked.text
        assert visitor.post(path, data={"password": "open sesame"}).status_code == 429
        assert SESSION_COOKIE not in visitor.cookies
    with new_client(owner) as other:
        path2 = link_of(create(owner, password="open sesame"))
        assert other.post(path2, data={"password": "open sesame"}).status_code == 303


def test_unknown_links_answer_a_404_page(owner: httpx.Client) -> None:
    with new_client(owner) as visitor:
        for path in ("/share/dvl_nothing", "/share/x", "/share/" + "dvl_" + "a" * 300):
            answer = visitor.get(path)
            assert answer.status_code == 404 and "cannot be opened" in answer.text, path
