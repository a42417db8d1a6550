"""``/ui/login/oidc``: login with the organisation's account (``services.oidc_login``: authorization code + PKCE).

The PKCE verifier and the ``state`` wait in a cookie scoped to the callback's path (``HttpOnly``, ten minutes,
``SameSite=Lax`` so that the identity provider's redirect back carries it). A successful login opens the same
browser session as an API-token login, no longer than the access token is valid.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from dicomvault.domain.errors import Unauthenticated, Unavailable
from dicomvault.services.oidc_login import LoginState
from dicomvault.webui.login import set_session_cookie
from dicomvault.webui.page_auth import policy_of, safe_next
from dicomvault.webui.render import render

router = APIRouter(prefix="/ui/login/oidc", include_in_schema=False)

STATE_COOKIE = "dv_oidc"
STATE_PATH = "/ui/login/oidc"
STATE_SECONDS = 600


def _redirect_uri(request: Request) -> str:
    configured = policy_of(request).settings.oidc_redirect_url
    return configured or str(request.base_url).rstrip("/") + STATE_PATH + "/callback"


@router.get("")
async def start(request: Request, next: str | None = None) -> Response:
    login = policy_of(request).oidc_login
    if login is None:
        raise HTTPException(404, "login with an organisation account is not configured (oidc_client_id)")
    try:
        url, state = await run_in_threadpool(login.start, _redirect_uri(request), safe_next(next))
    except Unavailable as exc:
        return render(request, "login.html", status_code=503, next=safe_next(next), error=exc.message, oidc=True)
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(STATE_COOKIE, state.encode(), max_age=STATE_SECONDS, path=STATE_PATH, httponly=True,
                        samesite="lax", secure=request.url.scheme == "https")
    return response


@router.get("/callback")
async def callback(request: Request, code: str | None = None, state: str | None = None,
                   error: str | None = None) -> Response:
    policy = policy_of(request)
    login = policy.oidc_login
    if login is None or policy.sessions is None:
        raise HTTPException(404, "login with an organisation account is not configured (oidc_client_id)")
    kept = LoginState.decode(request.cookies.get(STATE_COOKIE))
    next_path = safe_next(kept.next_path if kept else None)
    try:
        if error:
            raise Unauthenticated(f"the identity provider did not log you in ({error[:100]})")
        done = await run_in_threadpool(login.finish, kept, state, code, _redirect_uri(request))
        opened = await run_in_threadpool(policy.sessions.open, done.principal, expires_at=done.expires_at)
    except (Unauthenticated, Unavailable) as exc:
        failed = render(request, "login.html", status_code=401 if isinstance(exc, Unauthenticated) else 503,
                        next=next_path, error=exc.message, oidc=True)
        failed.delete_cookie(STATE_COOKIE, path=STATE_PATH)
        return failed
    response = RedirectResponse(next_path, status_code=303)
    response.delete_cookie(STATE_COOKIE, path=STATE_PATH)
    set_session_cookie(response, request, opened)
    return response
