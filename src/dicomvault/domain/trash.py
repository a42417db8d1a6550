"""Soft delete, the trash and the deletion log in domain terms (``services.trash``, ``ports.index``).

A soft-deleted instance is gone from every query and retrieval at once (its index rows are deleted as by a plain
delete); its blob waits in the trash until ``purge_after``, restorable until then. Every deletion, whoever or
whatever asked for it, leaves a ``DeletionEntry``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from dicomvault.domain.errors import Conflict
from dicomvault.domain.records import BlobInfo


class DeletionAction(StrEnum):
    SOFT_DELETE = "soft-delete"
    RESTORE = "restore"
    PURGE = "purge"
    #: immediate removal (no grace period): the blobs are removed at once
    DELETE = "delete"


@dataclass(frozen=True)
class Deletion:
    """Who or what deletes, and why: written to the deletion log and, for a soft delete, to the trash rows.
    ``by``: a DICOMweb principal's name, ``rule:<name>`` for a lifecycle rule, ``cli:<user>`` for the command line."""

    by: str
    reason: str = ""


@dataclass(frozen=True)
class TrashItem:
    """One blob in the trash: the object (SOP Instance UID, series, study) it held when it was deleted."""

    blob: BlobInfo
    sop_uid: str
    series_uid: str
    study_uid: str
    #: a prior version (``keep-both`` policy) of ``sop_uid``, not its current content
    superseded: bool
    deleted_at: datetime
    purge_after: datetime
    reason: str
    deleted_by: str

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.blob.key, "size": self.blob.size, "sop_uid": self.sop_uid,
                "series_uid": self.series_uid, "study_uid": self.study_uid, "superseded": self.superseded,
                "deleted_at": self.deleted_at.isoformat(), "purge_after": self.purge_after.isoformat(),
                "reason": self.reason, "deleted_by": self.deleted_by}


@dataclass(frozen=True)
class DeletionEntry:
    """One row of the deletion log."""

    id: int
    at: datetime
    action: DeletionAction
    study_uid: str
    series_uid: str | None
    sop_uid: str | None
    instances: int
    reason: str
    by: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at.isoformat(), "action": self.action.value, "study_uid": self.study_uid,
                "series_uid": self.series_uid, "sop_uid": self.sop_uid, "instances": self.instances,
                "reason": self.reason, "by": self.by}


@dataclass(frozen=True)
class PurgeBatch:
    """What ``IndexRepository.purge_trash`` did: trash rows deleted, and of their keys those now pending removal
    that the caller must remove (``BlobRemover.remove``) and those an index row references again (kept)."""

    purged: int = 0
    remove: tuple[str, ...] = ()
    referenced: tuple[str, ...] = ()


class RetentionHeld(Conflict):
    """A delete refused because the study is younger than ``retention_min_days`` (or has no StudyDate to tell):
    the administrator's legal minimum, which neither a user nor a rule can override."""


@dataclass(frozen=True)
class Rejected:
    """An instance an IHE IOCM rejection note rejected (remembered so that it is hidden if it arrives later)."""

    sop_uid: str
    study_uid: str
    series_uid: str
    code: str
    note_uid: str
    rejected_at: datetime
