"""Migration from a legacy PACS (issue #12 item 5): what is asked of the peer, and where each study stands.

Why a state per (peer, study) and not a job per instance: the legacy PACS answers study by study (one C-MOVE, one
C-GET or one WADO-RS request per study), an operator thinks in studies, and verification is a study-level fact
(every instance the peer lists at IMAGE level is in our index). A study is ``done`` only after that check; kill
the command and run it again and only studies not ``done`` are fetched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum


class StudyState(str, Enum):
    """Where one study of a migration stands."""

    QUEUED = "queued"  # found on the peer, not yet verified here
    DONE = "done"  # fetched by this migration and verified: every instance the peer lists is in our index
    SKIPPED = "skipped"  # already complete in our index before the migration fetched anything
    FAILED = "failed"  # the last attempt failed (``last_error`` says why); the next run tries again


#: States a later run does not fetch again.
FINISHED = frozenset({StudyState.DONE, StudyState.SKIPPED})


class Via(str, Enum):
    """How studies are pulled from the peer."""

    MOVE = "move"  # C-MOVE with the archive (a storage SCP this process runs) as the destination
    GET = "get"  # C-GET on one association (the archive takes the storage SCP role)
    DICOMWEB = "dicomweb"  # QIDO-RS, then WADO-RS with transfer-syntax=* (as the peer stores it)


_DATE = re.compile(r"^\d{8}$")


def check_date(text: str | None) -> str | None:
    """``YYYYMMDD`` or ``YYYY-MM-DD`` → ``YYYYMMDD`` (None stays None); ``ValueError`` otherwise."""
    if text is None or not text.strip():
        return None
    value = text.strip().replace("-", "")
    if not _DATE.match(value):
        raise ValueError(f"date {text!r}: expected YYYYMMDD or YYYY-MM-DD")
    try:
        datetime.strptime(value, "%Y%m%d")  # a real calendar date
    except ValueError:
        raise ValueError(f"date {text!r} is not a calendar date") from None
    return value


@dataclass(frozen=True)
class StudyFilter:
    """What to migrate: a Study Date range (inclusive, ``YYYYMMDD``), one modality (ModalitiesInStudy), and/or an
    explicit list of Study Instance UIDs (``--studies FILE``)."""

    since: str | None = None
    until: str | None = None
    modality: str | None = None
    study_uids: tuple[str, ...] = ()

    def date_range(self) -> str | None:
        """The DICOM range matching value for StudyDate (``since-until``, ``since-``, ``-until``) or None."""
        if not self.since and not self.until:
            return None
        return f"{self.since or ''}-{self.until or ''}"

    def matches(self, study: RemoteStudy) -> bool:
        """Whether a study the peer returned fits the filter (peers do not all honour every matching key, so the
        answer is checked again here)."""
        if self.study_uids and study.study_uid not in self.study_uids:
            return False
        if study.study_date:
            if self.since and study.study_date < self.since:
                return False
            if self.until and study.study_date > self.until:
                return False
        elif self.since or self.until:
            return False
        return not (self.modality and study.modalities and self.modality not in study.modalities)


@dataclass(frozen=True)
class RemoteStudy:
    """One study as the peer's STUDY-level answer describes it. ``expected``: NumberOfStudyRelatedInstances
    (None when the peer did not return it)."""

    study_uid: str
    study_date: str = ""
    patient_id: str = ""
    modalities: tuple[str, ...] = ()
    expected: int | None = None


@dataclass(frozen=True)
class RemoteInstance:
    """One instance as the peer's IMAGE-level answer lists it (the SOP Class lets C-GET propose the right
    presentation contexts; the series lets a study that is partly migrated be completed at IMAGE level)."""

    sop_uid: str
    sop_class_uid: str = ""
    series_uid: str = ""


@dataclass
class PullOutcome:
    """What one retrieval of a study did: instances stored, bytes received, sub-operations the peer reported as
    failed, and the error (None: the peer reported success)."""

    received: int = 0
    bytes: int = 0
    failed: int = 0
    error: str | None = None
    refused: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MigrationStudy:
    """One row of the migration state (table ``migration_studies``)."""

    peer: str
    study_uid: str
    state: StudyState
    study_date: str = ""
    expected: int | None = None
    received: int = 0
    attempts: int = 0
    bytes: int = 0
    last_error: str | None = None
    queued_at: datetime | None = None
    updated_at: datetime | None = None
