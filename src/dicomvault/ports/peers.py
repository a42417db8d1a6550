"""The peer directory port: which calling AE titles the archive knows, and what each may do.

Today one implementation reads the settings (``services.peer_access.StaticPeerDirectory``: ``dimse_peers`` and
``allowed_calling_aets``); a peer registry kept in the index can implement the same two methods, and the access
policy reads it unchanged. Both methods are called once per association request, so an implementation backed by
a database should keep a short-lived cache (as ``TokenService.any_active`` does).
"""

from __future__ import annotations

from typing import Protocol

from dicomvault.domain.peers import PeerRule, RemotePeer


class PeerDirectory(Protocol):
    def peer(self, aet: str) -> PeerRule | None:
        """The rule for this calling AE title (already stripped), or None when it is not a known peer."""
        ...

    def has_peers(self) -> bool:
        """Whether any peer is known: then calling AE titles are restricted (unknown ones are not admitted unless
        anonymous DIMSE is explicitly allowed)."""
        ...


class PeerRegistry(Protocol):
    """Remote systems kept in the index (``dicomvault peers``, ``/admin/peers``): every node sees the same list."""

    def list(self) -> list[RemotePeer]:
        """Every registered peer, by AE title."""
        ...

    def get(self, aet: str) -> RemotePeer | None: ...

    def put(self, peer: RemotePeer) -> bool:
        """Add or replace the peer; True when it was new."""
        ...

    def remove(self, aet: str) -> bool:
        """True when a peer was removed."""
        ...
