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

OIDC: an ``oidc_issuer`` requires an ``oidc_audience`` (refused at start otherwise: without it, a token the same
identity provider issued for any other application would be accepted). A bearer JWT is verified with the issuer's
JWKS (``oidc_jwks_url``, or ``jwks_uri`` discovered from ``<oidc_issuer>/.well-known/openid-configuration``):
signature (RSA/EC/PSS only, never ``none`` or HMAC), ``iss``, ``aud``, ``exp`` (all required). Scopes come from
``scope`` (space-separated) or ``scp`` (list or string); each value grants a DicomVault scope only if it is a key
of ``oidc_scope_map`` (exact, case-sensitive match; default ``dicomvault.read`` → read, ``dicomvault.write`` →
write, ``dicomvault.delete`` → delete, ``dicomvault.admin`` → admin), so ``calendar.read`` or ``otherapi:admin``
grant nothing.

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

from dicomvault.dicomweb.errors import report_unexpected, route_template, unexpected_body
from dicomvault.domain.errors import ConfigurationError
from dicomvault.services.tokens import SCOPES

if TYPE_CHECKING:
    from dicomvault.services.tokens import TokenService
    from dicomvault.settings import Settings

audit_log = logging.getLogger("dicomvault.audit")
log = logging.getLogger(__name__)

#: headers by which a reverse proxy tells that it forwarded a request (any of them: the request came through one)
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip", "via")
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


def scopes_from_claims(claims: dict[str, Any], scope_map: dict[str, str]) -> frozenset[str]:
    """The DicomVault scopes granted by the ``scope``/``scp`` claim values that are keys of ``scope_map``."""
    raw: list[str] = []
    for key in ("scope", "scp"):
        value = claims.get(key)
        if isinstance(value, str):
            raw.extend(value.split())
        elif isinstance(value, list):
            raw.extend(str(v) for v in value)
    return frozenset(scope_map[item] for item in raw if item in scope_map)


def check_scope_map(scope_map: dict[str, str]) -> dict[str, str]:
    """``oidc_scope_map`` validated: every target is a DicomVault scope, every name non-empty without spaces."""
    for name, target in scope_map.items():
        if not name or name != name.strip() or " " in name:
            raise ConfigurationError(f"oidc_scope_map: {name!r} is not a valid OIDC scope name")
        if target not in SCOPES:
            raise ConfigurationError(f"oidc_scope_map: {name!r} maps to {target!r}, not one of {', '.join(SCOPES)}")
    if not scope_map:
        raise ConfigurationError("oidc_scope_map is empty: no OIDC token could be granted anything")
    return dict(scope_map)


def arrived_through_proxy(request: Request) -> bool:
    """Whether the request carries a header by which a reverse proxy announces itself."""
    headers = request.headers
    return any(name in headers for name in PROXY_HEADERS)


class OidcVerifier:
    """Verifies bearer JWTs against the issuer's keys; key fetching is blocking, so callers use a thread."""

    def __init__(self, issuer: str, audience: str, jwks_url: str | None, scope_map: dict[str, str]) -> None:
        self.issuer = issuer
        self.audience = audience
        self.scope_map = scope_map
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
            options={"require": ["exp", "iss", "aud"], "verify_aud": True},
        )
        name = str(claims.get("preferred_username") or claims.get("client_id") or claims.get("sub") or "oidc")
        return Principal(name=name, scopes=scopes_from_claims(claims, self.scope_map), kind="oidc")


@dataclass
class AuthPolicy:
    """The authentication configuration of one app (see the module docstring for the rules)."""

    settings: Settings
    tokens: TokenService | None
    oidc: OidcVerifier | None = field(default=None)
    anonymous: Principal = field(default=Principal("anonymous", frozenset({"read"}), "anonymous"))

    @classmethod
    def from_settings(cls, settings: Settings, tokens: TokenService | None) -> AuthPolicy:
        oidc = None
        if settings.oidc_issuer:
            if not settings.oidc_audience:
                raise ConfigurationError(
                    "oidc_issuer is set but oidc_audience is not: set oidc_audience to the audience (client id or "
                    "API identifier) the identity provider puts in tokens meant for DicomVault, otherwise tokens it "
                    "issues for any other application would be accepted")
            oidc = OidcVerifier(settings.oidc_issuer, settings.oidc_audience, settings.oidc_jwks_url,
                                check_scope_map(settings.oidc_scope_map))
        anonymous = Principal("anonymous", frozenset(settings.anonymous_scopes) - {"admin"}, "anonymous")
        policy = cls(settings=settings, tokens=tokens, oidc=oidc, anonymous=anonymous)
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
        raise _unauthorized("invalid, expired or revoked bearer token", "invalid_token")


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
