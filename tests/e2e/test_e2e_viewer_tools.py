"""The viewer's everyday tools on a stack read through DicomVault's DICOMweb: window/level, zoom, and MPR (the
series loaded as a volume and resliced into sagittal and coronal views, which needs every slice's geometry and
pixels from the metadata and frames endpoints). Scrolling and multi-frame objects: test_e2e_viewer.py."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page

from tests.e2e.e2e_study import CT_SLICES, SIZE, ViewerSite
from tests.e2e.test_e2e_viewer import PANE, DicomWebLog, _rendered, _wait_for_stack, _wait_rendered

WL_OVERLAY = '[data-cy="viewport-overlay-bottom-left"]'


def _window_level(page: Page) -> tuple[int, int]:
    text = " ".join(page.locator(WL_OVERLAY).first.inner_text().split())
    match = re.search(r"W: (-?\d+) L: (-?\d+)", text)
    assert match, f"no window/level in the viewport overlay: {text!r}"
    return int(match.group(1)), int(match.group(2))


def _drag(page: Page, dx: float, dy: float) -> None:
    box = page.locator(PANE).first.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y + dy, steps=8)
    page.mouse.up()


def _pane_pixels(page: Page, index: int, shot: Path) -> np.ndarray:
    png = page.locator(PANE).nth(index).screenshot(path=str(shot))
    gray = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    h, w = gray.shape
    return gray[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4]


def _steps(page: Page, site: ViewerSite, tmp_path: Path, steps: list[str]) -> None:
    steps.append("viewer shows the CT stack")
    page.goto(f"{site.url}/viewer?StudyInstanceUIDs={site.study.study_uid}")
    _wait_for_stack(page, CT_SLICES)
    first = _wait_rendered(page, tmp_path / "stack.png", "CT stack")

    steps.append("window/level by dragging (the default tool)")
    assert _window_level(page) == (2000, 400)  # the objects' own WindowWidth / WindowCenter
    _drag(page, 80, 40)
    page.wait_for_function("([sel]) => !/W:\\s*2000\\s*L:\\s*400/.test(document.querySelector(sel).innerText)",
                           arg=[WL_OVERLAY])
    width, level = _window_level(page)
    assert (width, level) != (2000, 400)
    leveled = _wait_rendered(page, tmp_path / "window-level.png", "after window/level", unlike=first)

    steps.append("zoom tool")
    page.locator('[data-cy="Zoom-btn"]').click()
    _drag(page, 0, -120)
    _wait_rendered(page, tmp_path / "zoom.png", "after zooming", unlike=leveled)

    steps.append("MPR layout")
    page.locator('[data-cy="layout-button"]').click()
    page.get_by_text("MPR", exact=True).first.click()
    page.wait_for_function("([sel]) => document.querySelectorAll(sel).length === 3", arg=[PANE])
    # The reformatted views step through the 64 columns / rows of the slices, not the 20 slices.
    page.wait_for_function(
        "([sel, n]) => [...document.querySelectorAll(sel)].filter(p => p.innerText.includes('/' + n)).length >= 2",
        arg=[PANE, SIZE],
    )
    for index, view in enumerate(("axial", "sagittal", "coronal")):
        pixels = _pane_pixels(page, index, tmp_path / f"mpr-{view}.png")
        for _ in range(25):
            if _rendered(pixels):
                break
            page.wait_for_timeout(200)
            pixels = _pane_pixels(page, index, tmp_path / f"mpr-{view}.png")
        assert _rendered(pixels), f"MPR {view} view is blank; screenshot {tmp_path / f'mpr-{view}.png'}"


def test_window_level_zoom_and_mpr(viewer_site: ViewerSite, viewer_page: Page, tmp_path: Path) -> None:
    log = DicomWebLog(viewer_site.url)
    log.attach(viewer_page)
    steps: list[str] = []
    error: str | None = None
    try:
        _steps(viewer_page, viewer_site, tmp_path, steps)
    except (PlaywrightError, AssertionError) as exc:
        error = f"step {steps[-1]!r} failed: {exc}"
        viewer_page.screenshot(path=str(tmp_path / "failure.png"))
    if error is not None or log.failures:
        failed = "\n".join(log.failures) or "(none)"
        pytest.fail(f"{error or 'viewer steps passed'}\nDICOMweb requests that failed:\n{failed}", pytrace=False)
    assert not log.external, f"the viewer requested resources outside the archive: {log.external}"
