"""Which instances a C-GET/C-MOVE Identifier selects, and the sub-operation stream pynetdicom sends.

An Identifier holding only unique keys (the level's, plus single-valued ones of the levels above, as a
hierarchical retrieve sends them) is answered straight from the index; any other key (a patient name, a
modality, a date range) goes through the shared query engine at IMAGE level first, so C-GET/C-MOVE select
exactly what a C-FIND with the same keys would list.

Bounded: one retrieve addresses at most ``retrieve_max_instances`` instances. With unique keys the study / series
/ patient instance counters the index keeps tell the number before anything is selected; otherwise the query
engine streams the matching instances page by page and stops one past the bound. Beyond it the retrieve is
refused (``ResultLimitExceeded`` → 0xA701 with an Error Comment) before any sub-operation.

Some sub-operation failures must be explained, not only counted (``status.SUBOP_COMMENTS``: an object on an archive
storage class that is not restored). pynetdicom ignores anything a handler yields after the last sub-operation, so
such objects are held back: everything readable is sent first, then one failure/warning status carries the Error
Comment, the failed SOP Instance UIDs (those held back and those whose C-STORE failed, tallied as pynetdicom does)
and counts the held-back ones as failed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.status import STATUS_FAILURE, STORAGE_SERVICE_CLASS_STATUS

from dicomvault.dimse import scu, status
from dicomvault.domain.errors import ResultLimitExceeded
from dicomvault.domain.records import InstanceRecord
from dicomvault.domain.tags import BY_KEYWORD, UNIQUE_KEY, Level
from dicomvault.services.archive import Archive

#: SOP Instance UIDs per index lookup.
BATCH = 500
_UNIQUE_ORDER = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)
#: The instance counter of each level above IMAGE (maintained at ingest: reading it costs one indexed row).
_INSTANCE_COUNT = {Level.PATIENT: BY_KEYWORD["NumberOfPatientRelatedInstances"],
                   Level.STUDY: BY_KEYWORD["NumberOfStudyRelatedInstances"],
                   Level.SERIES: BY_KEYWORD["NumberOfSeriesRelatedInstances"]}


def _values(raw: str) -> list[str]:
    return [v.strip() for v in raw.split("\\") if v.strip()]


def locate(archive: Archive, level: Level, keys: dict[str, str]) -> list[InstanceRecord]:
    """The instances under ``keys`` at ``level`` (no duplicates, index order); raises ``InvalidQuery`` (or
    ``QueryTooComplex``) for a bad Identifier and ``ResultLimitExceeded`` beyond ``retrieve_max_instances``."""
    cap = archive.settings.retrieve_max_instances
    given = {k: v for k, v in keys.items() if v.strip() not in ("", "*")}
    unique_names = {UNIQUE_KEY[lv] for lv in _UNIQUE_ORDER if lv.depth <= level.depth}
    own = _values(given.get(UNIQUE_KEY[level], ""))
    parents = {k: _values(v) for k, v in given.items() if k != UNIQUE_KEY[level]}
    direct = bool(own) and set(given) <= unique_names and all(len(v) == 1 for v in parents.values())
    if direct:
        addressed = _addressed(archive, level, given, len(own))
        if addressed > cap:
            raise ResultLimitExceeded(f"{addressed} instances, more than the maximum of {cap}")
        records = _by_unique_keys(archive, level, own, {k: v[0] for k, v in parents.items()})
    else:
        spec = archive.query.build_spec(Level.IMAGE, given)
        uids = [r["00080018"]["Value"][0] for r in archive.query.stream(spec, max_results=cap)
                if r.get("00080018", {}).get("Value")]
        records = []
        for i in range(0, len(uids), BATCH):
            records += archive.retrieve.locate(sop_uids=uids[i : i + BATCH])
    seen: set[str] = set()
    unique: list[InstanceRecord] = []
    for r in records:
        if r.sop_uid not in seen:
            seen.add(r.sop_uid)
            unique.append(r)
    return unique


def _addressed(archive: Archive, level: Level, given: dict[str, str], listed: int) -> int:
    """How many instances unique keys address, from the index's counters (an upper bound at IMAGE level: the
    number of SOP Instance UIDs listed); the keys are validated like any query's on the way."""
    counter = _INSTANCE_COUNT.get(level)
    spec = archive.query.build_spec(level, given, return_keys=[counter.keyword] if counter else ())
    if counter is None:
        return listed
    return sum(int((r.get(counter.tag_hex, {}).get("Value") or [0])[0]) for r in archive.query.search(spec))


def _by_unique_keys(archive: Archive, level: Level, own: list[str], parents: dict[str, str]) -> list[InstanceRecord]:
    patient = parents.get("PatientID")
    study = parents.get("StudyInstanceUID")
    series = parents.get("SeriesInstanceUID")
    records: list[InstanceRecord] = []
    if level == Level.IMAGE:
        for i in range(0, len(own), BATCH):
            records += archive.retrieve.locate(
                patient_id=patient, study_uid=study, series_uid=series, sop_uids=own[i : i + BATCH]
            )
        return records
    for value in own:
        if level == Level.PATIENT:
            records += archive.retrieve.locate(patient_id=value)
        elif level == Level.STUDY:
            records += archive.retrieve.locate(patient_id=patient, study_uid=value)
        else:
            records += archive.retrieve.locate(patient_id=patient, study_uid=study, series_uid=value)
    return records


def sub_operations(
    archive: Archive,
    records: list[InstanceRecord],
    peer: Callable[[], Association | None],
    is_cancelled: Callable[[], bool],
) -> Iterator[Any]:
    """What a C-GET/C-MOVE handler yields after its destination: the sub-operation count, then one
    (Pending, object) per instance; pynetdicom sends each C-STORE before asking for the next, so a stored file
    only needs to exist for one step. ``peer`` gives the association the C-STOREs go over (known only once
    pynetdicom opened it, for C-MOVE)."""
    yield len(records)
    if records:
        yield from send_each(archive, records, peer, is_cancelled)


def send_each(
    archive: Archive,
    records: list[InstanceRecord],
    peer: Callable[[], Association | None],
    is_cancelled: Callable[[], bool],
) -> Iterator[Any]:
    """The (Pending, object) yields of ``sub_operations``, without the count; failures that need an Error Comment
    are held back and end the retrieve with one status (see the module docstring)."""
    assoc = peer()
    if assoc is not None:
        scu.install_sender(assoc)
    accepted = scu.accepted_syntaxes(assoc)
    held: list[tuple[str, str]] = []  # (SOP Instance UID, Error Comment)
    staged = archive.prefetch.files(records) if archive.prefetch is not None and len(records) > 1 else None
    with _Tally(assoc) as tally, contextlib.closing(staged) if staged is not None else contextlib.nullcontext():
        for i, record in enumerate(records):
            if is_cancelled():
                yield status.CANCEL, None
                return
            path = staged.path(i) if staged is not None else None
            with scu.outgoing(archive, record, accepted, path) as ds:
                comment = status.subop_comment(getattr(ds, "_dv_error", None)) if isinstance(ds, scu.Outgoing) \
                    else None
                if comment is None:
                    yield status.PENDING, ds
                else:
                    held.append((record.sop_uid, comment))
        if held:
            failed = Dataset()
            failed.FailedSOPInstanceUIDList = [*tally.failed, *(uid for uid, _ in held)]
            yield status.status_dataset(status.retrieve_final_status(tally.delivered), held[0][1]), failed


class _Tally:
    """Which C-STORE sub-operations failed and how many were delivered, counted as pynetdicom counts them (a
    failure status, an unknown status or an exception is a failure): the final status of a retrieve that ends
    with held-back failures names them all (pynetdicom's own list is out of reach). Wraps the association's
    ``send_c_store`` for the length of one retrieve; pynetdicom runs the retrieves of an association one after
    the other, and closes the handler's generator before the next."""

    def __init__(self, assoc: Association | None) -> None:
        self.assoc = assoc
        self.failed: list[str] = []
        self.delivered = 0
        self._inner: Callable[..., Dataset] | None = None

    def __enter__(self) -> _Tally:
        if self.assoc is None:
            return self
        inner = self._inner = self.assoc.send_c_store

        def send_c_store(dataset: Any, *args: Any, **kwargs: Any) -> Dataset:
            uid = str(getattr(dataset, "SOPInstanceUID", ""))
            try:
                rsp = inner(dataset, *args, **kwargs)
                category = STORAGE_SERVICE_CLASS_STATUS[int(rsp.Status)][0]
            except Exception:
                self.failed.append(uid)
                raise
            if category == STATUS_FAILURE:
                self.failed.append(uid)
            else:
                self.delivered += 1
            return rsp

        setattr(send_c_store, scu.SENDER_MARK, True)  # install_sender: already able to send ``Outgoing``
        self.assoc.send_c_store = send_c_store  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        if self.assoc is not None and self._inner is not None:
            self.assoc.send_c_store = self._inner  # type: ignore[method-assign]
