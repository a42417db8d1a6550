"""IHE IOCM rejection notes: a Key Object Selection document that rejects instances hides them at once.

A modality or PACS that sent wrong images (wrong patient, bad quality, an expired retention) sends a Key Object
Selection document (KOS, SOP Class 1.2.840.10008.5.1.4.1.1.88.59) whose Concept Name (0040,A043) is one of the
rejection codes of CID 7011 and whose Current Requested Procedure Evidence Sequence (0040,A375) lists the rejected
instances (IHE RAD TF-2 / IOCM, PS3.16 CID 7011). The archive stores the note like any object, and in the same
request hides every referenced instance it holds from C-FIND, QIDO-RS, C-GET / C-MOVE and WADO: they go to the
trash (``services.trash``: removed from the index, bytes kept), logged as deleted by ``iocm:<code>``, and are
purged when their grace period ends:

* 113039 Data Retention Policy Expired — purged at the next purge run (grace 0);
* 113001 Rejected for Quality Reasons, 113037 Rejected for Patient Safety Reasons, 113038 Incorrect Modality
  Worklist Entry — after ``iocm_grace_days`` (default 30), restorable until then (``dicomvault trash restore``),
  because a rejection sent by mistake must be undoable.

Hiding never waits for the retention minimum (a rejected-for-safety image must disappear now), but the purge
does: ``purge_after`` is the later of the grace period's end and the day ``retention_min_days`` allows a delete.
A note whose hiding fails raises, so the store is answered as a failure and the sender retries; a re-sent note
(a duplicate) applies itself again, which is idempotent. Every rejected SOP Instance UID is remembered
(``rejected_instances``), so an instance that arrives after its rejection — not received yet, or sent again — is
stored and hidden at once the same way. An instance an operator restores from the trash is not hidden again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from dicomvault.domain.errors import NotFound
from dicomvault.domain.trash import Deletion, Rejected
from dicomvault.ports.index import IndexRepository
from dicomvault.services.trash import TrashService

log = logging.getLogger(__name__)

KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"

#: CID 7011 "Rejected for Quality Reasons" and its siblings (scheme DCM) → meaning.
REJECTION_CODES: Mapping[str, str] = {
    "113001": "Rejected for Quality Reasons",
    "113037": "Rejected for Patient Safety Reasons",
    "113038": "Incorrect Modality Worklist Entry",
    "113039": "Data Retention Policy Expired",
}
#: The source ``services.trash`` restores with: an operator undid a deletion, so a rejection does not apply again.
RESTORE_SOURCE = "restore"
#: Seconds between checks whether any rejection is recorded, while none is.
RECHECK = 10.0

#: Codes whose instances are purged without a grace period.
PURGE_AT_ONCE = frozenset({"113039"})

# DICOM JSON tags (the header ingest already turned into DICOM JSON)
CONCEPT_NAME = "0040A043"
EVIDENCE = "0040A375"
CODE_VALUE, CODING_SCHEME = "00080100", "00080102"
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00081155"
REFERENCED_SERIES, REFERENCED_SOPS = "00081115", "00081199"


@dataclass(frozen=True)
class Rejection:
    code: str
    meaning: str
    #: (study, series, SOP Instance UID) of every rejected instance the note lists
    references: tuple[tuple[str, str, str], ...]


@dataclass
class RejectionResult:
    code: str
    hidden: int = 0
    #: referenced instances the archive does not hold (not received yet, or already hidden)
    absent: list[str] = field(default_factory=list)


def _first(item: Mapping[str, Any], tag: str) -> Any:
    values = (item.get(tag) or {}).get("Value") or []
    return values[0] if values else None


def _items(item: Mapping[str, Any], tag: str) -> list[Mapping[str, Any]]:
    return [v for v in (item.get(tag) or {}).get("Value") or [] if isinstance(v, Mapping)]


def rejection_of(sop_class_uid: str, data: Mapping[str, Any]) -> Rejection | None:
    """The rejection a stored object's DICOM JSON header expresses, or None (not a KOS, or another title)."""
    if sop_class_uid != KEY_OBJECT_SELECTION:
        return None
    concept = _items(data, CONCEPT_NAME)
    if not concept:
        return None
    code, scheme = _first(concept[0], CODE_VALUE), _first(concept[0], CODING_SCHEME)
    if scheme != "DCM" or code not in REJECTION_CODES:
        return None
    refs: list[tuple[str, str, str]] = []
    for study in _items(data, EVIDENCE):
        study_uid = _first(study, STUDY_UID)
        for series in _items(study, REFERENCED_SERIES):
            series_uid = _first(series, SERIES_UID)
            for sop in _items(series, REFERENCED_SOPS):
                sop_uid = _first(sop, SOP_UID)
                if study_uid and series_uid and sop_uid:
                    refs.append((str(study_uid), str(series_uid), str(sop_uid)))
    return Rejection(str(code), REJECTION_CODES[str(code)], tuple(refs))


class RejectionNotes:
    def __init__(self, index: IndexRepository, trash: TrashService, *, grace_days: float = 30.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.index = index
        self.trash = trash
        self.grace_days = grace_days
        self.clock = clock
        self._known_any = False
        self._checked = -RECHECK

    def on_stored(self, sop_class_uid: str, sop_uid: str, data: Mapping[str, Any], source: str) -> None:
        """``IngestService.after_store``: apply a rejection note; hide an instance that a note rejected before it
        arrived. An archive that never received a note pays a dictionary lookup (``_any_rejected``); one that did,
        one primary-key read per stored object. An instance restored by an operator (source ``restore``) stays."""
        rejection = rejection_of(sop_class_uid, data)
        if rejection is not None:
            self.apply(rejection, sop_uid)
            return
        if source == RESTORE_SOURCE or not self._any_rejected():
            return
        rejected = self.index.rejection(sop_uid)
        if rejected is None or rejected.note_uid == sop_uid:
            return
        study, series = _first(data, STUDY_UID), _first(data, SERIES_UID)
        if not study or not series:
            return
        meaning = REJECTION_CODES.get(rejected.code, rejected.code)
        deletion = Deletion(f"iocm:{rejected.code}", f"{meaning} (rejection note {rejected.note_uid}; the "
                            "instance arrived after it)")
        grace = 0.0 if rejected.code in PURGE_AT_ONCE else self.grace_days
        self.trash.hide(str(study), str(series), sop_uid, deletion=deletion,
                        purge_after=self._purge_after(str(study), grace))
        log.info("an instance rejected by an earlier rejection note (%s) arrived: hidden", rejected.code)

    def _any_rejected(self) -> bool:
        """Whether any rejection is recorded, asked of the index at most every ``RECHECK`` seconds until one is
        (rows are never removed). A note received by another node is seen within that time."""
        if self._known_any:
            return True
        now = time.monotonic()
        if now - self._checked >= RECHECK:
            self._checked = now
            self._known_any = self.index.has_rejections()
        return self._known_any

    def apply(self, rejection: Rejection, note_sop_uid: str) -> RejectionResult:
        """Hide every referenced instance the archive holds (into the trash) and schedule its purge."""
        result = RejectionResult(rejection.code)
        grace = 0.0 if rejection.code in PURGE_AT_ONCE else self.grace_days
        at = self.clock()
        self.index.record_rejections([Rejected(sop, study, series, rejection.code, note_sop_uid, at)
                                      for study, series, sop in rejection.references if sop != note_sop_uid])
        self._known_any = True
        deletion = Deletion(f"iocm:{rejection.code}", f"{rejection.meaning} (rejection note {note_sop_uid})")
        for study_uid, series_uid, sop_uid in rejection.references:
            if sop_uid == note_sop_uid:
                continue  # a note never rejects itself
            if not self.index.instances(study_uid=study_uid, series_uid=series_uid, sop_uids=[sop_uid]):
                result.absent.append(sop_uid)
                continue
            try:
                self.trash.hide(study_uid, series_uid, sop_uid, deletion=deletion,
                                purge_after=self._purge_after(study_uid, grace))
            except NotFound:  # hidden meanwhile (the same note re-sent concurrently)
                result.absent.append(sop_uid)
                continue
            result.hidden += 1
        log.info("rejection note (%s) applied: %d instances hidden, %d referenced but absent", rejection.code,
                 result.hidden, len(result.absent))
        return result

    def _purge_after(self, study_uid: str, grace_days: float) -> datetime:
        now = self.clock()
        after = now + timedelta(days=grace_days)
        days = self.trash.retention_min_days
        if days <= 0:
            return after
        facts = self.index.study_facts(study_uid)
        date = (facts.study_date or "").strip() if facts is not None else ""
        if len(date) != 8 or not date.isdigit():
            return max(after, now + timedelta(days=days))  # no age to tell: keep it the whole minimum from now
        allowed = datetime.strptime(date, "%Y%m%d").replace(tzinfo=UTC) + timedelta(days=days + 1)
        return max(after, allowed)
