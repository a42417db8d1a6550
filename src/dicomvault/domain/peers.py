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
