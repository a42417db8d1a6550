"""Login and logout of the web pages (and, through the same session cookie, of the viewer).

A login exchanges an API token (``dicomvault token create``) for a session (``services.sessions``): the token is
checked once and is not kept by the browser. The cookie is ``HttpOnly`` (no script reads it), ``SameSite=Lax``
(sent on the user's own navigation, including a link opened from a mail, never on other sites' forms or scripts),
``Secure`` when the page came over HTTPS, and lives no longer than the session.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from dicomvault.domain.errors import Unauthenticated
from dicomvault.services.sessions import SESSION_COOKIE, OpenedSession
from dicomvault.webui.page_auth import PageUser, check_csrf, page_user, policy_of, require_page, safe_next
from dicomvault.webui.render import render

router = APIRouter(prefix="/ui", include_in_schema=False)

MAX_CREDENTIAL_LENGTH = 8192


def set_session_cookie(response: Response, request: Request, opened: OpenedSession) -> None:
    """Put a new session's secret in the cookie (shared with the share-link pages)."""
    max_age = max(0, int((opened.record.expires_at - opened.record.created_at).total_seconds()))
    response.set_cookie(SESSION_COOKIE, opened.secret, max_age=max_age, path="/", httponly=True, samesite="lax",
                        secure=request.url.scheme == "https")


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    policy = policy_of(request)
    return render(request, "login.html", next=safe_next(next), error=None, oidc=policy.oidc_login is not None)


@router.post("/login")
async def login(request: Request, token: Annotated[str, Form(max_length=MAX_CREDENTIAL_LENGTH)] = "",
                next: Annotated[str, Form(max_length=2048)] = "/ui/") -> Response:
    policy = policy_of(request)
    if policy.sessions is None:
        return render(request, "login.html", status_code=503, next=safe_next(next), oidc=False,
                      error="this archive keeps no sessions (no index database)")
    try:
        opened = await run_in_threadpool(policy.sessions.login, token)
    except Unauthenticated as exc:
        return render(request, "login.html", status_code=401, next=safe_next(next), error=exc.message,
                      oidc=policy.oidc_login is not None)
    response = RedirectResponse(safe_next(next), status_code=303)
    set_session_cookie(response, request, opened)
    return response


@router.post("/logout")
async def logout(request: Request, user: Annotated[PageUser, Depends(require_page("read"))],
                 csrf_token: Annotated[str | None, Form(max_length=256)] = None) -> Response:
    check_csrf(user, csrf_token)
    policy = policy_of(request)
    if policy.sessions is not None:
        await run_in_threadpool(policy.sessions.logout, request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/session")
async def session_info(request: Request) -> Response:
    """Who the browser is logged in as, with the anti-CSRF token the page scripts send (JSON, same origin only)."""
    user = await page_user(request)
    if user is None:
        return JSONResponse({"authenticated": False}, status_code=401, headers={"cache-control": "no-store"})
    return JSONResponse({"authenticated": not user.anonymous, "name": user.principal.name,
                         "scopes": sorted(user.principal.scopes), "study": user.principal.study,
                         "csrf": user.csrf}, headers={"cache-control": "no-store"})
