"""The archive's own web pages under ``/ui``: mounted on the HTTP app by ``mount_pages`` (``cli/serve.py``).

Each page module owns a router (login, studies, upload, dashboard, admin, share links); this module puts them
together, serves their static files (``/ui/static``, from the package: no CDN) and answers errors on ``/ui`` paths
with an HTML page instead of the API's JSON body (``LoginRequired`` becomes a redirect to the login page).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, cast

from fastapi import APIRouter, Depends, FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from dicomvault.domain import errors
from dicomvault.domain.errors import DicomVaultError
from dicomvault.webui import admin, dashboard, download, login, oidc_login, shares, studies, study_page, upload
from dicomvault.webui.page_auth import LoginRequired, PageUser, login_location, require_page
from dicomvault.webui.render import render

STATIC_DIR = Path(__file__).parent / "static"
UI_PREFIX = "/ui"

home = APIRouter(prefix=UI_PREFIX, include_in_schema=False)


@home.get("")
async def ui_root() -> Response:
    return RedirectResponse("/ui/", status_code=308)


@home.get("/")
async def home_page(request: Request, user: Annotated[PageUser, Depends(require_page("read"))]) -> Response:
    if user.principal.study is not None:
        raise StarletteHTTPException(403, "this link opens one study only")
    if any(r for r in request.app.routes if getattr(r, "path", "") == "/ui/studies"):
        return RedirectResponse("/ui/studies", status_code=303)
    return render(request, "home.html")


#: page routers, in the order they are included (each module's ``router``)
ROUTERS: list[APIRouter] = [login.router, oidc_login.router, home, studies.router, study_page.router,
                            download.router, upload.router, shares.router, shares.links, dashboard.router,
                            admin.router]

Handler = Callable[[Request, Exception], Awaitable[Response]]


def _for_pages(api_handler: Handler | None, status_of: Callable[[Exception], int]) -> Handler:
    """An exception handler answering HTML on ``/ui`` pages (except ``/ui/api``) and the API's JSON elsewhere."""

    async def handler(request: Request, exc: Exception) -> Response:
        path = request.url.path
        if path.startswith(UI_PREFIX) and not path.startswith(UI_PREFIX + "/api/"):
            status = status_of(exc)
            message = getattr(exc, "detail", None) or getattr(exc, "message", None) or "error"
            return render(request, "error.html", status_code=status, status=status, message=str(message))
        if api_handler is None:
            raise exc
        return await api_handler(request, exc)

    return handler


#: the status of an error page for a domain error (the API's full table is ``dicomweb/errors.py``; a page only
#: needs the broad classes, and front ends do not import each other)
_PAGE_STATUS: tuple[tuple[type[DicomVaultError], int], ...] = (
    (errors.NotFound, 404), (errors.InvalidQuery, 400), (errors.InvalidDicom, 400), (errors.Unauthenticated, 401),
    (errors.PermissionDenied, 403), (errors.Conflict, 409), (errors.TooLarge, 413), (errors.Unavailable, 503),
)


def _status(exc: Exception) -> int:
    if isinstance(exc, StarletteHTTPException):
        return exc.status_code
    return next((status for kind, status in _PAGE_STATUS if isinstance(exc, kind)), 500)


def mount_pages(app: FastAPI, extra: list[APIRouter] | None = None) -> None:
    """Add the pages (and ``extra`` routers) to ``app``; call after ``create_app``."""
    for router in ROUTERS + (extra or []):
        app.include_router(router)
    app.mount(UI_PREFIX + "/static", StaticFiles(directory=STATIC_DIR), name="ui-static")

    async def login_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginRequired)
        return RedirectResponse(login_location(exc.next_path), status_code=303)

    app.add_exception_handler(LoginRequired, login_required)
    http = cast(Handler | None, app.exception_handlers.get(StarletteHTTPException))
    app.add_exception_handler(StarletteHTTPException, _for_pages(http, _status))
    domain = cast(Handler | None, app.exception_handlers.get(DicomVaultError))
    app.add_exception_handler(DicomVaultError, _for_pages(domain, _status))
