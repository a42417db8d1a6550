"""Who is calling: a bearer credential (API token or OIDC JWT) verified into a ``Principal`` with scopes.

Shared by both front ends so that a credential means the same everywhere: DICOMweb reads it from the
``Authorization: Bearer`` header (``dicomweb/security.py``), DIMSE from the User Identity Negotiation item of an
A-ASSOCIATE-RQ (``dimse/access.py``: the passcode of username + passcode, or the JWT of type 5).

Scopes: ``read``, ``write``, ``delete``, ``admin`` (``services.tokens.SCOPES``).

OIDC: an ``oidc_issuer`` requires an ``oidc_audience`` (refused at start otherwise: without it, a token the same
identity provider issued for any other application would be accepted). A bearer JWT is verified with the issuer's
JWKS (``oidc_jwks_url``, or ``jwks_uri`` discovered from ``<oidc_issuer>/.well-known/openid-configuration``):
signature (RSA/EC/PSS only, never ``none`` or HMAC), ``iss``, ``aud``, ``exp`` (all required). Scopes come from
``scope`` (space-separated) or ``scp`` (list or string); each value grants a DicomVault scope only if it is a key
of ``oidc_scope_map`` (exact, case-sensitive match; default ``dicomvault.read`` → read, ``dicomvault.write`` →
write, ``dicomvault.delete`` → delete, ``dicomvault.admin`` → admin), so ``calendar.read`` or ``otherapi:admin``
grant nothing.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt

from dicomvault.domain.errors import ConfigurationError
from dicomvault.services.tokens import SCOPES

if TYPE_CHECKING:
    from dicomvault.services.tokens import TokenService
    from dicomvault.settings import Settings

log = logging.getLogger(__name__)

_JWT_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token name, an OIDC subject, or ``anonymous``."""

    name: str
    scopes: frozenset[str]
    kind: str  # "token" | "oidc" | "anonymous" | "share"
    #: the only study this principal may reach (a share link's session); None: no such restriction
    study: str | None = None

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


class OidcVerifier:
    """Verifies bearer JWTs against the issuer's keys; key fetching is blocking, so async callers use a thread."""

    def __init__(self, issuer: str, audience: str, jwks_url: str | None, scope_map: dict[str, str]) -> None:
        self.issuer = issuer
        self.audience = audience
        self.scope_map = scope_map
        self._jwks_url = jwks_url
        self._client: jwt.PyJWKClient | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcVerifier | None:
        """The verifier for ``oidc_issuer`` (None when none is configured); raises ``ConfigurationError`` without
        an ``oidc_audience`` or with an invalid ``oidc_scope_map``."""
        if not settings.oidc_issuer:
            return None
        if not settings.oidc_audience:
            raise ConfigurationError(
                "oidc_issuer is set but oidc_audience is not: set oidc_audience to the audience (client id or "
                "API identifier) the identity provider puts in tokens meant for DicomVault, otherwise tokens it "
                "issues for any other application would be accepted")
        return cls(settings.oidc_issuer, settings.oidc_audience, settings.oidc_jwks_url,
                   check_scope_map(settings.oidc_scope_map))

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


def looks_like_jwt(credential: str) -> bool:
    """A compact JWS has three dot-separated parts; an API token (``dv_…``) has none."""
    return credential.count(".") == 2


def verify_jwt(oidc: OidcVerifier | None, token: str) -> Principal | None:
    """The principal of a valid OIDC JWT, or None (no issuer configured, or the token is invalid; the reason is
    logged by type only: a token is a secret)."""
    if oidc is None:
        return None
    try:
        return oidc.verify(token)
    except (jwt.PyJWTError, jwt.PyJWKClientError, OSError) as exc:
        log.info("bearer JWT rejected: %s", type(exc).__name__)
        return None


def verify_credential(credential: str, tokens: TokenService | None, oidc: OidcVerifier | None) -> Principal | None:
    """The principal a bearer credential stands for, or None when it is invalid, expired or revoked.

    A JWT (three dot-separated parts) is verified against the OIDC issuer when one is configured; anything else is
    looked up as an API token. Blocking (index lookup, JWKS fetch): async callers run it in a thread."""
    if looks_like_jwt(credential) and oidc is not None:
        return verify_jwt(oidc, credential)
    if tokens is not None:
        token = tokens.verify(credential)
        if token is not None:
            return Principal(token.name, frozenset(token.scopes), "token")
    return None
