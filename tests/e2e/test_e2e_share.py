"""A share link in a real browser: the owner creates it on the pages, a fresh browser context opens it and sees the
study drawn by OHIF, the same context cannot reach another study's QIDO-RS / WADO-RS / metadata / frames, and after
the owner revokes the link the context is refused.

``test_share_link_scopes_a_browser`` runs without the OHIF build (the browser's cookie handling of the 303 with a
``SameSite=Lax`` cookie is what matters there); ``test_share_link_opens_the_study_in_ohif`` needs the build.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from dicomvault.bootstrap import Archive
from dicomvault.dicomweb.app import create_app
from dicomvault.settings import Settings
from dicomvault.webui.pages import mount_pages
from dicomvault.webui.viewer import mount_viewer
from tests.e2e.e2e_study import CT_SLICES, E2EStudy, build_study
from tests.e2e.test_e2e_viewer import _wait_for_stack, _wait_rendered
from tests.helpers import make_ct
from tests.webui.live_server import LiveServer

OTHER_STUDY = "1.2.826.0.1.3680043.8.498.9901"
OTHER_SERIES = "1.2.826.0.1.3680043.8.498.9902"
OTHER_SOP = "1.2.826.0.1.3680043.8.498.9903"


@dataclass(frozen=True)
class ShareSite:
    url: str
    study: E2EStudy
    token: str


def _site(archive: Archive, settings: Settings, viewer: Path | None) -> Iterator[ShareSite]:
    study = build_study()
    for blob in study.objects:
        archive.ingest.ingest(io.BytesIO(blob), source="e2e")
    archive.ingest.ingest(io.BytesIO(make_ct(study=OTHER_STUDY, series=OTHER_SERIES, sop=OTHER_SOP, frames=2)),
                          source="e2e")
    assert archive.tokens is not None
    _, token = archive.tokens.create("owner", ["read", "write"])  # anonymous access is off
    app = create_app(archive)
    mount_pages(app)
    if viewer is not None:
        assert mount_viewer(app, settings.model_copy(update={"viewer_dir": viewer}))
    with LiveServer(app) as server:
        yield ShareSite(server.url, study, token)


@pytest.fixture
def share_site(archive: Archive, settings: Settings) -> Iterator[ShareSite]:
    yield from _site(archive, settings, None)


@pytest.fixture
def share_viewer_site(archive: Archive, settings: Settings, ohif_build: Path) -> Iterator[ShareSite]:
    yield from _site(archive, settings, ohif_build)


def _context(browser: Browser) -> BrowserContext:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, service_workers="block")
    context.set_default_timeout(20_000)
    return context


def _create_link(owner: Page, site: ShareSite) -> str:
    """Log in, share the study through the pages, and read the once-shown link."""
    owner.goto(f"{site.url}/ui/login?next=/ui/shares/new%3Fstudy%3D{site.study.study_uid}")
    owner.fill("#token", site.token)
    owner.click("button[type=submit]")
    owner.wait_for_url("**/ui/shares/new**")
    assert "Viewer^Test" in owner.inner_text("main")
    owner.fill("#days", "2")
    owner.click("text=Create link")
    owner.wait_for_selector("#share-url")
    link = owner.input_value("#share-url")
    assert link.startswith(f"{site.url}/share/dvl_")
    return link


def _revoke(owner: Page, site: ShareSite) -> None:
    owner.goto(f"{site.url}/ui/shares")
    owner.click("button:has-text('Revoke')")
    owner.wait_for_url(f"{site.url}/ui/shares")
    assert "revoked" in owner.inner_text("table")


def _other_study_paths() -> list[str]:
    st = f"/dicom-web/studies/{OTHER_STUDY}"
    inst = f"{st}/series/{OTHER_SERIES}/instances/{OTHER_SOP}"
    return [f"{st}/series", f"{st}/instances", st, f"{st}/metadata", f"{st}/series/{OTHER_SERIES}/metadata",
            f"{inst}/metadata", f"{inst}/frames/1", f"{inst}/rendered", f"{st}/thumbnail",
            f"/wado?requestType=WADO&studyUID={OTHER_STUDY}&seriesUID={OTHER_SERIES}&objectUID={OTHER_SOP}"]


def _assert_confined(visitor: Page, site: ShareSite) -> None:
    """The visitor's context (its session cookie) reaches the shared study only."""
    shared = site.study.study_uid
    found = visitor.request.get(f"{site.url}/dicom-web/studies")
    assert found.status == 200
    assert [item["0020000D"]["Value"][0] for item in found.json()] == [shared]
    assert visitor.request.get(f"{site.url}/dicom-web/studies/{shared}/metadata").status == 200
    for path in _other_study_paths():
        status = visitor.request.get(site.url + path).status
        assert status == 404, (path, status)
    assert visitor.request.get(f"{site.url}/dicom-web/studies?StudyInstanceUID={OTHER_STUDY}").json() == []
    assert visitor.request.get(f"{site.url}/ui/shares").status == 403


def _assert_refused(visitor: Page, site: ShareSite, link: str) -> None:
    shared = site.study.study_uid
    for path in (f"/dicom-web/studies/{shared}/metadata", "/dicom-web/studies",
                 f"/dicom-web/studies/{shared}/series/{site.study.ct_series_uid}/metadata"):
        assert visitor.request.get(site.url + path).status == 401, path
    answer = visitor.goto(link)
    assert answer is not None and answer.status == 410
    assert "revoked" in visitor.inner_text("main")


def test_share_link_scopes_a_browser(share_site: ShareSite, chromium_browser: Browser) -> None:
    owner_context, visitor_context = _context(chromium_browser), _context(chromium_browser)
    try:
        owner = owner_context.new_page()
        link = _create_link(owner, share_site)
        visitor = visitor_context.new_page()
        visitor.goto(link)
        assert visitor.url == f"{share_site.url}/viewer?StudyInstanceUIDs={share_site.study.study_uid}"
        _assert_confined(visitor, share_site)
        _revoke(owner, share_site)
        _assert_refused(visitor, share_site, link)
    finally:
        owner_context.close()
        visitor_context.close()


def test_share_link_opens_the_study_in_ohif(share_viewer_site: ShareSite, chromium_browser: Browser,
                                            tmp_path: Path) -> None:
    site = share_viewer_site
    owner_context, visitor_context = _context(chromium_browser), _context(chromium_browser)
    try:
        owner = owner_context.new_page()
        link = _create_link(owner, site)
        visitor = visitor_context.new_page()
        failed: list[str] = []
        visitor.on("response", lambda r: failed.append(f"{r.status} {r.url}")
                   if "/dicom-web/" in r.url and r.status >= 400 else None)
        visitor.goto(link)
        _wait_for_stack(visitor, CT_SLICES)
        _wait_rendered(visitor, tmp_path / "shared-ct.png", "shared CT stack, first image")
        assert not failed, f"the viewer's requests failed with the share session: {failed}"
        _assert_confined(visitor, site)
        _revoke(owner, site)
        _assert_refused(visitor, site, link)
    finally:
        owner_context.close()
        visitor_context.close()
