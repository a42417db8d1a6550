"""Authentication (API tokens, OIDC bearer JWTs, anonymous policy), scope checks, and the audit log.

Scopes: ``read`` (QIDO-RS, WADO-RS, WADO-URI, /openapi.json), ``write`` (STOW-RS), ``delete`` (DELETE), ``admin``
(all of them). Routes declare what they need with ``Depends(require_scope("read"))``.

Anonymous access grants the scopes of ``anonymous_scopes`` (default ``read`` only: a page in the user's browser
must not be able to store or delete; ``admin`` is never anonymous). Whether it is on is decided by ``AuthPolicy``:
- ``allow_anonymous = true``: always, also through reverse proxies;
- ``allow_anonymous = false``: never;
- unset (default): only while the server listens on a loopback address, no API token is active, no OIDC issuer
  is configured, and the request did not come through a reverse proxy (it carries none of ``Forwarded``,
  ``X-Forwarded-For``, ``X-Forwarded-Host``, ``X-Forwarded-Proto``, ``X-Real-IP``, ``Via``): a proxy on the same
  host would otherwise make every client of the proxy a loopback client. ``create_app`` refuses
  (``ConfigurationError``) to serve a non-loopback address with neither authentication configured nor anonymous
  access explicitly enabled.

A browser session (cookie ``dv_session``, opened by the web pages' login or a share link: ``services/sessions.py``)
counts as a credential when no ``Authorization`` header is sent; its principal may be scoped to one study. A request
it authenticates that is not GET/HEAD/OPTIONS must carry the session's ``X-CSRF-Token``. The policy itself (who is
anonymous, which credentials count) is ``services/access.py``, shared with the web pages.

Bearer credentials (API tokens, OIDC JWTs) are verified by ``services/auth.py`` (rules there), which DIMSE User
Identity Negotiation uses too, so a credential grants the same scopes on both front ends.

Secrets are never logged. The audit log (logger ``dicomvault.audit``, INFO) records method, route template,
status and principal name: no UIDs, no query strings, no patient data.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dicomvault.dicomweb import share_scope
from dicomvault.dicomweb.errors import report_unexpected, route_template, unexpected_body
from dicomvault.services.access import AccessPolicy, through_proxy
from dicomvault.services.auth import Principal, looks_like_jwt, verify_credential
from dicomvault.services.auth import scopes_from_claims as scopes_from_claims  # re-exported (tests, callers)
from dicomvault.services.sessions import SESSION_COOKIE, csrf_matches, principal_of
from dicomvault.services.tokens import SCOPES

if TYPE_CHECKING:
    pass

audit_log = logging.getLogger("dicomvault.audit")
log = logging.getLogger(__name__)

def arrived_through_proxy(request: Request) -> bool:
    """Whether the request carries a header by which a reverse proxy announces itself."""
    return through_proxy(request.headers)


class AuthPolicy(AccessPolicy):
    """The access policy of the DICOMweb app, with HTTP authentication (see the module docstring for the rules)."""

    async def authenticate(self, request: Request) -> Principal:
        cached = getattr(request.state, "principal", None)
        if isinstance(cached, Principal):
            return cached
        principal = await self._authenticate(request)
        request.state.principal = principal
        return principal

    async def _authenticate(self, request: Request) -> Principal:
        header = request.headers.get("authorization")
        if not header:
            from_cookie = await self._session(request)
            if from_cookie is not None:
                return from_cookie
            allowed = self.anonymous_allowed_cached()
            if allowed is None:
                allowed = await run_in_threadpool(self.anonymous_allowed)
            if allowed and self.settings.allow_anonymous is None and arrived_through_proxy(request):
                raise _unauthorized("authentication required (anonymous access is not granted to requests "
                                    "forwarded by a proxy unless allow_anonymous is set)", None)
            if allowed:
                return self.anonymous
            raise _unauthorized("authentication required", None)
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise _unauthorized("expected an Authorization: Bearer credential", "invalid_request")
        principal = await run_in_threadpool(verify_credential, credential, self.tokens, self.oidc)
        if principal is not None:
            return principal
        jwt_checked = looks_like_jwt(credential) and self.oidc is not None
        raise _unauthorized("invalid or expired bearer token" if jwt_checked else
                            "invalid, expired or revoked bearer token", "invalid_token")


    async def _session(self, request: Request) -> Principal | None:
        """The principal of the request's session cookie, or None when there is no usable one (the request is then
        treated as carrying no credential). A request that changes anything must repeat the session's anti-CSRF
        token in ``X-CSRF-Token`` (403 otherwise): a cookie is sent by the browser whoever wrote the request."""
        secret = request.cookies.get(SESSION_COOKIE)
        if self.sessions is None or not secret:
            return None
        known, session = self.sessions.resolve_cached(secret)
        if not known:
            session = await run_in_threadpool(self.sessions.resolve, secret)
        if session is None:
            return None
        if request.method not in SAFE_METHODS and not csrf_matches(session, request.headers.get("x-csrf-token")):
            raise HTTPException(403, "a request authenticated by the session cookie must carry the session's "
                                     "X-CSRF-Token header")
        return principal_of(session)


#: methods that change nothing: no anti-CSRF token needed with a session cookie
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _unauthorized(message: str, error: str | None) -> HTTPException:
    challenge = 'Bearer realm="dicomvault"' + (f', error="{error}"' if error else "")
    return HTTPException(401, message, headers={"WWW-Authenticate": challenge})


def require_scope(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """FastAPI dependency: the caller's ``Principal`` if it holds ``scope`` (or ``admin``); 401/403 otherwise.
    A share link's visitor is also confined to its study (``share_scope.admit``: 404/403 elsewhere)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def dependency(request: Request) -> Principal:
        policy: AuthPolicy = request.app.state.auth
        principal = await policy.authenticate(request)
        if not principal.allows(scope):
            raise HTTPException(
                403, f"this operation needs the {scope!r} scope",
                headers={"WWW-Authenticate": f'Bearer realm="dicomvault", error="insufficient_scope", scope="{scope}"'},
            )
        share_scope.admit(request, principal)
        return principal

    dependency.__name__ = f"require_{scope}"
    return dependency


class AuditMiddleware:
    """Logs one audit line per request and answers unexpected exceptions with a 500 that can be acted on.

    The last-resort answer names the exception type and an error id; the ERROR log line carries the same id, the
    type and where it was raised (``errors.report_unexpected``), so an operator can find the cause without a
    traceback. The exception text (which may hold patient data from a parsed object) and the traceback are logged
    only at DEBUG. Sits inside the CORS middleware so even a 500 carries CORS headers.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            error_id = report_unexpected(exc, f"{scope.get('method')} {route_template(scope)}")
            if status == 0:
                status = 500
                body = unexpected_body(exc, error_id)
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
        finally:
            principal = scope.get("state", {}).get("principal")
            who = principal.name if isinstance(principal, Principal) else "-"
            audit_log.info("%s %s %d %s", scope.get("method"), route_template(scope), status, who)
