"""Authentication (API tokens, OIDC bearer JWTs, anonymous policy), scope checks, and the audit log.

Scopes: ``read`` (QIDO-RS, WADO-RS, WADO-URI), ``write`` (STOW-RS), ``delete`` (DELETE), ``admin`` (all of them).
Routes declare what they need with ``Depends(require_scope("read"))``.

Anonymous access (all scopes but ``admin``) is decided by ``AuthPolicy``:
- ``allow_anonymous = true``: always allowed;
- ``allow_anonymous = false``: never;
- unset (default): allowed only while the server listens on a loopback address, no API token is active, and no
  OIDC issuer is configured. ``create_app`` refuses (``ConfigurationError``) to serve a non-loopback address with
  neither authentication configured nor anonymous access explicitly enabled.

OIDC: a bearer JWT is verified with the issuer's JWKS (``oidc_jwks_url``, or ``jwks_uri`` discovered from
``<oidc_issuer>/.well-known/openid-configuration``): signature (RSA/EC/PSS only, never ``none`` or HMAC), ``iss``,
``exp`` (required), ``aud`` when ``oidc_audience`` is set. Scopes come from ``scope`` (space-separated) or ``scp``
(list or string): each value's last segment after ``.``, ``:`` or ``/`` names a DicomVault scope, so ``read``,
``dicom.read``, ``dicomvault:write`` and ``dicomweb/delete`` are all understood; other values are ignored.

Secrets are never logged. The audit log (logger ``dicomvault.audit``, INFO) records method, route template,
status and principal name: no UIDs, no query strings, no patient data.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jwt
from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dicomvault.domain.errors import ConfigurationError
from dicomvault.services.tokens import SCOPES

if TYPE_CHECKING:
    from dicomvault.services.tokens import TokenService
    from dicomvault.settings import Settings

audit_log = logging.getLogger("dicomvault.audit")
log = logging.getLogger(__name__)

ANONYMOUS_SCOPES = frozenset({"read", "write", "delete"})
_JWT_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token name, an OIDC subject, or ``anonymous``."""

    name: str
    scopes: frozenset[str]
    kind: str  # "token" | "oidc" | "anonymous"

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes


def is_loopback(host: str) -> bool:
    if host.strip().lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def scopes_from_claims(claims: dict[str, Any]) -> frozenset[str]:
    raw: list[str] = []
    for key in ("scope", "scp"):
        value = claims.get(key)
        if isinstance(value, str):
            raw.extend(value.split())
        elif isinstance(value, list):
            raw.extend(str(v) for v in value)
    out = set()
    for item in raw:
        last = item
        for sep in (".", ":", "/"):
            last = last.rsplit(sep, 1)[-1]
        if last.lower() in SCOPES:
            out.add(last.lower())
    return frozenset(out)


class OidcVerifier:
    """Verifies bearer JWTs against the issuer's keys; key fetching is blocking, so callers use a thread."""

    def __init__(self, issuer: str, audience: str | None, jwks_url: str | None) -> None:
        self.issuer = issuer
        self.audience = audience
        self._jwks_url = jwks_url
        self._client: jwt.PyJWKClient | None = None
        self._lock = threading.Lock()

    def _jwks_client(self) -> jwt.PyJWKClient:
        with self._lock:
            if self._client is None:
                url = self._jwks_url or self._discover()
                self._client = jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=10)
            return self._client

    def _discover(self) -> str:
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        with urllib.request.urlopen(url, timeout=10) as resp:
            doc = json.loads(resp.read(1 << 20))
        jwks = doc.get("jwks_uri")
        if not isinstance(jwks, str):
            raise jwt.PyJWKClientError("issuer metadata has no jwks_uri")
        return jwks

    def verify(self, token: str) -> Principal:
        """Raise ``jwt.PyJWTError`` (or ``PyJWKClientError``) for any invalid token."""
        key = self._jwks_client().get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            key.key,
            algorithms=_JWT_ALGORITHMS,
            issuer=self.issuer,
            audience=self.audience,
            leeway=30,
            options={"require": ["exp", "iss"], "verify_aud": self.audience is not None},
        )
        name = str(claims.get("preferred_username") or claims.get("client_id") or claims.get("sub") or "oidc")
        return Principal(name=name, scopes=scopes_from_claims(claims), kind="oidc")


@dataclass
class AuthPolicy:
    """The authentication configuration of one app (see the module docstring for the rules)."""

    settings: Settings
    tokens: TokenService | None
    oidc: OidcVerifier | None = field(default=None)

    @classmethod
    def from_settings(cls, settings: Settings, tokens: TokenService | None) -> AuthPolicy:
        oidc = None
        if settings.oidc_issuer:
            oidc = OidcVerifier(settings.oidc_issuer, settings.oidc_audience, settings.oidc_jwks_url)
        policy = cls(settings=settings, tokens=tokens, oidc=oidc)
        policy.check_startup()
        return policy

    def check_startup(self) -> None:
        """Refuse an open archive on a public address."""
        if is_loopback(self.settings.host) or self.settings.allow_anonymous is True:
            return
        if self.oidc is not None or (self.tokens is not None and self.tokens.any_active()):
            return
        raise ConfigurationError(
            f"refusing to serve DICOMweb on non-loopback address {self.settings.host!r} without authentication: "
            "create an API token (dicomvault token create), configure oidc_issuer, or set allow_anonymous=true"
        )

    def anonymous_allowed(self) -> bool:
        known = self.anonymous_allowed_cached()
        if known is not None:
            return known
        assert self.tokens is not None  # only an unknown token count leaves the question open
        return not self.tokens.any_active()

    def anonymous_allowed_cached(self) -> bool | None:
        """``anonymous_allowed`` when it can be answered without the index (None: ask ``anonymous_allowed``)."""
        explicit = self.settings.allow_anonymous
        if explicit is not None:
            return explicit
        if not is_loopback(self.settings.host) or self.oidc is not None:
            return False
        if self.tokens is None:
            return True
        active = self.tokens.any_active_cached()
        return None if active is None else not active

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
            allowed = self.anonymous_allowed_cached()
            if allowed is None:
                allowed = await run_in_threadpool(self.anonymous_allowed)
            if allowed:
                return Principal("anonymous", ANONYMOUS_SCOPES, "anonymous")
            raise _unauthorized("authentication required", None)
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise _unauthorized("expected an Authorization: Bearer credential", "invalid_request")
        if credential.count(".") == 2 and self.oidc is not None:
            try:
                return await run_in_threadpool(self.oidc.verify, credential)
            except (jwt.PyJWTError, jwt.PyJWKClientError, OSError) as exc:
                log.info("bearer JWT rejected: %s", type(exc).__name__)
                raise _unauthorized("invalid or expired bearer token", "invalid_token") from None
        if self.tokens is not None:
            token = await run_in_threadpool(self.tokens.verify, credential)
            if token is not None:
                return Principal(token.name, frozenset(token.scopes), "token")
        raise _unauthorized("invalid or revoked bearer token", "invalid_token")


def _unauthorized(message: str, error: str | None) -> HTTPException:
    challenge = 'Bearer realm="dicomvault"' + (f', error="{error}"' if error else "")
    return HTTPException(401, message, headers={"WWW-Authenticate": challenge})


def require_scope(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """FastAPI dependency: the caller's ``Principal`` if it holds ``scope`` (or ``admin``); 401/403 otherwise."""
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
        return principal

    dependency.__name__ = f"require_{scope}"
    return dependency


class AuditMiddleware:
    """Logs one audit line per request and answers unexpected exceptions with a bare 500 JSON body.

    Sits inside the CORS middleware so even a 500 carries CORS headers; the exception text (which may hold
    patient data from a parsed object) is logged only at DEBUG.
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
            log.error("unhandled %s on %s %s", type(exc).__name__, scope.get("method"), _template(scope))
            log.debug("unhandled exception", exc_info=True)
            if status == 0:
                status = 500
                body = b'{"error":"internal server error","status":500}'
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
        finally:
            principal = scope.get("state", {}).get("principal")
            who = principal.name if isinstance(principal, Principal) else "-"
            audit_log.info("%s %s %d %s", scope.get("method"), _template(scope), status, who)


def _template(scope: Scope) -> str:
    """The matched route's path with parameters as ``{name}`` (no UIDs in the audit log)."""
    if scope.get("route") is None:
        return "(unrouted)"
    by_value = {str(v): k for k, v in (scope.get("path_params") or {}).items()}
    return "/".join("{" + by_value[seg] + "}" if seg in by_value else seg
                    for seg in str(scope.get("path", "")).split("/"))
