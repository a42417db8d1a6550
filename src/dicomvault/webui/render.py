"""HTML pages from Jinja2 templates (``webui/templates``), with what every page needs: who is logged in, the
anti-CSRF token, the navigation.

Why server-rendered pages and not a single-page application: the pages are forms and tables over the archive's
services; rendered on the server they need no build step, no JavaScript framework and no CDN, work without internet
access, and every answer is bounded by the same service limits as the API. The little JavaScript there is (upload,
charts' tooltips) lives in ``webui/static`` and is served from the same origin.

Autoescaping is on for every template: patient names and descriptions come from received objects and are text,
never markup.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from dicomvault import __version__

_env = Environment(
    loader=PackageLoader("dicomvault.webui", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

#: the pages of the navigation bar: (path, label, scope needed to see the link)
NAVIGATION: tuple[tuple[str, str, str], ...] = (
    ("/ui/studies", "Studies", "read"),
    ("/ui/upload", "Upload", "write"),
    ("/ui/shares", "Shares", "write"),
    ("/ui/dashboard", "Dashboard", "read"),
    ("/ui/admin", "Admin", "admin"),
)

#: security headers of every page: no framing by other sites, no inline script from elsewhere, no sniffing
PAGE_HEADERS = {
    "x-frame-options": "SAMEORIGIN",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "content-security-policy": ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
                                "script-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'self'"),
    "cache-control": "no-store",
}


def render(request: Request, template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    """The page ``template`` with ``context`` and the request's user (``request.state.page_user``, set by
    ``page_auth``), its anti-CSRF token and the navigation the user may see."""
    user = getattr(request.state, "page_user", None)
    nav = [(path, label) for path, label, scope in NAVIGATION if user is not None and user.principal.allows(scope)]
    if user is not None and user.principal.study is not None:
        nav = []  # a share link's visitor sees the shared study only
    html = _env.get_template(template).render(
        request=request, user=user, csrf=user.csrf if user is not None else "", nav=nav, version=__version__,
        current=request.url.path, **context)
    return HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)
