"""Serve the OHIF web viewer (a prebuilt static bundle, see scripts/fetch-viewer.sh) at the site root.

Why the root: the published OHIF build hard-codes the public path ``/`` in its bundles, ``index.html``, a CSS font
URL and ``manifest.json``. Why not a mount: a ``Mount("/")`` would match every path, shadow API routes added after
it and turn the API's 405/404 answers into HTML. Instead the viewer becomes the router's *default* handler, which
Starlette calls only when no route matched at all; paths under the API prefixes still get the API's JSON 404.

Client-side routes (``/viewer``, ``/segmentation``, …) fall back to ``index.html``; a missing asset (``/x.js``)
is a real 404 so that a stale bundle fails loudly instead of being parsed as HTML.

With authentication on, a visitor who is not logged in (no session cookie, anonymous access off) asking for the
viewer's page is sent to ``/ui/login`` and comes back after it: the viewer's DICOMweb requests then carry the
session cookie (``services/sessions.py``). The viewer's own files (scripts, styles) stay public: they hold no data.

Fast first image: assets are sent as the Brotli or gzip files scripts/fetch-viewer.sh wrote next to them (no
compression per request), content-hashed files are cached for a year, and ``index.html`` carries preload hints
(``index_page``). Without a build, ``/`` explains how to install one (``not_installed``).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from dicomvault.services.access import AccessPolicy
from dicomvault.settings import Settings
from dicomvault.webui.app_config import DICOMWEB_ROOT, WADO_URI_ROOT, app_config_js
from dicomvault.webui.index_page import INDEX_NAME, IndexPage, build_index_page
from dicomvault.webui.not_installed import NotInstalledApp
from dicomvault.webui.page_auth import login_location, page_user

log = logging.getLogger(__name__)

RESERVED_PREFIXES: tuple[str, ...] = (
    DICOMWEB_ROOT, WADO_URI_ROOT, "/healthz", "/readyz", "/docs", "/redoc", "/ui", "/admin", "/metrics", "/share")
"""Path prefixes that belong to the API: never answered with a viewer file, even when no route matched."""

RESERVED_PATHS: frozenset[str] = frozenset({"/openapi.json"})

MEDIA_TYPES: dict[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".wasm": "application/wasm",
    ".json": "application/json",
    ".jsonc": "application/json",
    ".webapp": "application/x-web-app-manifest+json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".gif": "image/gif",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".ttf": "font/ttf",
    ".xml": "application/xml",
    ".txt": "text/plain; charset=utf-8",
}
"""Explicit types: Python's ``mimetypes`` differs by version and host (``.wasm`` must be ``application/wasm`` or
browsers refuse streaming compilation; ``.js`` must be a JavaScript type for module scripts)."""

_HASHED = re.compile(r"(^|\.)[0-9a-f]{16}\.")
"""Content-hashed file names (``app.bundle.0f6159c501addfe9.js``, ``34b1e6b1deb5828e.wasm``): cache forever."""

_IMMUTABLE = "public, max-age=31536000, immutable"
_REVALIDATE = "no-cache"
_CONFIG_NAME = "app-config.js"
_INDEX_NAME = INDEX_NAME

ENCODINGS: tuple[tuple[str, str], ...] = (("br", ".br"), ("gzip", ".gz"))
"""Stored encodings in order of preference (Brotli is ~25 % smaller than gzip on OHIF's bundles)."""


def is_reserved(path: str) -> bool:
    """True for paths the API owns, whether or not a route exists for them."""
    if path in RESERVED_PATHS:
        return True
    return any(path == p or path.startswith(p + "/") for p in RESERVED_PREFIXES)


def accepted_encodings(header: str) -> frozenset[str]:
    """The content codings an ``Accept-Encoding`` header allows (``q=0`` excludes one)."""
    out = set()
    for item in header.split(","):
        token, _, params = item.partition(";")
        token = token.strip().lower()
        q = params.strip().lower()
        if q.startswith("q="):
            try:
                if float(q[2:]) <= 0:
                    continue
            except ValueError:
                continue
        if token:
            out.add(token)
    return frozenset(out)


def installed(viewer_dir: Path) -> bool:
    """Whether ``viewer_dir`` holds an OHIF build (scripts/fetch-viewer.sh has run)."""
    return (viewer_dir / _INDEX_NAME).is_file()


@dataclass(frozen=True)
class _Target:
    path: Path
    media_type: str


class ViewerApp:
    """ASGI handler for everything no API route matched: viewer files, SPA fallback, else ``fallback``."""

    def __init__(self, root: Path, config_js: bytes, fallback: ASGIApp) -> None:
        self.root = root.resolve()
        self.config_js = config_js
        self.config_etag = '"' + hashlib.sha256(config_js).hexdigest()[:32] + '"'
        self.fallback = fallback
        self.index: IndexPage = build_index_page(self.root)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or is_reserved(path):
            await self.fallback(scope, receive, send)
            return
        request = Request(scope)
        if self._shows_shell(path) and not await self._may_view(request):
            # With authentication on, the viewer would only meet 401s: log in first, then come back here.
            query = scope.get("query_string", b"").decode("latin-1")
            await RedirectResponse(login_location(path + (f"?{query}" if query else "")), status_code=303)(
                scope, receive, send)
            return
        response = self.respond(request, path)
        if response is None:
            await self.fallback(scope, receive, send)
            return
        response.headers.setdefault("x-content-type-options", "nosniff")
        await response(scope, receive, send)

    def _shows_shell(self, path: str) -> bool:
        target = self._locate(path)
        return target is not None and target.path == self.root / _INDEX_NAME

    @staticmethod
    async def _may_view(request: Request) -> bool:
        """Whether the visitor is logged in (or anonymous access is on) on an app with an access policy."""
        if not isinstance(getattr(request.app.state, "auth", None), AccessPolicy):
            return True
        return await page_user(request) is not None

    def respond(self, request: Request, path: str) -> Response | None:
        """The response for ``path``, or None when it is neither a viewer file nor a client-side route."""
        if path.lstrip("/") == _CONFIG_NAME:
            return self._config(request)
        target = self._locate(path)
        if target is None:
            return None
        if target.path == self.root / _INDEX_NAME:
            return self._index(request)
        return self._file(request, target)

    def _index(self, request: Request) -> Response:
        page = self.index
        body, etag = page.body, page.etag
        headers = {"cache-control": _REVALIDATE, "vary": "accept-encoding"}
        if "gzip" in accepted_encodings(request.headers.get("accept-encoding", "")):
            body, etag = page.gzipped, page.etag[:-1] + '-gzip"'  # one strong ETag per representation
            headers["content-encoding"] = "gzip"
        headers["etag"] = etag
        if request.headers.get("if-none-match") == etag:
            headers.pop("content-encoding", None)
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=MEDIA_TYPES[".html"], headers=headers)

    def _config(self, request: Request) -> Response:
        headers = {"cache-control": _REVALIDATE, "etag": self.config_etag}
        if request.headers.get("if-none-match") == self.config_etag:
            return Response(status_code=304, headers=headers)
        return Response(self.config_js, media_type=MEDIA_TYPES[".js"], headers=headers)

    def _locate(self, path: str) -> _Target | None:
        parts = PurePosixPath(path).parts[1:]  # drop the leading "/"
        if any(p in ("..", ".") or p.startswith(".") or "\\" in p or "\x00" in p for p in parts):
            return None
        if parts:
            last = parts[-1].lower()
            if last.endswith((".gz", ".br")):  # a stored encoding of another file, sent only via Accept-Encoding
                return None
            candidate = self.root.joinpath(*parts)
            if candidate.is_file() and candidate.resolve().is_relative_to(self.root):
                suffix = candidate.suffix.lower()
                return _Target(candidate, MEDIA_TYPES.get(suffix, "application/octet-stream"))
            # A missing asset is a 404, not the app shell (UIDs such as 1.2.840.113619 have no known suffix).
            if PurePosixPath(last).suffix in MEDIA_TYPES:
                return None
        return _Target(self.root / _INDEX_NAME, MEDIA_TYPES[".html"])

    def _file(self, request: Request, target: _Target) -> Response:
        cache = _IMMUTABLE if _HASHED.search(target.path.name) else _REVALIDATE
        headers = {"cache-control": cache, "vary": "accept-encoding"}
        sent = target.path
        accepted = accepted_encodings(request.headers.get("accept-encoding", ""))
        for coding, suffix in ENCODINGS:
            encoded = target.path.with_name(target.path.name + suffix)
            if coding in accepted and encoded.is_file():
                sent = encoded
                headers["content-encoding"] = coding
                break
        stat = sent.stat()
        response = FileResponse(sent, media_type=target.media_type, headers=headers, stat_result=stat)
        etag = response.headers.get("etag")
        if etag is not None and request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"etag": etag, **headers})
        return response


def mount_viewer(app: FastAPI, settings: Settings) -> bool:
    """Serve the OHIF build from ``settings.viewer_dir`` at ``/`` if it is installed; return whether it is.

    Without a build, ``/`` answers a page saying how to install it (every other path is the API's, as before).

    Call once the API routes exist (the viewer only answers what no route matched, so order does not change
    precedence, but calling it twice replaces the earlier viewer instead of stacking them).
    """
    viewer_dir = settings.viewer_dir
    current = app.router.default
    fallback = current.fallback if isinstance(current, (ViewerApp, NotInstalledApp)) else current
    if not installed(viewer_dir):
        log.warning("web viewer not installed in %s: run `make viewer` (needs npm and the npm registry); "
                    "/ shows how, the API is served as usual", viewer_dir.resolve())
        app.router.default = NotInstalledApp(viewer_dir.resolve(), fallback)
        return False
    app.router.default = ViewerApp(viewer_dir, app_config_js(settings), fallback)
    app.state.viewer_dir = viewer_dir.resolve()
    log.info("web viewer served at / from %s", viewer_dir.resolve())
    return True
