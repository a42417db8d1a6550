"""Routing vocabulary (issue #12 item 3): a route, which stored instances it selects, and what became of each
instance sent to a destination.

Why a delivery is kept per (destination, SOP Instance UID) and not per route: "never send an instance twice to a
destination that already confirmed it" is a property of the destination, whichever routes (or re-sends of the
same object) select it. Sending is batched per (destination, study) for the association's sake (one association
and one commitment request for a study, not one per instance), but the record stays per instance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Literal

#: The protocol prefixes of a stored source (``dimse:<calling AE>``, ``stow:<client>``), as lifecycle rules read
#: them: a route's ``source`` may name the stored source, the bare sender, or the protocol alone.
SOURCE_PREFIXES = ("dimse:", "stow:")

MODALITY = "00080060"


class DeliveryState(str, Enum):
    WAITING = "waiting"  # selected by a route on stable studies: held until its study is stable
    QUEUED = "queued"  # to be sent (a job exists, or the routing scan will queue one)
    SENDING = "sending"  # claimed by a delivery job (``claimed_by``) that is sending it now
    SENT = "sent"  # the destination answered success (or a warning); with commitment: awaiting confirmation
    CONFIRMED = "confirmed"  # the destination committed to keep it (storage commitment), or sent without commitment
    FAILED = "failed"  # given up (attempts exhausted, refused by the destination, commitment failed): retry by hand


#: States in which a re-selection of the same instance changes nothing (it is on its way or arrived).
SETTLED = frozenset({DeliveryState.SENT, DeliveryState.CONFIRMED})


def source_names(stored: str) -> tuple[str, ...]:
    """The names a route's ``source`` may give for an instance received from ``stored`` (the stored source, the
    bare sender, the protocol alone): the same relation as lifecycle rules."""
    for prefix in SOURCE_PREFIXES:
        if stored.startswith(prefix) and len(stored) > len(prefix):
            return stored, stored[len(prefix):], prefix[:-1]
    return (stored,)


def first_value(header: Mapping[str, Any], tag: str) -> str | None:
    """The first value of ``tag`` in a DICOM JSON header as text (a PN's alphabetic group), or None."""
    element = header.get(tag)
    if not isinstance(element, Mapping):
        return None
    values = element.get("Value")
    if not values:
        return None
    value = values[0]
    if isinstance(value, Mapping):  # PN
        value = value.get("Alphabetic", "")
    return str(value).strip()


@dataclass(frozen=True)
class RouteFilter:
    """Conditions on one stored instance; every one given must hold (none: every instance)."""

    sources: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ()
    sop_classes: tuple[str, ...] = ()
    #: (tag, accepted values) pairs: the first value of the tag must be one of them
    attributes: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def matches(self, sop_class: str, header: Mapping[str, Any], source: str) -> bool:
        if self.sources and not set(source_names(source)).intersection(self.sources):
            return False
        if self.sop_classes and sop_class not in self.sop_classes:
            return False
        if self.modalities and (first_value(header, MODALITY) or "").upper() not in self.modalities:
            return False
        return all(first_value(header, tag) in values for tag, values in self.attributes)


@dataclass(frozen=True)
class Route:
    """One routing rule (``[[route]]``): what to forward, when, where, how."""

    name: str
    destination: str
    on: Literal["stored", "stable"] = "stored"
    stable_seconds: float = 60.0
    filter: RouteFilter = field(default_factory=RouteFilter)
    via: Literal["dimse", "dicomweb"] = "dimse"
    transfer_syntax: str | None = None
    commitment: bool = False
    #: names of ``[[coercion]]`` rules applied to the copy this route forwards (not to the stored object)
    coerce: tuple[str, ...] = ()


@dataclass(frozen=True)
class Selected:
    """One instance a route selected, as the routing service notes it (in memory, then one row per destination)."""

    route: Route
    study_uid: str
    sop_class_uid: str
    sop_uid: str


@dataclass(frozen=True)
class Delivery:
    """One row of ``route_deliveries``: an instance and what became of it at one destination."""

    destination: str
    sop_uid: str
    study_uid: str
    sop_class_uid: str
    route: str
    via: str
    transfer_syntax: str | None
    commitment: bool
    state: DeliveryState
    attempts: int = 0
    last_error: str | None = None
    commitment_uid: str | None = None
    due_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass
class DestinationStatus:
    """``dicomvault routes status``: counts by state for one destination, and its latest error."""

    destination: str
    counts: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    last_error_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"destination": self.destination,
                **{s.value: self.counts.get(s.value, 0) for s in DeliveryState},
                "last_error": self.last_error,
                "last_error_at": self.last_error_at.isoformat() if self.last_error_at else None}


@dataclass(frozen=True)
class CommitmentResult:
    """An N-EVENT-REPORT of the Storage Commitment Push Model (PS3.4 J.3.3): what the peer committed to and what
    it refused (SOP Instance UID → Failure Reason, e.g. 0x0112 no such object instance)."""

    transaction_uid: str
    committed: tuple[str, ...]
    failed: dict[str, int]
