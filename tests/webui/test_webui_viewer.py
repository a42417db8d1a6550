"""The viewer mount: OHIF files and client-side routes at /, generated app-config.js, API paths untouched.

Runs against a small build folder laid out like OHIF's dist/ (so it needs no download) and a real uvicorn server.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dicomvault.bootstrap import Archive
from dicomvault.cli.serve import http_app
from dicomvault.dicomweb.app import create_app
from dicomvault.settings import Settings
from dicomvault.webui.viewer import mount_viewer
from tests.webui.live_server import LiveServer

INDEX_HTML = (
    '<!doctype html><html><head><script src="/app-config.js"></script></head>'
    '<body><div id="root"></div><script defer src="/app.bundle.0f6159c501addfe9.js"></script></body></html>'
)
BUNDLE_JS = "console.log('ohif bundle');\n" * 200
SHIPPED_CONFIG = "window.config = {dataSources: [{configuration: {qidoRoot: 'https://d14fa38qiwhyfd.cloudfront.net'}}]};"
WASM = b"\x00asm\x01\x00\x00\x00"
BR_BYTES = b"stands for the Brotli encoding of the bundle"


def _fake_build(root: Path) -> Path:
    """A folder with the shape of OHIF's dist/ after scripts/fetch-viewer.sh (a few files of each kind)."""
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text(INDEX_HTML)
    (root / "app-config.js").write_text(SHIPPED_CONFIG)
    (root / "app.bundle.0f6159c501addfe9.js").write_text(BUNDLE_JS)
    (root / "app.bundle.0f6159c501addfe9.js.gz").write_bytes(gzip.compress(BUNDLE_JS.encode()))
    (root / "app.bundle.0f6159c501addfe9.js.br").write_bytes(BR_BYTES)
    (root / "34b1e6b1deb5828e.wasm").write_bytes(WASM)
    (root / "manifest.json").write_text('{"name": "OHIF Viewer"}')
    (root / "assets" / "favicon.ico").write_bytes(b"\x00\x00\x01\x00")
    (root / ".dicomvault-viewer").write_text("@ohif/app@3.13.2 sha512-x\n")
    return root


@pytest.fixture
def viewer_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"viewer_dir": _fake_build(tmp_path / "ohif")})


@pytest.fixture
def servers(archive: Archive, viewer_settings: Settings) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """(client of the app with the viewer, client of the same app without it) — to compare API answers."""
    with_viewer = create_app(archive)
    assert mount_viewer(with_viewer, viewer_settings) is True
    without = create_app(archive)
    with LiveServer(with_viewer) as a, LiveServer(without) as b, \
            httpx.Client(base_url=a.url, timeout=10) as ca, httpx.Client(base_url=b.url, timeout=10) as cb:
        yield ca, cb


def _config_of(js: str) -> dict[str, object]:
    match = re.search(r"window\.config = (\{.*\});\s*$", js, re.S)
    assert match, js[:200]
    parsed: dict[str, object] = json.loads(match.group(1))
    return parsed


PRELOAD_BUNDLE = '<link rel="preload" href="/app.bundle.0f6159c501addfe9.js" as="script" fetchpriority="high">'


def test_viewer_routes_serve_index_html(servers: tuple[httpx.Client, httpx.Client]) -> None:
    client, _ = servers
    for path in ("/", "/viewer?StudyInstanceUIDs=1.2.840.113619.2.1", "/viewer/dicomvault", "/segmentation",
                 "/viewer/1.2.840.113619.2.55", "/index.html"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert r.headers["content-type"] == "text/html; charset=utf-8", path
        # The shipped page, with a preload of the application bundle at the start of its head.
        assert r.text == INDEX_HTML.replace("<head>", "<head>" + PRELOAD_BUNDLE), path
        assert r.headers["cache-control"] == "no-cache"


def test_index_html_is_compressed_and_revalidated(servers: tuple[httpx.Client, httpx.Client]) -> None:
    client, _ = servers
    zipped = client.get("/viewer", headers={"accept-encoding": "gzip"})
    plain = client.get("/viewer", headers={"accept-encoding": "identity"})
    assert zipped.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
    assert zipped.text == plain.text  # httpx decodes
    assert zipped.headers["etag"] != plain.headers["etag"]  # one strong ETag per representation
    again = client.get("/", headers={"accept-encoding": "gzip", "if-none-match": zipped.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_app_config_is_generated_for_this_archive(servers: tuple[httpx.Client, httpx.Client],
                                                  viewer_settings: Settings) -> None:
    client, _ = servers
    r = client.get("/app-config.js")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "cloudfront" not in r.text
    config = _config_of(r.text)
    sources = config["dataSources"]
    assert isinstance(sources, list) and len(sources) == 1
    source = sources[0]
    assert source["namespace"] == "@ohif/extension-default.dataSourcesModule.dicomweb"
    assert config["defaultDataSourceName"] == source["sourceName"]
    conf = source["configuration"]
    assert conf["qidoRoot"] == "/dicom-web"
    assert conf["wadoRoot"] == "/dicom-web"
    assert conf["imageRendering"] == "wadors"
    assert conf["omitQuotationForMultipartRequest"] is True
    assert viewer_settings.aet in conf["friendlyName"]
    assert config["customizationService"] == {"ohif.tours": {"$set": []}}
    again = client.get("/app-config.js", headers={"if-none-match": r.headers["etag"]})
    assert again.status_code == 304


def test_static_files_have_the_right_types_and_caching(servers: tuple[httpx.Client, httpx.Client]) -> None:
    client, _ = servers
    wasm = client.get("/34b1e6b1deb5828e.wasm")
    assert wasm.status_code == 200
    assert wasm.headers["content-type"] == "application/wasm"
    assert wasm.content == WASM
    assert "immutable" in wasm.headers["cache-control"]

    plain = client.get("/app.bundle.0f6159c501addfe9.js", headers={"accept-encoding": "identity"})
    assert plain.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "content-encoding" not in plain.headers
    assert plain.text == BUNDLE_JS

    brotli = client.get("/app.bundle.0f6159c501addfe9.js", headers={"accept-encoding": "gzip, deflate, br"})
    assert brotli.headers["content-encoding"] == "br"
    assert brotli.content == BR_BYTES  # sent as stored (httpx cannot decode Brotli without the brotli package)
    assert brotli.headers["vary"] == "accept-encoding"

    zipped = client.get("/app.bundle.0f6159c501addfe9.js", headers={"accept-encoding": "gzip, br;q=0"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert int(zipped.headers["content-length"]) < len(BUNDLE_JS)
    assert zipped.text == BUNDLE_JS  # httpx decodes
    assert zipped.headers["content-type"] == "text/javascript; charset=utf-8"

    revalidated = client.get("/app.bundle.0f6159c501addfe9.js", headers={
        "accept-encoding": "gzip", "if-none-match": zipped.headers["etag"]})
    assert revalidated.status_code == 304

    refused = client.get("/app.bundle.0f6159c501addfe9.js", headers={"accept-encoding": "gzip;q=0, br;q=0"})
    assert "content-encoding" not in refused.headers and refused.text == BUNDLE_JS

    assert client.get("/assets/favicon.ico").headers["content-type"] == "image/x-icon"
    assert client.get("/manifest.json").json() == {"name": "OHIF Viewer"}
    assert client.head("/34b1e6b1deb5828e.wasm").status_code == 200


def test_missing_assets_and_hidden_or_outside_files_are_404(servers: tuple[httpx.Client, httpx.Client]) -> None:
    client, _ = servers
    for path in ("/missing.bundle.js", "/assets/nope.png", "/.dicomvault-viewer", "/app.bundle.0f6159c501addfe9.js.gz",
                 "/app.bundle.0f6159c501addfe9.js.br",
                 "/%2e%2e/ohif/index.html", "/assets/%2e%2e/%2e%2e/vault/index.sqlite"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"].startswith("application/json"), path


def test_api_paths_are_not_shadowed(servers: tuple[httpx.Client, httpx.Client]) -> None:
    client, bare = servers
    for method, path in (("GET", "/dicom-web/no-such-resource"), ("GET", "/dicom-web"), ("GET", "/wado/x"),
                         ("GET", "/healthz/deeper"), ("GET", "/docs/x"), ("POST", "/healthz"),
                         ("DELETE", "/viewer"), ("POST", "/")):
        got = client.request(method, path)
        expected = bare.request(method, path)
        assert got.status_code == expected.status_code, (method, path)
        assert got.status_code in (404, 405), (method, path)
        assert got.headers["content-type"].startswith("application/json"), (method, path)
        assert got.json() == expected.json(), (method, path)
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/openapi.json").json()["info"]["title"] == "DicomVault"
    # No Swagger UI page (it loads its assets from a CDN); /docs stays the API's, a JSON 404, not the viewer.
    docs = client.get("/docs")
    assert docs.status_code == 404 and docs.headers["content-type"].startswith("application/json")


def test_mount_without_build_explains_at_root_and_serves_the_api(archive: Archive, settings: Settings,
                                                                  tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    missing = settings.model_copy(update={"viewer_dir": tmp_path / "not-installed"})
    app = create_app(archive)
    with caplog.at_level(logging.WARNING, logger="dicomvault.webui.viewer"):
        assert mount_viewer(app, missing) is False
    assert any("make viewer" in r.getMessage() and str(tmp_path / "not-installed") in r.getMessage()
               and r.levelno == logging.WARNING for r in caplog.records)
    with LiveServer(app) as server, httpx.Client(base_url=server.url) as client:
        root = client.get("/")
        assert root.status_code == 404
        assert root.headers["content-type"] == "text/html; charset=utf-8"
        assert "viewer not installed: run <code>make viewer</code>" in root.text.lower()
        assert 'href="/ui/"' in root.text and 'href="/dicom-web/studies"' in root.text
        assert str(tmp_path) not in root.text  # server paths only in the log
        assert client.head("/").status_code == 404
        for method, path in (("GET", "/viewer"), ("GET", "/dicom-web/x"), ("POST", "/")):
            r = client.request(method, path)
            assert r.status_code in (404, 405), (method, path)
            assert r.headers["content-type"].startswith("application/json"), (method, path)
        assert client.get("/healthz").json() == {"status": "ok"}
    # Installing the viewer later and mounting again replaces the page with the viewer.
    assert mount_viewer(app, settings.model_copy(update={"viewer_dir": _fake_build(tmp_path / "ohif-later")}))
    with LiveServer(app) as server, httpx.Client(base_url=server.url) as client:
        assert "app.bundle" in client.get("/").text


def test_mounting_twice_replaces_the_viewer(archive: Archive, viewer_settings: Settings, tmp_path: Path) -> None:
    other = _fake_build(tmp_path / "other")
    (other / "index.html").write_text("<!doctype html><title>second</title>")
    app = create_app(archive)
    assert mount_viewer(app, viewer_settings)
    assert mount_viewer(app, viewer_settings.model_copy(update={"viewer_dir": other}))
    with LiveServer(app) as server, httpx.Client(base_url=server.url) as client:
        assert "second" in client.get("/viewer").text
        assert client.get("/dicom-web/x").status_code == 404


def test_serve_mounts_the_viewer_next_to_the_api(archive: Archive, viewer_settings: Settings) -> None:
    """`dicomvault serve` composes the two front ends; the DICOMweb app factory alone serves no viewer."""
    viewing = dataclasses.replace(archive, settings=viewer_settings)  # shares the archive's services; not closed
    with LiveServer(http_app(viewing)) as served, LiveServer(create_app(viewing)) as api_only, \
            httpx.Client(base_url=served.url, timeout=10) as a, httpx.Client(base_url=api_only.url, timeout=10) as b:
        assert a.get("/").text == INDEX_HTML.replace("<head>", "<head>" + PRELOAD_BUNDLE)
        assert a.get("/dicom-web/studies").status_code in (200, 204)
        assert b.get("/").status_code == 404
