"""Talking to remote systems (issue #12): the archive as a DIMSE or DICOMweb *client* of a peer.

Why ports: services (peer checks, routing, migration) decide what to ask of a peer; how to speak DIMSE
(pynetdicom) or DICOMweb (httpx) to it is an adapter's business (``adapters/remote``), built in ``bootstrap``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from dicomvault.domain.peers import RemotePeer


@dataclass(frozen=True)
class EchoResult:
    """One verification round trip: ``ok``, how long it took, and what happened (status, error) in words."""

    ok: bool
    milliseconds: float
    detail: str


class RemoteDimse(Protocol):
    def echo(self, peer: RemotePeer) -> EchoResult:
        """C-ECHO to the peer (an association from the archive's AE title to the peer's)."""
        ...


class RemoteDicomweb(Protocol):
    def echo(self, peer: RemotePeer) -> EchoResult:
        """A QIDO-RS request for one study at the peer's DICOMweb base URL (with its token, if any)."""
        ...
