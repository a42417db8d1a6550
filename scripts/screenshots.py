"""Regenerates the screenshots of docs/images (shown in the README): the archive's pages and the viewer, on made-up
studies (scripts/demo_data.py), in headless Chromium.

    .venv/bin/python scripts/screenshots.py [--out docs/images] [--chromium /usr/bin/chromium]

A throwaway archive (a temporary folder, loopback, a free port) is filled with the demo studies, an admin API token
is created and used to log in through the login page, then each page is captured at 1280×800. The viewer is
captured only when its build is installed (`make viewer`).
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

from demo_data import write_study  # noqa: E402

from dicomvault.bootstrap import build_archive  # noqa: E402
from dicomvault.dicomweb.app import create_app  # noqa: E402
from dicomvault.domain.tags import Level  # noqa: E402
from dicomvault.settings import Settings  # noqa: E402
from dicomvault.webui.pages import mount_pages  # noqa: E402
from dicomvault.webui.viewer import mount_viewer  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shoot(page: Page, url: str, out: Path, *, wait_for: str | None = None, settle_ms: int = 300) -> None:
    page.goto(url)
    if wait_for:
        page.locator(wait_for).first.wait_for()
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(settle_ms)
    page.screenshot(path=str(out))
    print(f"  {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--studies", type=int, default=20)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dv-shots-") as tmp:
        folder = Path(tmp) / "demo"
        folder.mkdir()
        for number in range(args.studies):
            write_study(folder, number, 24)
        port = free_port()
        settings = Settings.load(data_dir=Path(tmp) / "vault", http_port=port, dimse_port=free_port(),
                                 viewer_dir=ROOT / ".viewer" / "ohif")
        archive = build_archive(settings)
        for path in sorted(folder.glob("*.dcm")):
            with path.open("rb") as stream:
                archive.ingest.ingest(stream, source="DEMO-CT")
        assert archive.tokens is not None
        _, secret = archive.tokens.create("admin", ["admin"])
        app = create_app(archive)
        mount_pages(app)
        viewer = mount_viewer(app, settings)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        study = archive.query.search(archive.query.build_spec(Level.STUDY, {"PatientID": "DV-1001"}))[0]
        study_uid = study["0020000D"]["Value"][0]
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=args.chromium, headless=True, args=FLAGS)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(base + "/ui/login")
                page.fill("#token", secret)
                page.click("button[type=submit]")
                page.wait_for_load_state("networkidle")
                print(f"screenshots in {args.out}:")
                shoot(page, base + "/ui/studies", args.out / "studies.png", wait_for="table")
                shoot(page, f"{base}/ui/studies/{study_uid}", args.out / "study.png", wait_for="img", settle_ms=1500)
                shoot(page, base + "/ui/upload", args.out / "upload.png")
                shoot(page, base + "/ui/dashboard", args.out / "dashboard.png", settle_ms=800)
                shoot(page, base + "/ui/admin", args.out / "admin.png")
                shoot(page, f"{base}/ui/shares/new?study={study_uid}", args.out / "share.png")
                if viewer:
                    shoot(page, f"{base}/viewer?StudyInstanceUIDs={study_uid}", args.out / "viewer.png",
                          wait_for="canvas", settle_ms=6000)
                browser.close()
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            archive.close()


if __name__ == "__main__":
    main()
