"""Ports of the migration from a legacy PACS (issue #12 item 5, ``services.migration``).

Why ports: the service decides what to fetch, checks it and keeps the state; talking C-FIND / C-MOVE / C-GET
(pynetdicom) or QIDO-RS / WADO-RS (httpx) to the peer, running the storage SCP that a C-MOVE sends to, and keeping
the state in SQL are adapters' business (``adapters/remote/dimse_pull.py``, ``adapters/remote/dicomweb_pull.py``,
``adapters/remote/store_scp.py``, ``adapters/index/migration_state.py``), built in ``bootstrap``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from dicomvault.domain.migration import (
    MigrationStudy,
    PullOutcome,
    RemoteInstance,
    RemoteStudy,
    StudyFilter,
    StudyState,
)
from dicomvault.domain.peers import RemotePeer


@dataclass(frozen=True)
class Received:
    """One object as it arrived from the peer. ``part10``: the stream is a whole Part 10 file (WADO-RS);
    otherwise it is the bare data set in ``transfer_syntax`` (a C-STORE), to which the archive adds its File Meta.
    ``calling``: the AE title that sent it (DIMSE)."""

    stream: BinaryIO
    size: int
    part10: bool
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    transfer_syntax: str = ""
    calling: str = ""


#: Called once per object received, in the receiving thread, before the peer gets its answer (for C-STORE: the
#: status); returns None when the object is stored, or why it was refused (the peer then gets a failure status).
Sink = Callable[[Received], str | None]


class PeerUnreachable(Exception):
    """The peer could not be asked at all (connection refused, association rejected, HTTP error): the message says
    what happened, in words an operator can act on."""


class LegacySource(Protocol):
    """One way of reading a legacy PACS: DIMSE (C-FIND + C-MOVE or C-GET) or DICOMweb (QIDO-RS + WADO-RS)."""

    def find_studies(self, peer: RemotePeer, flt: StudyFilter) -> list[RemoteStudy]:
        """STUDY-level query with the filter's matching keys (raises ``PeerUnreachable``)."""
        ...

    def find_instances(self, peer: RemotePeer, study_uid: str) -> list[RemoteInstance]:
        """IMAGE-level query of one study: every instance the peer holds for it (raises ``PeerUnreachable``)."""
        ...

    def pull(self, peer: RemotePeer, study_uid: str, instances: Sequence[RemoteInstance], sink: Sink, *,
             only: bool = False) -> PullOutcome:
        """Ask the peer for the study; what arrives is handed to ``sink`` (for C-MOVE: by the storage SCP the
        peer sends to, ``StoreReceiver``). Never raises for a peer failure: the outcome carries the error.
        ``only``: the study is partly in the archive already and ``instances`` are the missing ones: a source that
        can ask for instances asks for these only (DIMSE: IMAGE level, per series, with a list of SOP Instance
        UIDs); one that cannot asks for the whole study."""
        ...


class StoreReceiver(Protocol):
    """The storage SCP that a C-MOVE sends to: started for the migration, stopped after it."""

    def start(self, sink: Sink) -> None: ...

    def stop(self) -> None: ...


class MigrationState(Protocol):
    """Where each (peer, study) of a migration stands, kept in the index (table ``migration_studies``)."""

    def enqueue(self, peer: str, studies: Sequence[RemoteStudy]) -> None:
        """Record studies found on the peer: new ones as ``queued``; existing rows keep their state (their expected
        count and study date are refreshed)."""
        ...

    def get(self, peer: str, study_uids: Sequence[str]) -> dict[str, MigrationStudy]:
        """The rows of these studies (absent ones are not in the result)."""
        ...

    def list(self, peer: str, states: Sequence[StudyState] = ()) -> list[MigrationStudy]:
        """Every row of the peer (in these states), by study UID."""
        ...

    def record(self, peer: str, study_uid: str, state: StudyState, *, expected: int | None, received: int,
               bytes_: int, error: str | None, attempted: bool) -> None:
        """Set a study's state after an attempt (``attempted``: count one more attempt)."""
        ...
