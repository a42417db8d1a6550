"""Forwarding stored instances to a peer (issue #12 items 3 and 4): C-STORE with storage commitment, STOW-RS.

Why the bytes come through ``OutboundFiles``: which transfer syntax an instance can go out in depends on what the
peer accepts (known only once the association is negotiated) and on what the archive can convert (a service's
knowledge: ``RetrieveService``); the adapter asks, per instance, for the syntax and then for a file in it, and
streams that file. The adapters (``adapters/remote``) never read the index or the blob stores.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from dicomvault.domain.peers import RemotePeer
from dicomvault.domain.routing import CommitmentResult


@dataclass(frozen=True)
class Outbound:
    """One instance to send: its identity and the transfer syntax it is stored in."""

    sop_class_uid: str
    sop_uid: str
    transfer_syntax_uid: str


class OutboundFiles(Protocol):
    def choose(self, item: Outbound, accepted: set[str]) -> str | None:
        """The syntax to send ``item`` in among those the peer ``accepted`` for its class (None: none possible)."""
        ...

    def file(self, item: Outbound, transfer_syntax: str) -> AbstractContextManager[Path]:
        """A Part 10 file of ``item`` in ``transfer_syntax``, valid inside the ``with``."""
        ...


@dataclass
class SendReport:
    """Per SOP Instance UID: sent (the peer's status, success or warning) or failed (the reason)."""

    sent: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


class RemoteStore(Protocol):
    def send(self, peer: RemotePeer, items: Sequence[Outbound], files: OutboundFiles, *,
             preferred: Sequence[str] = ()) -> SendReport:
        """One storage association to the peer: every item by C-STORE (``preferred`` syntaxes proposed first).
        Raises ``Unavailable`` when no association could be established."""
        ...

    def request_commitment(self, peer: RemotePeer, references: Sequence[tuple[str, str]], transaction_uid: str, *,
                           wait: float) -> CommitmentResult | None:
        """N-ACTION (Request Storage Commitment) for (SOP Class, SOP Instance) ``references``; waits up to ``wait``
        seconds for the N-EVENT-REPORT on the same association and returns it, or None when it did not come (the
        peer then sends it on an association of its own, to the archive's storage commitment SCP). Raises
        ``Unavailable`` when the request could not be made or was refused."""
        ...


class RemoteStow(Protocol):
    def stow(self, peer: RemotePeer, items: Sequence[Outbound], files: OutboundFiles) -> SendReport:
        """One STOW-RS request to the peer's DICOMweb URL with every item as stored. Raises ``Unavailable`` when the
        peer cannot be reached or answers a server error."""
        ...
