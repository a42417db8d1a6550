"""The uvicorn configuration of the HTTP front end, from ``Settings``: request limits, reverse proxies and HTTPS.

One function builds it for ``dicomvault serve`` and for the test servers alike, so the tests run the protocol,
limits and TLS context that production runs.

* **Protocol**: ``http_limits.limited_protocol`` (httptools with header size, header/body timeouts and
  connection caps).
* **Reverse proxies**: uvicorn believes ``X-Forwarded-For``/``X-Forwarded-Proto`` only from ``trusted_proxies``
  (uvicorn's own default trusts 127.0.0.1, which would let any local process claim any client address). With a
  trusted proxy, the client address and the scheme of the URLs in responses (STOW-RS RetrieveURL) are the ones the
  proxy reports.
* **HTTPS**: ``tls_cert`` + ``tls_key`` make the HTTP port speak HTTPS only, TLS 1.2 or later (the versions
  BSI TR-02102-2 and NIST SP 800-52r2 still accept); ``tls_client_ca`` additionally requires every client to
  present a certificate signed by one of those CAs (mutual TLS; the handshake fails without one). A client
  certificate authenticates the connection only: requests still need a token or OIDC bearer, or anonymous
  access, for their scopes.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import uvicorn

from dicomvault.dicomweb.http_limits import HttpLimits, limited_protocol, parse_networks
from dicomvault.domain.errors import ConfigurationError
from dicomvault.settings import Settings


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context, or None for plain HTTP; ``ConfigurationError`` for unusable files."""
    if settings.tls_cert is None and settings.tls_key is None:
        if settings.tls_client_ca is not None:
            raise ConfigurationError("tls_client_ca needs tls_cert and tls_key (HTTPS) to be set")
        return None
    if settings.tls_cert is None or settings.tls_key is None:
        raise ConfigurationError("tls_cert and tls_key must be set together")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"cannot load tls_cert {settings.tls_cert} with tls_key {settings.tls_key}: "
                                 f"{exc}") from None
    if settings.tls_client_ca is not None:
        try:
            context.load_verify_locations(cafile=settings.tls_client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(f"cannot load tls_client_ca {settings.tls_client_ca}: {exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _fixed(context: ssl.SSLContext) -> Callable[[uvicorn.Config, Callable[[], ssl.SSLContext]], ssl.SSLContext]:
    def factory(_config: uvicorn.Config, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return context

    return factory


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """uvicorn's ``Config`` for ``app`` under ``settings``; ``overrides`` are further ``Config`` arguments (e.g.
    ``port``, ``log_level``, ``lifespan``). Raises ``ConfigurationError`` for bad TLS files or proxy addresses."""
    try:
        proxies = parse_networks(settings.trusted_proxies)
    except ValueError as exc:
        raise ConfigurationError(f"trusted_proxies: {exc}") from None
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.http_port,
        "http": limited_protocol(HttpLimits.from_settings(settings)),
        "proxy_headers": bool(proxies),
        "forwarded_allow_ips": [str(net) for net in proxies] or None,
    }
    context = tls_context(settings)
    if context is not None:
        options["ssl_context_factory"] = _fixed(context)
    options.update(overrides)
    return uvicorn.Config(app, **options)
