"""The remote systems the archive knows: one list from the index registry and the configuration file (issue #12).

Why two sources: a cluster needs one list that every node sees and an operator can change without a restart
(``dicomvault peers add``, ``/admin/peers``: the index), while existing deployments declare peers in the
configuration file (``dimse_peers`` for who may associate, ``move_destinations`` for where C-MOVE may send).
Both keep working; an AE title may be defined in one place only (the file wins, and adding it to the registry is
refused with the reason), so that nobody wonders which definition applies.

Every association request asks ``directory.peer(aet)``; the registry is read at most once a second per process
(``CACHE_SECONDS``), so an added or removed peer takes effect on every node within a second, and a database
hiccup does not refuse associations from peers the file declares.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from dicomvault.domain.errors import Conflict, DicomVaultError, NotFound
from dicomvault.domain.peers import CONFIG, PeerRule, Permission, RemotePeer, check_peer
from dicomvault.ports.peers import PeerRegistry
from dicomvault.ports.remote import EchoResult, RemoteDicomweb, RemoteDimse
from dicomvault.services.peer_access import StaticPeerDirectory
from dicomvault.settings import Settings

log = logging.getLogger(__name__)

#: How long one read of the registry is reused by association checks and move destinations.
CACHE_SECONDS = 1.0


def config_peers(settings: Settings) -> dict[str, RemotePeer]:
    """The peers the configuration file declares: ``dimse_peers`` (who may associate, what they may do) merged with
    ``move_destinations`` (where C-MOVE may send)."""
    out: dict[str, RemotePeer] = {}
    for aet, peer in settings.dimse_peers.items():
        out[aet] = RemotePeer(aet=aet, permissions=frozenset(Permission(p) for p in peer.permissions),
                              hosts=tuple(peer.hosts), tls=peer.tls, source=CONFIG)
    for aet in settings.allowed_calling_aets:
        aet = aet.strip()
        out.setdefault(aet, RemotePeer(aet=aet, permissions=frozenset(Permission), source=CONFIG))
    for aet, _ in settings.move_destinations.items():
        destination = settings.destination(aet)
        if destination is None:
            continue
        base = out.get(aet.strip(), RemotePeer(aet=aet.strip(), source=CONFIG))
        out[base.aet] = RemotePeer(**{**base.__dict__, "host": destination[0], "port": destination[1],
                                      "move_destination": True})
    return out


class PeerService:
    """Implements ``ports.peers.PeerDirectory`` over both sources, and the registry's use cases."""

    def __init__(self, registry: PeerRegistry | None, settings: Settings, *,
                 dimse: RemoteDimse | None = None, dicomweb: RemoteDicomweb | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.dimse = dimse
        self.dicomweb = dicomweb
        self.static = StaticPeerDirectory.from_settings(settings)
        self.configured = config_peers(settings)
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: dict[str, RemotePeer] = {}
        self._cached_at: float | None = None

    # -- the merged list ------------------------------------------------------------------------------------

    def _registered(self) -> dict[str, RemotePeer]:
        if self.registry is None:
            return {}
        now = self._clock()
        with self._lock:
            if self._cached_at is not None and now - self._cached_at < CACHE_SECONDS:
                return self._cached
        try:
            found = {p.aet: p for p in self.registry.list() if p.aet not in self.configured}
        except DicomVaultError:
            with self._lock:  # the index is down: keep what was read last (the file's peers still apply)
                log.warning("peer registry unreadable; using the last list read")
                return self._cached
        with self._lock:
            self._cached, self._cached_at = found, now
        return found

    def forget_cache(self) -> None:
        with self._lock:
            self._cached_at = None

    def all(self) -> list[RemotePeer]:
        """Every known peer (configuration file and registry), by AE title."""
        merged = {**self._registered(), **self.configured}
        return [merged[a] for a in sorted(merged)]

    def get(self, aet: str) -> RemotePeer:
        aet = aet.strip()
        found = self.configured.get(aet) or self._registered().get(aet)
        if found is None:
            raise NotFound(f"no peer {aet!r} (dicomvault peers list)")
        return found

    # -- ports.peers.PeerDirectory (association checks) -----------------------------------------------------

    def peer(self, aet: str) -> PeerRule | None:
        rule = self.static.peer(aet)
        if rule is not None:
            return rule
        registered = self._registered().get(aet)
        return registered.rule() if registered is not None else None

    def has_peers(self) -> bool:
        return self.static.has_peers() or bool(self._registered())

    def destination(self, aet: str) -> tuple[str, int] | None:
        """Where C-MOVE sends for ``aet``: a configured move destination or a registered peer marked as one."""
        aet = aet.strip()
        peer = self.configured.get(aet) or self._registered().get(aet)
        if peer is None or not peer.move_destination or not peer.reachable:
            return None
        return peer.host, peer.port

    def echo(self, aet: str) -> dict[str, EchoResult]:
        """Verify the peer: C-ECHO when a host and port are known, a QIDO-RS request when a DICOMweb URL is; the
        results by protocol (``dimse``, ``dicomweb``). Raises ``NotFound`` for an unknown peer."""
        peer = self.get(aet)
        out: dict[str, EchoResult] = {}
        if peer.reachable and self.dimse is not None:
            out["dimse"] = self.dimse.echo(peer)
        if peer.dicomweb_url and self.dicomweb is not None:
            out["dicomweb"] = self.dicomweb.echo(peer)
        return out

    # -- changing the registry ------------------------------------------------------------------------------

    def add(self, peer: RemotePeer) -> bool:
        """Register (or replace) a peer; True when new. ``ValueError`` for an invalid definition, ``Conflict`` for
        an AE title the configuration file defines."""
        if self.registry is None:
            raise NotFound("this archive has no peer registry")
        peer = check_peer(peer)
        if peer.aet in self.configured:
            raise Conflict(f"peer {peer.aet!r} is defined in the configuration file (dimse_peers / "
                           "move_destinations): change it there, or remove it there first")
        created = self.registry.put(peer)
        self.forget_cache()
        log.info("peer %s %s (host=%s port=%d move_destination=%s)", peer.aet, "added" if created else "updated",
                 peer.host, peer.port, peer.move_destination)
        return created

    def remove(self, aet: str) -> None:
        aet = aet.strip()
        if aet in self.configured:
            raise Conflict(f"peer {aet!r} is defined in the configuration file: remove it there")
        if self.registry is None or not self.registry.remove(aet):
            raise NotFound(f"no registered peer {aet!r}")
        self.forget_cache()
        log.info("peer %s removed", aet)


__all__ = ["CACHE_SECONDS", "PeerService", "config_peers"]
