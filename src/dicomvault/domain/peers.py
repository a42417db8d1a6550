"""DIMSE peers: what a known AE title may do (store / query / retrieve) and where it may connect from.

Vocabulary only; the admission decision is ``services.peer_access``, the DICOM upper-layer answers
(A-ASSOCIATE-RJ, status 0x0124) are ``dimse.access``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Permission(str, Enum):
    """What a DIMSE peer may ask of the archive. C-ECHO needs none: any admitted peer may verify the link."""

    STORE = "store"  # C-STORE
    QUERY = "query"  # C-FIND
    RETRIEVE = "retrieve"  # C-GET, C-MOVE


ALL_PERMISSIONS: frozenset[Permission] = frozenset(Permission)

#: The HTTP scopes (``services.tokens.SCOPES``) a credential carries → what it allows over DIMSE. ``delete`` has no
#: DIMSE counterpart (no DIMSE service deletes).
SCOPE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "read": frozenset({Permission.QUERY, Permission.RETRIEVE}),
    "write": frozenset({Permission.STORE}),
    "delete": frozenset(),
    "admin": ALL_PERMISSIONS,
}


def permissions_for_scopes(scopes: Iterable[str]) -> frozenset[Permission]:
    """The DIMSE permissions of a credential with these HTTP scopes (unknown scopes grant nothing)."""
    out: set[Permission] = set()
    for scope in scopes:
        out |= SCOPE_PERMISSIONS.get(scope, frozenset())
    return frozenset(out)


def parse_network(text: str) -> IPNetwork:
    """``10.1.2.3``, ``10.1.2.0/24``, ``fd00::/64`` → a network (a single address is a /32 or /128).

    Host names are refused: a rule that depends on DNS answers at connection time is only as strong as DNS."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address or network (e.g. 10.1.2.3 or 10.1.2.0/24)") from None


def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A peer's source address as the socket reports it; an IPv4-mapped IPv6 address (``::ffff:10.1.2.3``, seen on
    a dual-stack listener) counts as the IPv4 address. None when it is not an IP address."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0].strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def check_ae_title(value: str) -> str:
    """A valid AE title (PS3.5 AE: 1-16 characters, no backslash or control characters), stripped."""
    value = value.strip()
    if not 0 < len(value) <= 16 or "\\" in value or any(ord(ch) < 0x20 or ord(ch) > 0x7E for ch in value):
        raise ValueError(f"AE title {value!r}: 1-16 printable ASCII characters without backslash")
    return value


@dataclass(frozen=True)
class PeerRule:
    """One known calling AE title.

    ``networks``: where it may connect from (empty: anywhere). ``tls_only``: it must use DICOM TLS.
    ``tls_names``: under mutual TLS, its client certificate must carry one of these names as subject CN or DNS
    subject alternative name (empty: its AE title)."""

    aet: str
    permissions: frozenset[Permission]
    networks: tuple[IPNetwork, ...] = ()
    tls_only: bool = False
    tls_names: tuple[str, ...] = ()

    def allows_address(self, address: str) -> bool:
        if not self.networks:
            return True
        ip = parse_address(address)
        return ip is not None and any(ip in net for net in self.networks)

    def certificate_names(self) -> frozenset[str]:
        """Names that identify this peer in a certificate, lower-cased (DNS names are case-insensitive)."""
        return frozenset(n.lower() for n in (self.tls_names or (self.aet,)))


#: Where a peer's definition comes from: the index registry (``dicomvault peers add``, the admin API; every node
#: sees it) or the configuration file (``dimse_peers``, ``move_destinations``; read-only at run time).
REGISTRY = "index"
CONFIG = "config"


@dataclass(frozen=True)
class RemotePeer:
    """A remote system the archive knows (issue #12): where to reach it over DIMSE (and DICOMweb), what it may ask
    of the archive when it associates (``permissions``, from ``hosts``), whether C-MOVE may send to it, and the
    transfer syntaxes it prefers to receive (first accepted wins; empty: what is stored)."""

    aet: str
    host: str = ""
    port: int = 0
    permissions: frozenset[Permission] = frozenset()
    move_destination: bool = False
    hosts: tuple[str, ...] = ()
    tls: bool = False
    dicomweb_url: str | None = None
    #: a bearer token the archive presents to the peer's DICOMweb service (never shown by ``peers list``)
    dicomweb_token: str | None = None
    transfer_syntaxes: tuple[str, ...] = ()
    description: str = ""
    source: str = REGISTRY

    @property
    def reachable(self) -> bool:
        """Whether the archive can open an association to it (a host and a port are known)."""
        return bool(self.host) and 0 < self.port < 65536

    def rule(self) -> PeerRule:
        """What it may do when it associates (``services.peer_access``)."""
        return PeerRule(aet=self.aet, permissions=self.permissions,
                        networks=tuple(parse_network(h) for h in self.hosts), tls_only=self.tls)

    def public(self) -> dict[str, object]:
        """Everything but the secret, for listings and the admin API."""
        return {"aet": self.aet, "host": self.host, "port": self.port,
                "permissions": sorted(p.value for p in self.permissions), "move_destination": self.move_destination,
                "hosts": list(self.hosts), "tls": self.tls, "dicomweb_url": self.dicomweb_url,
                "dicomweb_token": "***" if self.dicomweb_token else None,
                "transfer_syntaxes": list(self.transfer_syntaxes), "description": self.description,
                "source": self.source}


def check_peer(peer: RemotePeer) -> RemotePeer:
    """``peer`` with its AE title stripped, or ``ValueError`` saying what is wrong (bad AE title, port, network,
    URL, or a DIMSE host without a port)."""
    aet = check_ae_title(peer.aet)
    if peer.port and not 0 < peer.port < 65536:
        raise ValueError(f"port {peer.port} is not between 1 and 65535")
    if bool(peer.host) != bool(peer.port):
        raise ValueError("give both --host and --port (or neither, for a peer that only connects to us)")
    if peer.host and any(c.isspace() for c in peer.host):
        raise ValueError(f"host {peer.host!r} contains spaces")
    for h in peer.hosts:
        parse_network(h)
    if peer.dicomweb_url is not None and not peer.dicomweb_url.startswith(("http://", "https://")):
        raise ValueError(f"DICOMweb URL {peer.dicomweb_url!r} must start with http:// or https://")
    for ts in peer.transfer_syntaxes:
        if not ts or any(c not in "0123456789." for c in ts):
            raise ValueError(f"transfer syntax {ts!r} is not a UID")
    if peer.move_destination and not peer.reachable:
        raise ValueError("a move destination needs --host and --port")
    return RemotePeer(**{**peer.__dict__, "aet": aet,
                         "dicomweb_url": peer.dicomweb_url.rstrip("/") if peer.dicomweb_url else None})
