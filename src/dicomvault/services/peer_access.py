"""Who may associate with the archive over DIMSE, and what each association may do.

The decision, free of any protocol library (``dimse/access.py`` turns it into A-ASSOCIATE-RJ and DIMSE statuses,
on the lean storage path and on pynetdicom's alike):

1. **Called AE title** (``dimse_check_called_aet``, on by default): it must be the archive's ``aet``.
2. **Known peers** (``dimse_peers``, and ``allowed_calling_aets`` = every permission from any address): a known
   calling AE title is admitted only from its ``hosts`` (addresses or networks), only over TLS when its rule says
   ``tls``, and under mutual TLS only with a client certificate that names it (subject CN or a DNS SAN in its
   ``tls_names``, by default its AE title). A known AE title that fails any of these is refused whatever else it
   presents: it is being claimed by someone else.
3. **User identity** (PS3.7 D.3.3.7): a verified credential (API token, OIDC JWT) adds the permissions of its
   scopes (``domain.peers.SCOPE_PERMISSIONS``); an invalid one refuses the association.
4. **Anonymous** (unknown calling AE titles): admitted with ``dimse_anonymous_permissions`` when
   ``dimse_allow_anonymous`` is set, or on a loopback address while no peer is known (a development archive).

An admitted association may do the union of what its peer rule, its identity and (for unknown AE titles) the
anonymous permissions allow: an identity adds to a known peer's permissions, and stands in for a rule when the AE
title is unknown. What it may not do is refused per operation, never by refusing the association.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum

from dicomvault.domain.errors import ConfigurationError
from dicomvault.domain.peers import (
    ALL_PERMISSIONS,
    PeerRule,
    Permission,
    check_ae_title,
    parse_network,
    permissions_for_scopes,
)
from dicomvault.ports.peers import PeerDirectory
from dicomvault.services.auth import Principal, is_loopback
from dicomvault.settings import Settings

log = logging.getLogger(__name__)


class Refusal(str, Enum):
    """Why an association request is refused (each maps to one A-ASSOCIATE-RJ in ``dimse/access.py``)."""

    CALLED_AET = "called AE title not recognised"
    CALLING_AET = "calling AE title not recognised"
    IDENTITY = "user identity not accepted"
    UNAVAILABLE = "the access check could not be made (e.g. the index is down): try again later"


@dataclass(frozen=True)
class Rejected:
    """A refused request: the reason the peer is told, and the detail the log gets (no secrets, no patient data)."""

    reason: Refusal
    detail: str


@dataclass(frozen=True)
class Grant:
    """An admitted association: its calling AE title, what it may do, and on what grounds (for the log)."""

    calling: str
    permissions: frozenset[Permission]
    grounds: str
    principal: Principal | None = None

    def allows(self, permission: Permission) -> bool:
        return permission in self.permissions


#: Every permission, for an archive that applies no access control (tests of other features, tools).
OPEN = Grant("", ALL_PERMISSIONS, "open")


@dataclass(frozen=True)
class Request:
    """What the archive knows of an association request before it answers.

    ``certificate_names``: the subject CN and DNS SANs of the client certificate the TLS layer verified (mutual
    TLS); None when none was verified (plain TCP, or TLS without client certificates)."""

    calling: str
    called: str
    address: str
    tls: bool = False
    certificate_names: frozenset[str] | None = None


@dataclass
class StaticPeerDirectory:
    """The peers of the settings: ``dimse_peers`` plus ``allowed_calling_aets`` (every permission, any address)."""

    rules: dict[str, PeerRule] = field(default_factory=dict)

    def peer(self, aet: str) -> PeerRule | None:
        return self.rules.get(aet)

    def has_peers(self) -> bool:
        return bool(self.rules)

    @classmethod
    def from_settings(cls, settings: Settings) -> StaticPeerDirectory:
        """Raises ``ConfigurationError`` for an AE title configured twice or an invalid value."""
        rules: dict[str, PeerRule] = {}
        try:
            for aet, peer in settings.dimse_peers.items():
                rules[aet] = PeerRule(
                    aet=aet,
                    permissions=frozenset(Permission(p) for p in peer.permissions),
                    networks=tuple(parse_network(h) for h in peer.hosts),
                    tls_only=peer.tls,
                    tls_names=tuple(n.strip() for n in peer.tls_names if n.strip()),
                )
            for raw in settings.allowed_calling_aets:
                aet = check_ae_title(raw)
                if aet in rules:
                    raise ConfigurationError(
                        f"AE title {aet!r} is both in allowed_calling_aets and in dimse_peers: keep one (a "
                        "dimse_peers entry says what it may do; allowed_calling_aets means everything from anywhere)")
                rules[aet] = PeerRule(aet=aet, permissions=ALL_PERMISSIONS)
        except ValueError as exc:
            raise ConfigurationError(f"DIMSE peers: {exc}") from None
        named = sorted(aet for aet, rule in rules.items() if rule.tls_names)
        if named and settings.dimse_tls_client_ca is None:
            raise ConfigurationError(f"dimse_peers {', '.join(named)}: tls_names are checked in client certificates, "
                                     "which the TLS port asks for only when dimse_tls_client_ca is set")
        return cls(rules)


class PeerAccessPolicy:
    """Admission of DIMSE association requests (rules in the module docstring)."""

    def __init__(self, directory: PeerDirectory, settings: Settings) -> None:
        self.directory = directory
        self.aet = settings.aet
        self.host = settings.host
        self.check_called = settings.dimse_check_called_aet
        self.allow_anonymous = settings.dimse_allow_anonymous
        self.anonymous_permissions = frozenset(Permission(p) for p in settings.dimse_anonymous_permissions)

    @classmethod
    def from_settings(cls, settings: Settings) -> PeerAccessPolicy:
        """The policy of the settings' peers; raises ``ConfigurationError`` when the settings are unsafe or
        inconsistent (checked before any port is opened)."""
        policy = cls(StaticPeerDirectory.from_settings(settings), settings)
        policy.check_startup()
        return policy

    def check_startup(self) -> None:
        """Refuse an open DIMSE service on a public address."""
        if not is_loopback(self.host) and not self.directory.has_peers() and not self.allow_anonymous:
            raise ConfigurationError(
                f"refusing to serve DIMSE on non-loopback address {self.host!r} to any calling AE title: list the "
                "peers that may associate (dimse_peers, or allowed_calling_aets), or set dimse_allow_anonymous=true")

    def anonymous_admitted(self) -> bool:
        """Whether calling AE titles that are not known peers are admitted."""
        return self.allow_anonymous or (is_loopback(self.host) and not self.directory.has_peers())

    def admit(self, request: Request, principal: Principal | None = None,
              identity_rejected: bool = False) -> Grant | Rejected:
        """Admit or refuse one association request. ``principal``: the verified user identity, if any;
        ``identity_rejected``: the request carried a user identity that failed verification."""
        if self.check_called and request.called != self.aet:
            return Rejected(Refusal.CALLED_AET, f"called AE title {request.called!r} is not {self.aet!r}")
        rule = self.directory.peer(request.calling)
        if rule is not None:
            if not rule.allows_address(request.address):
                return Rejected(Refusal.CALLING_AET, f"{request.calling} is not allowed from this address")
            if rule.tls_only and not request.tls:
                return Rejected(Refusal.CALLING_AET, f"{request.calling} must use the DICOM TLS port")
            if request.certificate_names is not None and not request.certificate_names & rule.certificate_names():
                return Rejected(Refusal.CALLING_AET, f"the client certificate does not name {request.calling}")
        if identity_rejected:
            return Rejected(Refusal.IDENTITY, "invalid, expired or revoked user identity credential")
        permissions: set[Permission] = set()
        grounds: list[str] = []
        if rule is not None:
            permissions |= rule.permissions
            grounds.append("known peer")
        elif self.anonymous_admitted():
            permissions |= self.anonymous_permissions
            grounds.append("anonymous")
        elif principal is None:
            return Rejected(Refusal.CALLING_AET, f"{request.calling} is not a known peer")
        if principal is not None:
            permissions |= permissions_for_scopes(principal.scopes)
            grounds.append(f"{principal.kind} {principal.name}")
        return Grant(request.calling, frozenset(permissions), " + ".join(grounds), principal)
