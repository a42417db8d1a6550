"""The routing ledger port: what was selected for which destination, and what became of it (``route_deliveries``).

Why a port of its own: routing decides (``services.routing``); the ledger only has to make each step one atomic
statement on the shared index database, so that any node's delivery job, routing scan or commitment report may run
at any time, concurrently, and leave every row in exactly one state. A delivery job *claims* the rows it sends
(``queued`` → ``sending``, tagged with the job), so two jobs for the same destination and study never send the
same instance.

Why the ledger also reads ``instances``: an instance selected in memory but not recorded when its process died
(kill -9, node loss) must still be routed. The reconciliation (``RoutingService.reconcile``) reads recently stored
instances back, keyset-paged by their id, and records the ones routes select that have no row yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from dicomvault.domain.routing import Delivery, DeliveryState, DestinationStatus


@dataclass(frozen=True)
class Outcome:
    """What one send did to one claimed row."""

    sop_uid: str
    state: DeliveryState  # SENT, CONFIRMED, FAILED or QUEUED (try again)
    error: str | None = None
    commitment_uid: str | None = None


@dataclass(frozen=True)
class DeliveryJob:
    """A job to enqueue in the same transaction as the rows it will send (deduplicated on ``dedupe_key``)."""

    kind: str
    payload: dict[str, Any]
    dedupe_key: str
    max_attempts: int


@dataclass(frozen=True)
class StoredInstance:
    """An indexed instance as the reconciliation reads it back: what ``on_stored`` saw when it was stored."""

    id: int
    sop_uid: str
    sop_class_uid: str
    source: str
    stored_at: datetime
    header_json: str  # the cached DICOM JSON (``instances.metadata``)


class DeliveryLedger(Protocol):
    def record(self, deliveries: Sequence[Delivery], stable: Sequence[tuple[str, str, datetime]],
               jobs: Sequence[DeliveryJob] = ()) -> None:
        """In one transaction: add each delivery unless its (destination, SOP Instance UID) has a row (a ``waiting``
        row becomes ``queued`` when a route on stored instances selects it too); push back each (destination,
        study, due) stable wait to ``due`` if later; enqueue each job unless a job of its dedupe key is queued or
        running — when it is running (it may be past its last claim) a follow-up keyed ``<key>:after:<id>`` is
        enqueued (claims are exclusive, so both running at once is safe)."""
        ...

    def recorded(self, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (destination, SOP Instance UID) pairs have a row (in any state)."""
        ...

    def last_stored_before(self, since: datetime) -> int:
        """The id of an instance stored before ``since`` such that instances of higher ids were stored at or after
        it, approximately (ids grow with storing); 0 when none. A handful of primary-key reads."""
        ...

    def stored_after(self, after_id: int, limit: int) -> list[StoredInstance]:
        """Up to ``limit`` instances of id above ``after_id``, by id."""
        ...

    def release_stable(self, now: datetime, limit: int = 100) -> list[tuple[str, str]]:
        """Studies whose stable wait has passed: their ``waiting`` rows become ``queued``, the waits are removed;
        returns the (destination, study) pairs released."""
        ...

    def stale(self, queued_before: datetime, sending_before: datetime, limit: int = 100) -> list[tuple[str, str]]:
        """(destination, study) pairs with ``queued`` rows untouched since ``queued_before`` (their job is gone or
        never enqueued), after putting ``sending`` rows untouched since ``sending_before`` back to ``queued`` (their
        job died)."""
        ...

    def claim(self, destination: str, study_uid: str, claimer: str, limit: int) -> list[Delivery]:
        """Up to ``limit`` ``queued`` rows of the study for the destination (and rows ``claimer`` claimed before and
        did not finish), now ``sending`` for ``claimer``; attempts counted."""
        ...

    def settle(self, destination: str, outcomes: Sequence[Outcome], now: datetime) -> None:
        """Record the outcome of each claimed row."""
        ...

    def commitment_report(self, transaction_uid: str, committed: Sequence[str], failed: dict[str, str],
                          now: datetime) -> int:
        """Rows ``sent`` under ``transaction_uid``: committed → ``confirmed``, failed → ``failed`` with the reason;
        returns how many rows changed."""
        ...

    def retry(self, destination: str | None, now: datetime) -> list[tuple[str, str]]:
        """``failed`` rows (of one destination, or all) back to ``queued`` with a fresh attempt count; returns the
        (destination, study) pairs to enqueue."""
        ...

    def status(self) -> list[DestinationStatus]:
        """Counts by state and the latest error, per destination."""
        ...

    def deliveries(self, destination: str | None = None, study_uid: str | None = None) -> list[Delivery]:
        """Rows (for tests and ``routes status --json``'s detail), oldest first."""
        ...
