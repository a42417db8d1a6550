"""Fixtures for the browser tests: the OHIF build (fetched on demand), an archive holding the e2e study served with
the viewer by a real uvicorn server, and a headless system Chromium driven by Playwright (never a downloaded one).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from dicomvault.bootstrap import Archive
from dicomvault.dicomweb.app import create_app
from dicomvault.settings import Settings
from dicomvault.webui.viewer import installed, mount_viewer
from tests.e2e.e2e_study import ViewerSite, build_study
from tests.webui.live_server import LiveServer

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """The archive's settings name no viewer build: the test mounts ``ohif_build`` itself."""
    return settings.model_copy(update={"viewer_dir": tmp_path / "no-viewer-build"})


@pytest.fixture(scope="session")
def ohif_build() -> Path:
    """The installed OHIF build; runs scripts/fetch-viewer.sh first when npm is available (it returns at once when
    the build is current, and replaces one installed by an older version of the script, e.g. unpatched)."""
    target = Path(os.environ.get("DICOMVAULT_VIEWER_DIR") or REPO_ROOT / ".viewer" / "ohif")
    detail = "npm is not available to fetch it"
    if shutil.which("npm"):
        try:
            done = subprocess.run(
                ["bash", str(REPO_ROOT / "scripts" / "fetch-viewer.sh"), str(target)],
                capture_output=True, text=True, timeout=300, check=False,
            )
            detail = f"scripts/fetch-viewer.sh exited {done.returncode}: {(done.stderr or done.stdout)[-500:]}"
        except subprocess.TimeoutExpired:
            detail = "scripts/fetch-viewer.sh did not finish in 300 s (is the npm registry reachable?)"
    if not installed(target):
        pytest.skip(f"OHIF viewer build not installed in {target} (run `make viewer`); {detail}")
    return target


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail("Chromium is not installed: run scripts/ensure-test-deps.sh (apt-get install chromium)")
    return path


@pytest.fixture
def viewer_site(archive: Archive, settings: Settings, ohif_build: Path) -> Iterator[ViewerSite]:
    """The e2e study stored through the archive's ingest service, served with the viewer on a loopback port."""
    study = build_study()
    for blob in study.objects:
        archive.ingest.ingest(io.BytesIO(blob), source="e2e")
    app = create_app(archive)
    assert mount_viewer(app, settings.model_copy(update={"viewer_dir": ohif_build}))
    with LiveServer(app) as server:
        yield ViewerSite(server.url, study)


@pytest.fixture
def chromium_browser(chromium_path: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def viewer_page(chromium_browser: Browser) -> Iterator[Page]:
    context = chromium_browser.new_context(viewport={"width": 1280, "height": 800}, service_workers="block")
    context.set_default_timeout(20_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def page(chromium_browser: Browser) -> Iterator[Page]:
    """A fresh browser context (empty cache, no cookies) for the archive's own pages."""
    context = chromium_browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")
    context.set_default_timeout(20_000)
    try:
        yield context.new_page()
    finally:
        context.close()
