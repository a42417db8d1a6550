"""Who is looking at a page: the browser session (``services.sessions``), or anonymous where the archive allows it.

The pages share the HTTP app's ``AccessPolicy`` (``request.app.state.auth``, ``services.access``) with DICOMweb, so a
login holds for the pages and for the viewer's requests alike, and anonymous access follows the same rules.

A page that needs a scope the visitor lacks: a visitor who is not logged in is sent to the login page (303, with
the page to come back to); a logged-in one gets a 403 page. Every form that changes anything carries the session's
anti-CSRF token (``csrf_token``) and is refused without it; anonymous visitors never change anything through a page,
whatever ``anonymous_scopes`` allows (a page in a browser is exactly what the CSRF rule protects against).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request

from dicomvault.services.access import AccessPolicy, through_proxy
from dicomvault.services.auth import Principal
from dicomvault.services.sessions import SESSION_COOKIE, principal_of


@dataclass(frozen=True)
class PageUser:
    principal: Principal
    #: the session's anti-CSRF token ("" for anonymous visitors: they cannot submit changing forms)
    csrf: str

    @property
    def anonymous(self) -> bool:
        return self.principal.kind == "anonymous"


class LoginRequired(Exception):
    """Raised by a page dependency: the visitor must log in first (answered with a redirect to the login page)."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def policy_of(request: Request) -> AccessPolicy:
    policy = request.app.state.auth
    assert isinstance(policy, AccessPolicy)
    return policy


async def page_user(request: Request) -> PageUser | None:
    """The visitor (cached on the request), or None when nobody is logged in and anonymous access is off."""
    cached = getattr(request.state, "page_user", None)
    if isinstance(cached, PageUser):
        return cached
    policy = policy_of(request)
    user: PageUser | None = None
    secret = request.cookies.get(SESSION_COOKIE)
    if secret and policy.sessions is not None:
        known, session = policy.sessions.resolve_cached(secret)
        if not known:
            session = await run_in_threadpool(policy.sessions.resolve, secret)
        if session is not None:
            user = PageUser(principal_of(session), session.csrf)
            request.state.principal = user.principal  # the audit log names who it was
    if user is None:
        allowed = policy.anonymous_allowed_cached()
        if allowed is None:
            allowed = await run_in_threadpool(policy.anonymous_allowed)
        if allowed and (policy.settings.allow_anonymous is not None or not through_proxy(request.headers)):
            user = PageUser(policy.anonymous, "")
    if user is not None:
        request.state.page_user = user
    return user


def require_page(scope: str, *, allow_share: bool = False) -> Callable[[Request], Awaitable[PageUser]]:
    """Page dependency: the visitor, who holds ``scope``; otherwise a redirect to the login page or a 403.

    A share link's visitor (a principal scoped to one study, holding ``read``) gets 403 on every page unless the
    route opts in with ``allow_share`` (the pages of one study, which then check that it is the shared one)."""

    async def dependency(request: Request) -> PageUser:
        user = await page_user(request)
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if user is None:
            raise LoginRequired(path)
        if not user.principal.allows(scope):
            if user.anonymous:
                raise LoginRequired(path)
            raise HTTPException(403, f"this page needs the {scope!r} scope")
        if user.principal.study is not None and not allow_share:
            raise HTTPException(403, "a share link opens its study only")
        return user

    dependency.__name__ = f"page_{scope}"
    return dependency


def login_location(next_path: str) -> str:
    return "/ui/login?next=" + quote(safe_next(next_path), safe="")


def safe_next(value: str | None) -> str:
    """A local path to go back to after login (never another site: ``//evil``, ``/\\evil``, ``https://…``)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or len(value) > 2048:
        return "/ui/"
    return value


def check_csrf(user: PageUser, presented: str | None) -> None:
    """Refuse (403) a changing form without the session's anti-CSRF token, and any changing form of an anonymous
    visitor."""
    if user.anonymous or not user.csrf:
        raise HTTPException(403, "log in to change anything through the web pages")
    if presented is None or not hmac.compare_digest(presented.encode(), user.csrf.encode()):
        raise HTTPException(403, "the form's anti-CSRF token is missing or stale: reload the page and try again")
