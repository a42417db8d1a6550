"""Login to the web pages with the organisation's account: the OIDC authorization-code flow with PKCE (RFC 7636).

Why this and not the implicit flow: the implicit flow puts the access token in the browser's address bar and history
and is deprecated (OAuth 2.0 Security BCP); with the code flow the browser only carries a one-time code, which is
useless without the PKCE verifier this server keeps for the browser (in a short-lived ``HttpOnly`` cookie, scoped
to the callback path). The access token obtained for the code is verified exactly as a bearer token
(``services.auth.OidcVerifier``: signature, issuer, ``oidc_audience``, expiry, scopes through ``oidc_scope_map``),
so a login grants what the same token would grant over the API, and the session ends when the token expires.

Steps: ``start`` → the issuer's authorization URL (``state``, ``code_challenge`` S256, the scopes of
``oidc_scope_map`` plus ``openid``) and the ``LoginState`` to keep; the issuer sends the browser back with
``code`` and ``state``; ``finish`` checks ``state`` (constant time), exchanges the code at the token endpoint
(``code_verifier``, and ``client_secret`` for a confidential client) and verifies the access token.

Network calls use ``urllib`` like the JWKS fetch of ``services.auth``: bounded answers (1 MiB), 10 s timeouts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt

from dicomvault.domain.errors import ConfigurationError, Unauthenticated, Unavailable
from dicomvault.services.auth import OidcVerifier, Principal

MAX_ANSWER_BYTES = 1 << 20
TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class LoginState:
    """What the browser keeps between ``start`` and ``finish`` (serialised into a cookie by the page)."""

    state: str
    verifier: str
    next_path: str

    def encode(self) -> str:
        raw = json.dumps({"s": self.state, "v": self.verifier, "n": self.next_path}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str | None) -> LoginState | None:
        if not value or len(value) > 4096:
            return None
        try:
            raw = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
            return cls(str(raw["s"]), str(raw["v"]), str(raw["n"]))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class LoggedIn:
    principal: Principal
    expires_at: datetime


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


def _read_json(request: urllib.request.Request | str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:
            body = answer.read(MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as exc:
        detail = exc.read(4096).decode("utf-8", "replace")
        try:
            reason = str(json.loads(detail).get("error", exc.code))
        except ValueError:
            reason = str(exc.code)
        raise Unauthenticated(f"the identity provider refused the login ({reason})") from None
    except OSError as exc:
        raise Unavailable(f"the identity provider did not answer ({type(exc).__name__})") from None
    if len(body) > MAX_ANSWER_BYTES:
        raise Unavailable("the identity provider's answer is too large")
    try:
        value = json.loads(body)
    except ValueError:
        raise Unavailable("the identity provider's answer is not JSON") from None
    if not isinstance(value, dict):
        raise Unavailable("the identity provider's answer is not a JSON object")
    return value


class OidcLogin:
    def __init__(self, verifier: OidcVerifier, client_id: str, client_secret: str | None = None) -> None:
        self.verifier = verifier
        self.client_id = client_id
        self.client_secret = client_secret
        self._endpoints: tuple[str, str] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any, verifier: OidcVerifier | None) -> OidcLogin | None:
        """The login flow when ``oidc_client_id`` is set (it needs ``oidc_issuer``; refused otherwise)."""
        if not settings.oidc_client_id:
            return None
        if verifier is None:
            raise ConfigurationError("oidc_client_id is set but oidc_issuer is not: the login needs the issuer")
        secret = settings.oidc_client_secret.get_secret_value() if settings.oidc_client_secret else None
        return cls(verifier, settings.oidc_client_id, secret)

    def endpoints(self) -> tuple[str, str]:
        """``(authorization_endpoint, token_endpoint)`` from the issuer's discovery document (fetched once)."""
        with self._lock:
            if self._endpoints is None:
                doc = _read_json(self.verifier.issuer.rstrip("/") + "/.well-known/openid-configuration")
                auth, token = doc.get("authorization_endpoint"), doc.get("token_endpoint")
                if not isinstance(auth, str) or not isinstance(token, str):
                    raise Unavailable("the identity provider publishes no authorization or token endpoint")
                self._endpoints = (auth, token)
            return self._endpoints

    def scope(self) -> str:
        return " ".join(["openid", *sorted(self.verifier.scope_map)])

    def start(self, redirect_uri: str, next_path: str) -> tuple[str, LoginState]:
        """The URL to send the browser to, and the state to keep until it comes back."""
        authorization, _ = self.endpoints()
        state = LoginState(secrets.token_urlsafe(24), secrets.token_urlsafe(48), next_path)
        query = urllib.parse.urlencode({
            "response_type": "code", "client_id": self.client_id, "redirect_uri": redirect_uri,
            "scope": self.scope(), "state": state.state, "code_challenge": _challenge(state.verifier),
            "code_challenge_method": "S256",
        })
        separator = "&" if "?" in authorization else "?"
        return f"{authorization}{separator}{query}", state

    def finish(self, kept: LoginState | None, state: str | None, code: str | None, redirect_uri: str) -> LoggedIn:
        """Exchange the code for an access token and verify it; raises ``Unauthenticated`` (bad state, refused
        code, invalid token) or ``Unavailable`` (the issuer did not answer). Blocking."""
        if kept is None or not state or not hmac.compare_digest(kept.state.encode(), state.encode()):
            raise Unauthenticated("the login expired or did not start here: try again")
        if not code or len(code) > 4096:
            raise Unauthenticated("the identity provider sent no authorization code")
        _, token_endpoint = self.endpoints()
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                "client_id": self.client_id, "code_verifier": kept.verifier}
        if self.client_secret:
            form["client_secret"] = self.client_secret
        request = urllib.request.Request(
            token_endpoint, data=urllib.parse.urlencode(form).encode(), method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
        answer = _read_json(request)
        access = answer.get("access_token")
        if not isinstance(access, str):
            raise Unauthenticated("the identity provider returned no access token")
        try:
            principal = self.verifier.verify(access)
        except (jwt.PyJWTError, jwt.PyJWKClientError, OSError) as exc:
            raise Unauthenticated(f"the access token was not accepted ({type(exc).__name__})") from None
        if not principal.scopes:
            raise Unauthenticated("your account is granted no DicomVault scope (see oidc_scope_map)")
        claims = jwt.decode(access, options={"verify_signature": False})
        return LoggedIn(principal, datetime.fromtimestamp(int(claims["exp"]), UTC))
