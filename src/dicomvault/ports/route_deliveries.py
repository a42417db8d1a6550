"""The routing ledger port: what was selected for which destination, and what became of it (``route_deliveries``).

Why a port of its own: routing decides (``services.routing``); the ledger only has to make each step one atomic
statement on the shared index database, so that any node's delivery job, routing scan or commitment report may run
at any time, concurrently, and leave every row in exactly one state. A delivery job *claims* the rows it sends
(``queued`` → ``sending``, tagged with the job), so two jobs for the same destination and study never send the
same instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from dicomvault.domain.routing import Delivery, DeliveryState, DestinationStatus


@dataclass(frozen=True)
class Outcome:
    """What one send did to one claimed row."""

    sop_uid: str
    state: DeliveryState  # SENT, CONFIRMED, FAILED or QUEUED (try again)
    error: str | None = None
    commitment_uid: str | None = None


class DeliveryLedger(Protocol):
    def record(self, deliveries: Sequence[Delivery], stable: Sequence[tuple[str, str, datetime]]) -> None:
        """In one transaction: add each delivery unless its (destination, SOP Instance UID) has a row (a ``waiting``
        row becomes ``queued`` when a route on stored instances selects it too); push back each (destination,
        study, due) stable wait to ``due`` if later."""
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
