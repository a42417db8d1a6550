"""The study browser and the upload page in Chromium: log in, search and page through the list, upload a folder
through the page and find its study in the list."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from dicomvault.bootstrap import Archive
from dicomvault.dicomweb.app import create_app
from dicomvault.webui.pages import mount_pages
from tests.helpers import make_ct
from tests.webui.browser_data import store_study, token
from tests.webui.live_server import LiveServer

ROWS = "table.studies tbody tr"


@pytest.fixture
def site(archive: Archive) -> Iterator[str]:
    for i in range(30):
        store_study(archive, name=f"Patient{i:02d}^Test", pid=f"E2E-{i:02d}", date=f"2023{i % 12 + 1:02d}15",
                    modality="MR" if i % 3 == 0 else "CT")
    app = create_app(archive)
    mount_pages(app)
    with LiveServer(app) as server:
        yield server.url


def log_in(page: Page, base: str, secret: str) -> None:
    page.goto(base + "/ui/studies")
    expect(page).to_have_url(f"{base}/ui/login?next=%2Fui%2Fstudies")
    page.fill("#token", secret)
    page.click("button[type=submit]")
    expect(page).to_have_url(base + "/ui/studies")


def test_search_and_page_through_the_list(archive: Archive, site: str, page: Page) -> None:
    log_in(page, site, token(archive, "read"))
    expect(page.locator(ROWS)).to_have_count(25)
    expect(page.locator(ROWS).first).to_contain_text("Patient29, Test")  # newest received first
    page.click("a[rel=next]")
    expect(page.locator(ROWS)).to_have_count(5)
    expect(page.locator("#page-range")).to_have_text("26–30")
    page.click("a[rel=prev]")
    expect(page.locator(ROWS)).to_have_count(25)
    page.fill("#f-name", "patient1")
    page.select_option("#f-modality", "CT")
    page.click("#study-search button[type=submit]")
    expect(page.locator(ROWS)).to_have_count(7)  # Patient10..19 but 12, 15, 18 are MR
    assert "name=patient1" in page.url and "modality=CT" in page.url  # a bookmarkable search
    page.click("th a:has-text('Patient name')")
    expect(page.locator(ROWS).first).to_contain_text("Patient19, Test")
    page.locator(ROWS).first.locator("a", has_text="Study").click()
    expect(page.locator("h1")).to_contain_text("Patient19, Test")
    expect(page.locator(".thumb img")).to_have_count(1)
    assert page.locator(".thumb img").evaluate("img => img.complete && img.naturalWidth > 0")


def test_upload_a_folder_and_find_it_in_the_list(archive: Archive, site: str, page: Page, tmp_path: Path) -> None:
    folder = tmp_path / "CDROM"
    (folder / "SERIES1").mkdir(parents=True)
    for i in range(3):
        blob = make_ct(study="1.2.826.0.1.77", series="1.2.826.0.1.77.1", sop=f"1.2.826.0.1.77.1.{i + 1}", seed=i,
                       PatientName="Uploaded^Folder", PatientID="UP-1", InstanceNumber=i + 1)
        (folder / "SERIES1" / f"IM{i}").write_bytes(blob)
    (folder / "README.TXT").write_text("not DICOM")
    archive.ingest.ingest(io.BytesIO((folder / "SERIES1" / "IM0").read_bytes()), source="before")
    log_in(page, site, token(archive, "read", "write"))
    page.click("nav a:has-text('Upload')")
    page.set_input_files("#pick-folder", str(folder))
    expect(page.locator("#status")).to_have_text("Done.")
    results = page.locator("#results tbody tr")
    expect(results).to_have_count(4)
    expect(page.locator("#summary")).to_contain_text("2 stored")
    expect(page.locator("#summary")).to_contain_text("1 duplicate")
    expect(page.locator("#summary")).to_contain_text("1 rejected")
    expect(page.locator("#results tr", has_text="README.TXT")).to_contain_text("rejected")
    page.click("#studies a")
    expect(page.locator("h1")).to_contain_text("Uploaded, Folder")
    page.goto(site + "/ui/studies?name=uploaded")
    expect(page.locator(ROWS)).to_have_count(1)
    expect(page.locator(ROWS).first).to_contain_text("UP-1")
    assert "3" in page.locator(ROWS).first.locator("td.num").nth(1).inner_text()
