"""Share links in the web pages: create one for a study (``/ui/shares/new?study=UID``), list and revoke them
(``/ui/shares``), and open one (``/share/<secret>``, no login: the link is the credential).

Why opening a link is a page and not an API call: the visitor follows a link from a mail or a message; the page
asks for the password when the link has one, then starts a session scoped to the study (``services.shares``) and
sends the browser to the viewer on that study with a 303 (the session cookie is ``SameSite=Lax``, so the viewer's
requests carry it). A link that cannot be opened answers a page that says why (404 unknown, 410 expired or
revoked, 429 locked after wrong passwords) and the attempt is recorded. The password form carries no anti-CSRF
token: its visitor has no session yet, and a forged submission could at most open the study for someone who
already holds the link.

The secret appears once, on the page answering the creation; the list shows links by number and study.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from dicomvault.domain.errors import InvalidQuery
from dicomvault.services.archive import Archive
from dicomvault.services.shares import MAX_PASSWORD_LENGTH, ShareRefused, ShareService
from dicomvault.webui.login import set_session_cookie
from dicomvault.webui.page_auth import PageUser, check_csrf, require_page
from dicomvault.webui.render import render

router = APIRouter(prefix="/ui", include_in_schema=False)
#: ``/share/<secret>``: outside ``/ui`` so that the link a person receives is short
links = APIRouter(include_in_schema=False)

#: the refusals of ``ShareService.open`` as page statuses
_REFUSED_STATUS = {"unknown": 404, "expired": 410, "revoked": 410, "locked": 429, "wrong_password": 401,
                   "password": 200}
MAX_LISTED = 200


def _shares(request: Request) -> ShareService:
    archive: Archive = request.app.state.archive
    if archive.shares is None:
        raise HTTPException(503, "this archive keeps no share links (no index database)")
    return archive.shares


def _manager(request: Request, user: PageUser) -> ShareService:
    shares = _shares(request)
    if not shares.may_create(user.principal):
        raise HTTPException(403, f"share links need the {shares.scope!r} scope")
    return shares


def viewer_location(study_uid: str) -> str:
    return "/viewer?StudyInstanceUIDs=" + quote(study_uid, safe="")


@router.get("/shares")
def list_page(request: Request, user: Annotated[PageUser, Depends(require_page("read"))]) -> Response:
    shares = _manager(request, user)
    now = datetime.now(UTC)
    rows = [(link, link.state(now), shares.describe(link.study_uid) or {})
            for link in shares.all(limit=MAX_LISTED)]
    return render(request, "shares.html", rows=rows, limit=MAX_LISTED)


@router.get("/shares/new")
def new_page(request: Request, user: Annotated[PageUser, Depends(require_page("read"))],
             study: str = "") -> Response:
    shares = _manager(request, user)
    about = shares.describe(study.strip()) if study.strip() else None
    if study.strip() and about is None:
        raise HTTPException(404, "no such study")
    return _form(request, shares, study.strip(), about, None)


def _form(request: Request, shares: ShareService, study: str, about: dict[str, str] | None, error: str | None,
          *, status_code: int = 200, days: str | None = None) -> Response:
    return render(request, "share_new.html", status_code=status_code, study=study, about=about or {},
                  error=error, days=days or f"{shares.default_life.total_seconds() / 86400:g}",
                  max_days=f"{shares.max_life.total_seconds() / 86400:g}", max_password=MAX_PASSWORD_LENGTH)


@router.post("/shares")
def create(request: Request, user: Annotated[PageUser, Depends(require_page("read"))],
           study: Annotated[str, Form(max_length=64)] = "",
           days: Annotated[str, Form(max_length=16)] = "",
           password: Annotated[str, Form(max_length=MAX_PASSWORD_LENGTH)] = "",
           deidentify: Annotated[str, Form(max_length=8)] = "",
           csrf_token: Annotated[str | None, Form(max_length=256)] = None) -> Response:
    check_csrf(user, csrf_token)
    shares = _manager(request, user)
    study = study.strip()
    about = shares.describe(study) if study else None
    try:
        expires = None
        if days.strip():
            try:
                life = float(days)
            except ValueError:
                raise InvalidQuery("the life of the link is a number of days") from None
            if not 0 < life < 100_000:
                raise InvalidQuery("the life of the link is a positive number of days")
            expires = datetime.now(UTC) + timedelta(days=life)
        created = shares.create(user.principal, study, expires_at=expires, password=password or None,
                                deidentify=bool(deidentify))
    except InvalidQuery as exc:
        return _form(request, shares, study, about, exc.message, status_code=400, days=days)
    url = str(request.base_url).rstrip("/") + "/share/" + created.secret
    return render(request, "share_created.html", status_code=201, link=created.record, url=url,
                  about=about or {}, password=bool(password))


@router.get("/shares/{share_id}")
def detail_page(request: Request, share_id: int,
                user: Annotated[PageUser, Depends(require_page("read"))]) -> Response:
    shares = _manager(request, user)
    link = shares.get(share_id)
    return render(request, "share_detail.html", link=link, state=link.state(datetime.now(UTC)),
                  about=shares.describe(link.study_uid) or {}, uses=shares.uses(share_id))


@router.post("/shares/{share_id}/revoke")
def revoke(request: Request, share_id: int, user: Annotated[PageUser, Depends(require_page("read"))],
           csrf_token: Annotated[str | None, Form(max_length=256)] = None) -> Response:
    check_csrf(user, csrf_token)
    _manager(request, user).revoke(user.principal, share_id)
    return RedirectResponse("/ui/shares", status_code=303)


# -- opening a link (no login) ---------------------------------------------------------------------------------


def _open(request: Request, secret: str, password: str | None) -> Response:
    shares = _shares(request)
    client = request.client.host if request.client is not None else "-"
    try:
        opened = shares.open(secret, password, client)
    except ShareRefused as exc:
        status = _REFUSED_STATUS.get(exc.why, 404)
        if exc.why in ("password", "wrong_password"):
            return render(request, "share_password.html", status_code=status, secret=secret,
                          error=exc.message if exc.why == "wrong_password" else None,
                          max_password=MAX_PASSWORD_LENGTH)
        return render(request, "share_refused.html", status_code=status, status=status, message=exc.message)
    response = RedirectResponse(viewer_location(opened.link.study_uid), status_code=303,
                                headers={"cache-control": "no-store", "referrer-policy": "no-referrer"})
    set_session_cookie(response, request, opened.session)
    return response


@links.get("/share/{secret}")
def open_link(request: Request, secret: str) -> Response:
    return _open(request, secret, None)


@links.post("/share/{secret}")
def open_with_password(request: Request, secret: str,
                       password: Annotated[str, Form(max_length=MAX_PASSWORD_LENGTH + 1)] = "") -> Response:
    return _open(request, secret, password)
