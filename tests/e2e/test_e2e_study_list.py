"""OHIF's study list over every study the archive accepted, including studies whose series have no Modality.

pydicom's Secondary Capture test files have no Modality, so their studies' Modalities in Study is empty: QIDO-RS
answers ``"00080061": {"vr": "CS"}`` (a required return key with no value, as DICOM JSON encodes it; Orthanc
answers the same). OHIF 3.13.2 dereferences its ``Value`` and failed the whole list ("Data Source Connection
Error"); scripts/viewer-postinstall.js patches that. Also checked here: the installed build is the patched one, and
every asset the index page preloads exists in it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page
from pydicom.data import get_testdata_file

from dicomvault.bootstrap import Archive
from dicomvault.dicomweb.app import create_app
from dicomvault.settings import Settings
from dicomvault.webui.index_page import FIRST_VIEW_ASSETS, build_index_page
from dicomvault.webui.viewer import mount_viewer
from tests.e2e.e2e_study import build_study
from tests.webui.live_server import LiveServer

DATA_ROWS = "tbody tr:not([data-filter-row])"
SHOWN_NAME = "Viewer, Test"
# Two studies without Modality: one instance in the first, two in the second.
NO_MODALITY_FILES = ("SC_jpeg_no_color_transform.dcm", "SC_jpeg_no_color_transform_2.dcm",
                     "SC_rgb_jpeg_app14_dcmd.dcm")


@pytest.fixture
def mixed_site(archive: Archive, settings: Settings, ohif_build: Path) -> Iterator[str]:
    """The e2e CT study and two Secondary Capture studies without Modality, served with the viewer."""
    for name in NO_MODALITY_FILES:
        path = get_testdata_file(name)
        assert path is not None, name
        archive.ingest.ingest(io.BytesIO(Path(path).read_bytes()), source="e2e")
    for blob in build_study().objects:
        archive.ingest.ingest(io.BytesIO(blob), source="e2e")
    app = create_app(archive)
    assert mount_viewer(app, settings.model_copy(update={"viewer_dir": ohif_build}))
    with LiveServer(app) as server:
        yield server.url


def test_study_list_shows_studies_without_modality(mixed_site: str, viewer_page: Page, tmp_path: Path) -> None:
    errors: list[str] = []
    viewer_page.on("pageerror", lambda exc: errors.append(str(exc)))
    viewer_page.goto(mixed_site + "/")
    rows = viewer_page.locator(DATA_ROWS)
    try:
        rows.filter(has_text=SHOWN_NAME).wait_for()
        viewer_page.wait_for_function("([sel, n]) => document.querySelectorAll(sel).length >= n", arg=[DATA_ROWS, 3])
    except Exception:
        viewer_page.screenshot(path=str(tmp_path / "study-list.png"))
        raise
    texts = [rows.nth(i).inner_text() for i in range(rows.count())]
    assert len(texts) == 3, texts
    ct_row = next(t for t in texts if SHOWN_NAME in t)
    assert "CT" in ct_row and "OT" in ct_row, ct_row
    # The two studies without Modality: listed with their instance counts and no modality.
    others = sorted(t for t in texts if SHOWN_NAME not in t)
    assert all("CT" not in t for t in others), others
    body = viewer_page.locator("body").inner_text()
    assert "Data Source Connection Error" not in body and "No studies available" not in body
    assert not [e for e in errors if "length" in e], errors


def test_installed_build_is_patched_and_preloads_exist(ohif_build: Path) -> None:
    stamp = (ohif_build / ".dicomvault-viewer").read_text()
    assert "postinstall-" in stamp, stamp
    bundles = list(ohif_build.glob("app.bundle.*.js"))
    assert len(bundles) == 1
    text = bundles[0].read_text()
    assert "(ModalitiesInStudy.Value || []).length" in text
    assert (ohif_build / (bundles[0].name + ".br")).is_file() and (ohif_build / (bundles[0].name + ".gz")).is_file()
    page = build_index_page(ohif_build)
    # Every chunk the pinned list names exists in the pinned build (else the list is stale for this version).
    assert set(FIRST_VIEW_ASSETS) <= set(page.preloaded), set(FIRST_VIEW_ASSETS) - set(page.preloaded)
    assert page.preloaded[0] == bundles[0].name
