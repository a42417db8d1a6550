"""The OHIF viewer, served by DicomVault, reading a stored study through DicomVault's DICOMweb API in Chromium.

What a user does: open the study list (QIDO-RS), filter it, open the study (series QIDO, series metadata, frames),
scroll a 20-slice stack and a multi-frame object. Every DICOMweb request the page makes is logged to
``dicomweb-requests.log`` in the test's folder; any that failed fails the test with the list (what the viewer
needs from the API), even when the UI step that depended on it failed first.
"""

from __future__ import annotations

import io
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, Request, Response

from tests.e2e.e2e_study import CT_SLICES, MF_FRAMES, ViewerSite

OVERLAY = '[data-cy="viewport-overlay-bottom-right"]'
PANE = '[data-cy="viewport-pane"]'
THUMBNAIL = '[data-cy="study-browser-thumbnail"]'
DATA_ROWS = "tbody tr:not([data-filter-row])"
RENDER_WAIT_S = 10.0
SHOWN_NAME = "Viewer, Test"  # how the study list shows PATIENT_NAME "Viewer^Test"


@dataclass
class DicomWebLog:
    """Every request the page sent under /dicom-web, with its outcome."""

    base: str
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)

    def _path(self, url: str) -> str:
        parts = urlsplit(url)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def on_response(self, response: Response) -> None:
        path = self._path(response.url)
        if not path.startswith("/dicom-web"):
            return
        request = response.request
        line = (f"{response.status} {request.method} {path} accept={request.headers.get('accept', '')!r} "
                f"-> {response.headers.get('content-type', '')!r}")
        self.lines.append(line)
        if response.status >= 400:
            try:
                body = response.text()[:200]
            except PlaywrightError:
                body = ""
            self.failures.append(f"{line} body={body!r}")

    def on_failed(self, request: Request) -> None:
        path = self._path(request.url)
        if path.startswith("/dicom-web"):
            line = f"FAILED {request.method} {path}: {request.failure}"
            self.lines.append(line)
            self.failures.append(line)

    def on_request(self, request: Request) -> None:
        """The viewer must work offline: anything not served by the archive itself is recorded."""
        url = request.url
        if not (url.startswith(self.base + "/") or url.startswith(("data:", "blob:"))):
            self.external.append(f"{request.method} {url}")

    def attach(self, page: Page) -> None:
        page.on("request", self.on_request)
        page.on("response", self.on_response)
        page.on("requestfailed", self.on_failed)


def _overlay_position(page: Page, total: int) -> int:
    """The 1-based stack position shown as "I:<n> (<position>/<total>)" in the viewport's corner."""
    text = page.locator(OVERLAY).first.inner_text()
    match = re.search(rf"\((\d+)/{total}\)", text)
    assert match, f"viewport overlay {text!r} does not show a position out of {total}"
    return int(match.group(1))


def _wait_for_stack(page: Page, total: int) -> None:
    page.wait_for_function(
        """([sel, total]) => { const el = document.querySelector(sel);
                               return !!el && new RegExp('\\\\(\\\\d+/' + total + '\\\\)').test(el.innerText); }""",
        arg=[OVERLAY, total],
    )


def _scroll(page: Page, steps: int, total: int) -> int:
    """Mouse-wheel over the viewport; returns the new position once the overlay has moved."""
    before = _overlay_position(page, total)
    box = page.locator(PANE).first.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(steps):
        page.mouse.wheel(0, 120)
        page.wait_for_timeout(100)
    page.wait_for_function(
        """([sel, before]) => { const m = /\\((\\d+)\\//.exec(document.querySelector(sel).innerText);
                                return !!m && Number(m[1]) !== before; }""",
        arg=[OVERLAY, before],
    )
    return _overlay_position(page, total)


def _viewport_pixels(page: Page, shot: Path) -> np.ndarray:
    """A screenshot of the viewport, saved to ``shot``; returns its central half (corners hold overlay text)."""
    png = page.locator(PANE).first.screenshot(path=str(shot))
    gray = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    h, w = gray.shape
    return gray[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4]


def _rendered(pixels: np.ndarray) -> bool:
    return bool(pixels.std() > 20 and pixels.max() - pixels.min() > 100)


def _wait_rendered(page: Page, shot: Path, what: str, unlike: np.ndarray | None = None) -> np.ndarray:
    """Screenshots until the viewport shows an image (and one different from ``unlike``), at most RENDER_WAIT_S.

    Software WebGL paints a moment after the overlay text updates; polling avoids both flakes and long sleeps.
    """
    deadline = time.monotonic() + RENDER_WAIT_S
    while True:
        pixels = _viewport_pixels(page, shot)
        changed = unlike is None or float(np.abs(pixels - unlike).mean()) > 1
        if _rendered(pixels) and changed:
            return pixels
        if time.monotonic() > deadline:
            state = "blank" if not _rendered(pixels) else "unchanged after scrolling"
            raise AssertionError(f"{what}: the viewport is {state} (mean {pixels.mean():.1f}, "
                                 f"std {pixels.std():.1f}); screenshot {shot}")
        page.wait_for_timeout(200)


def _study_list(page: Page, site: ViewerSite, steps: list[str]) -> None:
    steps.append("study list shows the study")
    page.goto(site.url + "/")
    row = page.locator(DATA_ROWS).filter(has_text=SHOWN_NAME)
    row.wait_for()
    text = row.inner_text()
    assert "Viewer end-to-end" in text, f"study description missing from the study list row: {text!r}"
    assert str(CT_SLICES + 1) in text, f"instance count missing from the study list row: {text!r}"
    assert "CT" in text and "OT" in text, f"modalities missing from the study list row: {text!r}"
    # The patient filter becomes a QIDO wildcard query (PatientName=*…*).
    patient_filter = page.locator("tr[data-filter-row] td").first.locator("input")
    steps.append("patient filter narrows the list")
    patient_filter.fill("Nobody")
    page.get_by_text("No studies available").wait_for()
    patient_filter.fill("viewer")
    row.wait_for()


def _viewer(page: Page, site: ViewerSite, tmp_path: Path, steps: list[str]) -> None:
    steps.append("viewer shows the CT stack")
    page.goto(f"{site.url}/viewer?StudyInstanceUIDs={site.study.study_uid}")
    _wait_for_stack(page, CT_SLICES)
    first = _wait_rendered(page, tmp_path / "ct-first.png", "CT stack, first image")
    steps.append("mouse wheel scrolls the CT stack")
    position = _scroll(page, 4, CT_SLICES)
    _wait_rendered(page, tmp_path / f"ct-{position}.png", f"CT stack, image {position}", unlike=first)

    steps.append("multi-frame series opens and scrolls")
    thumbnails = page.locator(THUMBNAIL)
    assert thumbnails.count() == 2, f"expected 2 series thumbnails, got {thumbnails.count()}"
    thumbnails.filter(has_text="Multi-frame capture").dblclick()
    _wait_for_stack(page, MF_FRAMES)
    frame_one = _wait_rendered(page, tmp_path / "multiframe-1.png", "multi-frame object, frame 1")
    position = _scroll(page, 3, MF_FRAMES)
    _wait_rendered(page, tmp_path / f"multiframe-{position}.png", f"multi-frame object, frame {position}",
                   unlike=frame_one)


def test_viewer_lists_opens_and_scrolls_a_study(viewer_site: ViewerSite, viewer_page: Page, tmp_path: Path) -> None:
    log = DicomWebLog(viewer_site.url)
    log.attach(viewer_page)
    steps: list[str] = []
    error: str | None = None
    try:
        _study_list(viewer_page, viewer_site, steps)
        _viewer(viewer_page, viewer_site, tmp_path, steps)
    except (PlaywrightError, AssertionError) as exc:
        error = f"step {steps[-1]!r} failed: {exc}"
        viewer_page.screenshot(path=str(tmp_path / "failure.png"))
    (tmp_path / "dicomweb-requests.log").write_text("\n".join(log.lines) + "\n")
    if error is not None or log.failures:
        failed = "\n".join(log.failures) or "(none)"
        pytest.fail(f"{error or 'viewer steps passed'}\nDICOMweb requests that failed:\n{failed}\n"
                    f"all requests: {tmp_path / 'dicomweb-requests.log'}", pytrace=False)
    assert any("/frames/" in line for line in log.lines), "the viewer fetched no frames"
    assert not log.external, f"the viewer requested resources outside the archive: {log.external}"
