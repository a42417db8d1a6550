"""``/ui/admin``: jobs (retry, cancel), API tokens (secret shown once, revoke), settings (secrets masked), audit;
admins only, every change with the anti-CSRF token."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from dicomvault.bootstrap import Archive
from dicomvault.ports.jobs import JobState
from dicomvault.settings import Settings
from dicomvault.webui.settings_view import MASK, mask_text, masked_settings
from tests.webui.pages_site import csrf_of, login, new_client, pages_client


def admin_client(archive: Archive, client: httpx.Client) -> str:
    """Log ``client`` in as an admin; returns the anti-CSRF token."""
    assert archive.tokens is not None
    login(client, archive.tokens.create("root", ["admin"])[1])
    return csrf_of(client)


def test_admin_pages_need_the_admin_scope(archive: Archive) -> None:
    assert archive.tokens is not None
    reader = archive.tokens.create("reader", ["read", "write"])[1]
    with pages_client(archive) as client:
        assert client.get("/ui/admin").status_code == 303  # not logged in: to the login page
        login(client, reader)
        for path in ("/ui/admin", "/ui/admin/jobs", "/ui/admin/tokens", "/ui/admin/settings", "/ui/admin/audit"):
            answer = client.get(path)
            assert answer.status_code == 403 and "admin" in answer.text, path
        assert client.post("/ui/admin/tokens", data={"csrf_token": csrf_of(client), "name": "x",
                                                     "scopes": ["admin"]}).status_code == 403
        assert len(archive.tokens.all()) == 1


def test_create_a_token_shows_its_secret_once_then_revoke_it(archive: Archive) -> None:
    assert archive.tokens is not None
    with pages_client(archive) as client:
        csrf = admin_client(archive, client)
        refused = client.post("/ui/admin/tokens", data={"name": "pacs", "scopes": ["read"]})
        assert refused.status_code == 403  # no anti-CSRF token
        created = client.post("/ui/admin/tokens", data={"csrf_token": csrf, "name": "pacs",
                                                        "scopes": ["read", "write"], "expires_in": "30d"})
        assert created.status_code == 200 and created.headers["cache-control"] == "no-store"
        secret = re.search(r'id="secret"[^>]*>(dv_[^<]+)<', created.text)
        assert secret is not None
        token = next(t for t in archive.tokens.all() if t.name == "pacs")
        assert token.scopes == ("read", "write") and token.expires_at is not None
        listing = client.get("/ui/admin/tokens")
        assert listing.status_code == 200 and "pacs" in listing.text and secret.group(1) not in listing.text
        with new_client(client) as other:  # the secret works
            assert other.get("/dicom-web/studies", headers={"authorization": f"Bearer {secret.group(1)}"}
                             ).status_code in (200, 204)
        bad = client.post("/ui/admin/tokens", data={"csrf_token": csrf, "name": "pacs", "scopes": ["read"]})
        assert bad.status_code == 400 and "exists" in bad.text  # same name again: the form with the reason
        assert client.post("/ui/admin/tokens", data={"csrf_token": csrf, "name": "x", "scopes": ["root"]}
                           ).status_code == 400
        revoked = client.post(f"/ui/admin/tokens/{token.id}/revoke", data={"csrf_token": csrf})
        assert revoked.status_code == 303 and revoked.headers["location"].endswith(f"did=revoked&token={token.id}")
        page = client.get(revoked.headers["location"])
        assert f"Token {token.id} revoked." in page.text
        assert not next(t for t in archive.tokens.all() if t.id == token.id).active
        assert client.post(f"/ui/admin/tokens/{token.id}/revoke", data={"csrf_token": csrf}).status_code == 404


def test_retry_a_failed_job_and_cancel_a_queued_one(archive: Archive) -> None:
    jobs = archive.jobs
    assert jobs is not None
    failed = jobs.enqueue("route-deliver", {"destination": "PACS"})
    assert jobs.claim("w", kinds=["route-deliver"]) is not None
    jobs.fail(failed, "association rejected <by peer>", None)
    queued = jobs.enqueue("fixity", {"sop_uid": "1.2.3"})
    with pages_client(archive) as client:
        csrf = admin_client(archive, client)
        page = client.get("/ui/admin/jobs", params={"state": "failed"})
        assert page.status_code == 200 and "association rejected &lt;by peer&gt;" in page.text
        assert f'/ui/admin/jobs/{failed}/retry' in page.text and f"/ui/admin/jobs/{queued}/cancel" not in page.text
        assert client.get("/ui/admin/jobs", params={"state": "bogus"}).status_code == 400
        assert client.post(f"/ui/admin/jobs/{failed}/retry", data={"csrf_token": "stale"}).status_code == 403
        retried = client.post(f"/ui/admin/jobs/{failed}/retry", data={"csrf_token": csrf, "back": "failed"})
        assert retried.status_code == 303
        assert retried.headers["location"] == f"/ui/admin/jobs?state=failed&did=retried&job={failed}"
        assert jobs.get(failed).state == JobState.QUEUED
        assert f"Job {failed} queued again." in client.get(retried.headers["location"]).text
        cancelled = client.post(f"/ui/admin/jobs/{queued}/cancel", data={"csrf_token": csrf})
        assert cancelled.status_code == 303 and jobs.get(queued).state == JobState.CANCELLED
        again = client.post(f"/ui/admin/jobs/{queued}/cancel", data={"csrf_token": csrf})
        assert again.status_code == 409 and "only queued jobs" in again.text  # an HTML error page
        assert client.post("/ui/admin/jobs/999999/retry", data={"csrf_token": csrf}).status_code == 404


def test_settings_page_masks_secrets(archive: Archive) -> None:
    settings = archive.settings.model_copy(update={
        "oidc_jwks_url": "https://idp.example.org/jwks?client_secret=s3cr3t&x=1",
        "storage_url": "s3://bucket/p?endpoint=http://minio:hunter2@127.0.0.1:9000&region=eu",
        "dimse_tls_key": Path("/etc/dicomvault/key.pem"),
    })
    archive.settings = settings
    with pages_client(archive) as client:
        admin_client(archive, client)
        page = client.get("/ui/admin/settings")
        assert page.status_code == 200
        for secret in ("s3cr3t", "hunter2", "/etc/dicomvault/key.pem"):
            assert secret not in page.text
        assert "http://minio:" + MASK + "@127.0.0.1:9000" in page.text and "query_max_keys" in page.text
        assert client.get("/ui/admin/audit").text.count("Not yet") == 1


def test_masking_rules() -> None:
    assert mask_text("postgresql://dv:pw@db:5432/dv") == f"postgresql://dv:{MASK}@db:5432/dv"
    assert mask_text("https://host/x?token=abc&limit=5") == f"https://host/x?token={MASK}&limit=5"
    assert mask_text("host=db password=pw user=dv") == f"host=db password={MASK} user=dv"
    assert mask_text("file:///data/blobs") == "file:///data/blobs"
    rows = dict(masked_settings(Settings.load(index_url="postgresql://a:b@h/d", data_dir="/tmp/dv-mask")))
    assert rows["index_url"] == f"postgresql://a:{MASK}@h/d" and rows["query_max_keys"] == "64"
    assert rows["oidc_issuer"] == "null"
