"""Time to first image in the OHIF viewer: DicomVault vs the same OHIF build reading Orthanc's DICOMweb, one run.

What is measured (issue #13 item 1 and its benchmark): a cold browser (a fresh Chromium context, so an empty HTTP
cache) opens ``/viewer?StudyInstanceUIDs=<study>`` for each of two studies, stored in both servers:
  * a CT series of ``--slices`` single-frame 512x512 slices (500 by default), stored over STOW-RS / REST;
  * one multi-frame object of ``--frames`` 512x512 16-bit frames (2000 by default: 1 GB; a Multi-frame Grayscale
    Word Secondary Capture of phantom CT slices, ``benchmarks/compression_at_rest_setup.py``), written to disk
    frame by frame and stored with storescu, so that it never sits in memory whole: this case shows whether a
    server answers the first frame without reading the whole object.
``--slices 0`` or ``--frames 0`` leaves a case out. The time is from navigation start (``performance.timeOrigin``)
to the first frame in which a viewport canvas shows a non-black pixel (checked on a band across its middle every
20 ms by a script the page runs before its own). Headless Debian Chromium with software WebGL, as in the e2e tests.

The two sides differ only in where the DICOMweb answers come from:
  * DicomVault: ``dicomvault serve`` with the viewer mounted (assets and API on one origin, as users get it);
  * Orthanc (+ its DICOMweb plugin): the same OHIF build served by DicomVault's viewer handler (same files, same
    encodings and cache headers) from this process on another port, its ``app-config.js`` pointing at Orthanc's
    ``/dicom-web``. Orthanc sends no CORS headers, so Chromium runs with ``--disable-web-security`` for both sides.

    .venv/bin/python benchmarks/viewer_first_image.py [--slices 500] [--frames 2000] [--size 512] [--runs 5] [--assets]

``--assets`` also prints what the page loaded before its first image on DicomVault, with start and end times (the
viewer files among them are what ``webui/index_page.py`` preloads). The machine is shared: ``--slices 100
--frames 100 --runs 2`` for a quick look; measure on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, dicomvault, generate_ct_series, median, orthanc
from benchmarks.compression_at_rest_setup import write_multiframe
from benchmarks.dicomweb import stow
from benchmarks.dimse_store import store
from dicomvault.settings import Settings
from dicomvault.webui.app_config import app_config
from dicomvault.webui.index_page import build_index_page
from dicomvault.webui.viewer import ViewerApp, installed
from tests.webui.live_server import LiveServer

FIRST_IMAGE_JS = """
(() => {
  const seen = () => {
    for (const c of document.querySelectorAll('canvas')) {
      if (c.width < 16 || c.height < 16 || !c.closest('[data-viewport-uid], .viewport-element')) continue;
      let ctx = null;
      try { ctx = c.getContext('2d', { willReadFrequently: true }); } catch (e) { continue; }
      if (!ctx) continue;
      const y = Math.floor(c.height / 2) - 4;
      const d = ctx.getImageData(0, y, c.width, 8).data;
      for (let i = 0; i < d.length; i += 4) if (d[i] | d[i + 1] | d[i + 2]) return true;
    }
    return false;
  };
  const poll = () => {
    if (seen()) { window.__dvFirstImage = performance.now(); return; }
    setTimeout(poll, 20);
  };
  setTimeout(poll, 20);
})();
"""

ASSETS_JS = """(limit) => performance.getEntriesByType('resource')
  .filter(e => e.startTime < limit && new URL(e.name).origin === location.origin)
  .map(e => [decodeURIComponent(new URL(e.name).pathname).replace(/[0-9.]{20,}/g, '…'),
             Math.round(e.startTime), Math.round(e.responseEnd)])"""

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-web-security",
]


def viewer_build() -> Path:
    build = Path(os.environ.get("DICOMVAULT_VIEWER_DIR") or ROOT / ".viewer" / "ohif")
    if not installed(build):
        raise SystemExit(f"no OHIF build in {build}: run `make viewer` first")
    return build


def load_orthanc(http: str, paths: list[Path]) -> None:
    with httpx.Client(timeout=60) as client:
        for path in paths:
            client.post(f"{http}/instances", content=path.read_bytes()).raise_for_status()


def load_dicomvault(http: str, paths: list[Path]) -> None:
    with httpx.Client(timeout=120) as client:
        for i in range(0, len(paths), 50):
            stow(client, f"{http}/dicom-web", [p.read_bytes() for p in paths[i : i + 50]], batch=10)


def orthanc_viewer_app(build: Path, dicomweb: str, *, hints: bool = True) -> FastAPI:
    """The OHIF build served as DicomVault serves it, its data source pointed at Orthanc (``hints=False``: its
    ``index.html`` as shipped, without DicomVault's preload hints)."""
    config = app_config(Settings())
    conf = config["dataSources"][0]["configuration"]
    conf["qidoRoot"] = conf["wadoRoot"] = dicomweb
    conf["wadoUriRoot"] = dicomweb.rsplit("/dicom-web", 1)[0] + "/wado"
    config_js = f"window.config = {json.dumps(config)};\n".encode()
    app = FastAPI()
    viewer = ViewerApp(build, config_js, app.router.default)
    if not hints:
        viewer.index = build_index_page(viewer.root, hints=False)
    app.router.default = viewer
    return app


def first_image(browser: Any, url: str, timeout_s: float, assets: bool) -> tuple[float, list[Any]]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, service_workers="block")
    try:
        page = context.new_page()
        page.add_init_script(FIRST_IMAGE_JS)
        page.goto(url, wait_until="commit")
        page.wait_for_function("() => window.__dvFirstImage !== undefined", timeout=timeout_s * 1000)
        ms = float(page.evaluate("() => window.__dvFirstImage"))
        loaded = page.evaluate(ASSETS_JS, ms) if assets else []
        return ms / 1000, loaded
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=500, help="slices of the CT series (0: no CT case)")
    parser.add_argument("--frames", type=int, default=2000,
                        help="frames of the multi-frame object (2000 x 512x512x2 bytes = 1 GB; 0: no such case)")
    parser.add_argument("--size", type=int, default=512, help="rows and columns of each slice and frame")
    parser.add_argument("--runs", type=int, default=5, help="cold loads per server and case (alternating)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for one first image")
    parser.add_argument("--assets", action="store_true", help="print the viewer files loaded before the image")
    parser.add_argument("--compare-hints", action="store_true",
                        help="also Orthanc with OHIF's index.html as shipped (no preload hints)")
    args = parser.parse_args()
    if args.slices <= 0 and args.frames <= 0:
        raise SystemExit("nothing to measure: --slices 0 and --frames 0")

    from playwright.sync_api import sync_playwright

    build = viewer_build()
    chromium = "/usr/bin/chromium"
    cases: dict[str, str] = {}  # case name -> Study Instance UID
    with tempfile.TemporaryDirectory(prefix="bench-viewer-") as tmp:
        paths: list[Path] = []
        if args.slices > 0:
            t = time.perf_counter()
            paths = generate_ct_series(Path(tmp) / "ct", args.slices, rows=args.size, columns=args.size,
                                       realistic=True)
            import pydicom

            cases[f"{args.slices}-slice CT"] = str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
            print(f"generated {len(paths)} slices {args.size}x{args.size} in {time.perf_counter() - t:.1f} s")
        multiframe: Path | None = None
        if args.frames > 0:
            t = time.perf_counter()
            multiframe = Path(tmp) / "multiframe.dcm"
            mf = write_multiframe(multiframe, args.frames, args.size, args.size)
            size_mb = multiframe.stat().st_size / 1e6
            cases[f"{args.frames}-frame object ({size_mb:,.0f} MB)"] = mf.study
            print(f"generated a {args.frames}-frame object of {size_mb:,.0f} MB in {time.perf_counter() - t:.1f} s")
        env = {"DICOMVAULT_VIEWER_DIR": str(build)}
        with dicomvault(env=env) as dv, orthanc(dicomweb=True) as oc:
            t = time.perf_counter()
            if paths:
                load_dicomvault(dv.http, paths)
                load_orthanc(oc.http, paths)
            if multiframe is not None:
                store(dv, [[multiframe]])
                store(oc, [[multiframe]])
            print(f"stored in both servers in {time.perf_counter() - t:.1f} s")
            with LiveServer(orthanc_viewer_app(build, f"{oc.http}/dicom-web")) as oc_viewer, \
                    LiveServer(orthanc_viewer_app(build, f"{oc.http}/dicom-web", hints=False)) as shipped, \
                    sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
                sides: dict[str, str] = {"DicomVault": dv.http, "Orthanc + DICOMweb plugin": oc_viewer.url}
                if args.compare_hints:
                    sides["Orthanc, no preload hints"] = shipped.url
                times: dict[tuple[str, str], list[float]] = {(c, n): [] for c in cases for n in sides}
                for run in range(args.runs):
                    for case, study in cases.items():
                        for name, base in sides.items():
                            want_assets = args.assets and run == 0 and name == "DicomVault"
                            seconds, loaded = first_image(browser, f"{base}/viewer?StudyInstanceUIDs={study}",
                                                          args.timeout, want_assets)
                            times[case, name].append(seconds)
                            print(f"run {run + 1} {case}, {name}: {seconds:.2f} s", flush=True)
                            if want_assets:
                                print("loaded before the first image (path, start ms, end ms):")
                                for row in loaded:
                                    print("   ", *row)
                browser.close()

    def report(key: tuple[str, str]) -> str:
        return f"{median(times[key]):.2f} s (runs: " + ", ".join(f"{v:.2f}" for v in times[key]) + ")"

    print(f"\nfirst image, {args.size}x{args.size}, cold cache, median of {args.runs}:")
    for case in cases:
        print(f"  {case}:")
        for name in sides:
            print(f"    {name:28s} {report((case, name))}")


if __name__ == "__main__":
    main()
