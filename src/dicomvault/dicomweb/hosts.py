"""Host header check: the defence against DNS rebinding.

A page in the user's browser on ``http://rebind.attacker.example`` can make that name resolve to 127.0.0.1 and
then send same-origin requests to a loopback archive; before this check an anonymous DELETE sent that way was
answered 204. Those requests carry the attacker's name in ``Host``, so the server answers only requests whose
Host is a name it knows. A Host that is an IP address literal cannot come from rebinding (the page's origin would
then be that address, i.e. the archive itself).

``allowed_hosts`` empty (default): loopback names (``localhost``, ``localhost.localdomain``), any IP address
literal, the listen address (``host``) and this machine's host name (``socket.gethostname()``). Otherwise: the
listed names, ``*.example.org`` patterns (any subdomain), ``*`` (no check), plus loopback names and addresses.
Ports are ignored; IPv6 literals are written without brackets (``::1``). ``/healthz`` and ``/readyz`` are not
checked (orchestrators probe a pod by its address; the probes reveal nothing).

Why not Starlette's ``TrustedHostMiddleware``: it answers ``text/plain`` (this API answers every error as JSON),
redirects to ``www.`` names, has no notion of "any IP literal", and compares IPv6 hosts with their brackets.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from dicomvault.settings import Settings

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "127.0.0.1", "::1"})
UNCHECKED_PATHS = frozenset({"/healthz", "/readyz"})
_BODY = b'{"error":"the Host header names a host this server does not answer to (see allowed_hosts)","status":400}'


def host_name(header: str) -> str | None:
    """The host part of a Host header, lower-case, without port, brackets or trailing dot; None if malformed."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (value[end + 1:] and not (value[end + 1] == ":" and value[end + 2:].isdigit())):
            return None
        return value[1:end] or None
    name, sep, port = value.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        value = name
    elif ":" in value:
        return None
    value = value.rstrip(".")
    return value or None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class HostPolicy:
    """Which Host headers are answered (see the module docstring)."""

    names: frozenset[str]
    suffixes: tuple[str, ...] = ()
    any_ip: bool = False
    any_host: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> HostPolicy:
        configured = [h.strip().lower().strip("[]").rstrip(".") for h in settings.allowed_hosts if h.strip()]
        if not configured:
            names = set(LOOPBACK_NAMES)
            listen = settings.host.strip().lower().strip("[]")
            if listen and not (_is_ip(listen) and ipaddress.ip_address(listen).is_unspecified):
                names.add(listen)
            names.add(socket.gethostname().lower())
            return cls(names=frozenset(names), any_ip=True)
        exact = {h for h in configured if not h.startswith("*")}
        suffixes = tuple(h[1:] for h in configured if h.startswith("*.") and len(h) > 2)
        return cls(names=frozenset(exact | LOOPBACK_NAMES), suffixes=suffixes, any_host="*" in configured)

    def allows(self, header: str | None) -> bool:
        if self.any_host:
            return True
        if header is None:
            return False
        name = host_name(header)
        if name is None:
            return False
        if name in self.names or name.endswith(self.suffixes):
            return True
        if _is_ip(name):
            return self.any_ip or ipaddress.ip_address(name).is_loopback
        return False


class HostCheckMiddleware:
    """Answers 400 (JSON) to HTTP requests whose Host header the ``HostPolicy`` does not allow."""

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in UNCHECKED_PATHS:
            await self.app(scope, receive, send)
            return
        host = None
        for key, value in scope["headers"]:
            if key == b"host":
                host = value.decode("latin-1")
                break
        if self.policy.allows(host):
            await self.app(scope, receive, send)
            return
        log.info("HTTP request refused: Host %r is not in allowed_hosts", (host or "")[:100])
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(_BODY)).encode())]})
        await send({"type": "http.response.body", "body": _BODY})
