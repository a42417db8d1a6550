"""The page at ``/`` when no viewer build is installed: what to run, and where the rest of the archive is.

Why a page and not the API's JSON 404: ``/`` is what a person types into a browser after ``make serve``. A fresh
machine without npm or network access cannot fetch the viewer (``make serve`` goes on without it), and that person
should read what happened and how to fix it, not ``{"detail": "Not Found"}``. Only ``/`` (and ``/index.html``) get
the page: every other path keeps the API's answers, so scripts and the API's own 404s are unchanged.
"""

from __future__ import annotations

from pathlib import Path

from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from dicomvault.webui.app_config import DICOMWEB_ROOT

WEB_PAGES_ROOT = "/ui/"
"""The archive's own web pages (study browser, upload, dashboard)."""

_PATHS = frozenset({"/", "/index.html"})


def not_installed_html() -> str:
    """The page; it names no server path (it is shown to anyone who can reach the server; the log names it)."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>DicomVault: viewer not installed</title>
<style>body{{font-family:system-ui,sans-serif;max-width:44rem;margin:3rem auto;padding:0 1rem;line-height:1.5}}
code{{background:#f2f2f2;padding:.1rem .3rem;border-radius:3px}}</style></head>
<body>
<h1>DicomVault is running; the web viewer is not installed</h1>
<p>Viewer not installed: run <code>make viewer</code> (it needs <code>npm</code> and access to the npm registry),
then restart the server. The server's log says in which folder it looked (setting <code>viewer_dir</code>).</p>
<ul>
<li><a href="{WEB_PAGES_ROOT}">The archive's web pages</a> (<code>{WEB_PAGES_ROOT}</code>)</li>
<li><a href="{DICOMWEB_ROOT}/studies">The DICOMweb API</a> (<code>{DICOMWEB_ROOT}</code>: QIDO-RS, WADO-RS,
STOW-RS) and its <a href="/openapi.json">OpenAPI description</a></li>
<li><a href="/healthz">Health check</a></li>
</ul>
</body></html>
"""


class NotInstalledApp:
    """ASGI default handler without a viewer build: the explanation page at ``/``, else ``fallback``."""

    def __init__(self, viewer_dir: Path, fallback: ASGIApp) -> None:
        self.viewer_dir = viewer_dir
        self.page = not_installed_html()
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and scope.get("path") in _PATHS:
            # 404: there is no viewer at this address; the body says why and what to do.
            response = HTMLResponse(self.page, status_code=404, headers={"cache-control": "no-cache",
                                                                         "x-content-type-options": "nosniff"})
            await response(scope, receive, send)
            return
        await self.fallback(scope, receive, send)
