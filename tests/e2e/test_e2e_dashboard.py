"""The storage dashboard in Chromium: log in, see the right totals after a known ingest, the SVG charts drawn (and
no script or Content-Security-Policy error); then the admin's token page."""

from __future__ import annotations

import io

from playwright.sync_api import Page
from pydicom.uid import generate_uid

from dicomvault.bootstrap import Archive
from dicomvault.dicomweb.app import create_app
from dicomvault.webui.pages import mount_pages
from tests.helpers import make_ct
from tests.webui.live_server import LiveServer


def test_dashboard_shows_the_totals_and_draws_the_charts(archive: Archive, page: Page) -> None:
    assert archive.tokens is not None
    secret = archive.tokens.create("operator", ["admin"])[1]
    study, series = generate_uid(), generate_uid()
    total = 0
    for n in range(6):
        total += archive.ingest.ingest(io.BytesIO(make_ct(study=study, series=series, seed=n, InstanceNumber=n + 1)),
                                       source="dimse:CT_1").blob.size
    total += archive.ingest.ingest(io.BytesIO(make_ct(Modality="MR", PatientID="P2")), source="dicomweb").blob.size
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    app = create_app(archive)
    mount_pages(app)
    with LiveServer(app) as server:
        page.goto(server.url + "/ui/dashboard")
        assert "/ui/login" in page.url
        page.fill("#token", secret)
        page.click("button[type=submit]")
        page.wait_for_url("**/ui/dashboard")
        assert page.inner_text("#total-instances") == "7"
        assert page.inner_text("#total-studies") == "2"
        assert page.inner_text("#last-hour") == "7"
        assert page.get_attribute("#total-bytes", "title") == f"{total:,} bytes"
        charts = page.locator("svg[role=img]")
        assert charts.count() == 6
        for n in range(charts.count()):
            box = charts.nth(n).bounding_box()
            assert box is not None and box["width"] > 100 and box["height"] > 20
        bars = page.locator("svg.bars rect")
        widths = [bars.nth(n).bounding_box() for n in range(bars.count())]
        assert widths and all(b is not None and b["width"] > 0 for b in widths)
        assert "CT" in (page.locator("svg.bars").first.text_content() or "")
        assert page.locator("svg.series rect").count() == 2 * 90
        page.goto(server.url + "/ui/admin/tokens")
        assert "operator" in page.inner_text("#tokens")
    assert [p for p in problems if "favicon" not in p] == []


