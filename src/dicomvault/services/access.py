"""Who may call the archive over HTTP without a credential, and which credentials are accepted: one policy for
every HTTP front end (DICOMweb, the web pages), built once per app.

Anonymous access grants the scopes of ``anonymous_scopes`` (default ``read`` only; ``admin`` is never anonymous).
Whether it is on:
- ``allow_anonymous = true``: always, also through reverse proxies;
- ``allow_anonymous = false``: never;
- unset (default): only while the server listens on a loopback address, no API token is active, no OIDC issuer
  is configured, and the request did not come through a reverse proxy (the front end checks the headers).
``check_startup`` refuses to serve a non-loopback address with neither authentication configured nor anonymous
access explicitly enabled. Browser sessions (``services.sessions``) are resolved by the same policy, so a page and
the viewer's DICOMweb requests see the same login.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Self

from dicomvault.domain.errors import ConfigurationError
from dicomvault.services.auth import OidcVerifier, Principal, is_loopback
from dicomvault.services.oidc_login import OidcLogin

if TYPE_CHECKING:
    from dicomvault.services.sessions import SessionService
    from dicomvault.services.tokens import TokenService
    from dicomvault.settings import Settings

#: headers by which a reverse proxy tells that it forwarded a request (any of them: the request came through one)
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip", "via")


def through_proxy(headers: Mapping[str, str]) -> bool:
    """Whether a request's headers (lower-case names) include one by which a reverse proxy announces itself."""
    return any(name in headers for name in PROXY_HEADERS)


@dataclass
class AccessPolicy:
    """The authentication configuration of one app (see the module docstring for the rules)."""

    settings: Settings
    tokens: TokenService | None
    oidc: OidcVerifier | None = field(default=None)
    anonymous: Principal = field(default=Principal("anonymous", frozenset({"read"}), "anonymous"))
    #: browser sessions (None: cookies are not looked at)
    sessions: SessionService | None = field(default=None)
    #: login to the pages with the organisation's account (``oidc_client_id`` set)
    oidc_login: OidcLogin | None = field(default=None)

    @classmethod
    def from_settings(cls, settings: Settings, tokens: TokenService | None,
                      sessions: SessionService | None = None) -> Self:
        oidc = OidcVerifier.from_settings(settings)  # raises ConfigurationError (no audience, bad scope map)
        anonymous = Principal("anonymous", frozenset(settings.anonymous_scopes) - {"admin"}, "anonymous")
        policy = cls(settings=settings, tokens=tokens, oidc=oidc, anonymous=anonymous, sessions=sessions,
                     oidc_login=OidcLogin.from_settings(settings, oidc))
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
