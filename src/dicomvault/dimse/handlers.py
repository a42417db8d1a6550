"""One small function per DIMSE event; each translates the protocol into a service call and back.

Bound to pynetdicom events by ``server.py`` with the ``Archive`` as the handler argument. pynetdicom runs each
association in its own thread, which fits the synchronous core directly.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from dicomvault.dimse import identifiers, status
from dicomvault.dimse.retrieval import RetrievePlan
from dicomvault.domain.errors import DicomVaultError, InvalidQuery, Unavailable
from dicomvault.services.archive import Archive
from dicomvault.services.part10 import file_meta_bytes

log = logging.getLogger(__name__)

_PATIENT_ROOT = {
    "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root FIND
    "1.2.840.10008.5.1.4.1.2.1.2",  # MOVE
    "1.2.840.10008.5.1.4.1.2.1.3",  # GET
}


def _status(code: int, message: str | None = None) -> Dataset:
    ds = Dataset()
    ds.Status = code
    if message:
        ds.ErrorComment = status.comment(message)
    return ds


def handle_echo(event: Event, archive: Archive) -> int:
    return status.SUCCESS


def handle_store(event: Event, archive: Archive) -> Dataset:
    """C-STORE: the received dataset bytes are kept exactly; only the Part 10 header is added."""
    req = cast(C_STORE, event.request)
    calling = event.assoc.requestor.ae_title
    try:
        meta = file_meta_bytes(
            sop_class_uid=str(req.AffectedSOPClassUID),
            sop_instance_uid=str(req.AffectedSOPInstanceUID),
            transfer_syntax_uid=str(event.context.transfer_syntax),
            source_aet=calling,
        )
        payload = req.DataSet.getvalue() if req.DataSet is not None else b""
        # The dataset's own SOP Instance UID is authoritative; a peer announcing another one in the command
        # (seen with files whose meta header disagrees) still gets its object archived, not lost.
        result = archive.ingest.ingest(io.BytesIO(meta + payload), source=f"dimse:{calling}")
    except DicomVaultError as exc:
        code = status.store_status(exc)
        log.info("C-STORE from %s refused: status 0x%04X (%s)", calling, code, type(exc).__name__)
        log.debug("C-STORE refusal detail: %s", exc.message)
        return _status(code, exc.message)
    except Exception:
        log.exception("C-STORE from %s failed unexpectedly", calling)
        return _status(status.PROCESSING_FAILURE, "internal error while storing; see server log")
    warning = result.warning
    return _status(status.SUCCESS) if warning is None else _status(status.SUCCESS, warning)


def handle_find(event: Event, archive: Archive) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    patient_root = str(event.context.abstract_syntax) in _PATIENT_ROOT
    try:
        identifier = event.identifier
        level = identifiers.query_level(identifier, patient_root=patient_root)
        keys, _ = identifiers.matching_keys(identifier)
        spec = archive.query.build_spec(level, keys)
        results = archive.query.search(spec)
    except InvalidQuery as exc:
        yield _status(status.QR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, exc.message), None
        return
    except Unavailable as exc:
        yield _status(status.QR_OUT_OF_RESOURCES, exc.message), None
        return
    except Exception:
        log.exception("C-FIND failed unexpectedly")
        yield _status(status.QR_UNABLE_TO_PROCESS, "internal error while querying"), None
        return
    for result in results:
        if event.is_cancelled:
            yield status.CANCEL, None
            return
        yield status.PENDING, identifiers.response(result, identifier, level, archive.settings.aet)


def _plan(event: Event, archive: Archive) -> RetrievePlan:
    patient_root = str(event.context.abstract_syntax) in _PATIENT_ROOT
    identifier = event.identifier
    level = identifiers.query_level(identifier, patient_root=patient_root)
    keys, _ = identifiers.matching_keys(identifier)
    return RetrievePlan.locate(archive, level, keys)


def handle_get(event: Event, archive: Archive) -> Iterator[Any]:
    try:
        plan = _plan(event, archive)
    except InvalidQuery as exc:
        yield _status(status.QR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, exc.message), None
        return
    except DicomVaultError as exc:
        yield _status(status.QR_OUT_OF_RESOURCES, exc.message), None
        return
    yield len(plan.records)
    accepted = plan.accepted_from(event.assoc)
    for record in plan.records:
        if event.is_cancelled:
            yield status.CANCEL, None
            return
        yield status.PENDING, plan.dataset_for(record, accepted)


def handle_move(event: Event, archive: Archive) -> Iterator[Any]:
    destination = archive.settings.destination(str(event.move_destination))
    if destination is None:
        log.info("C-MOVE to unknown destination refused")
        yield None, None  # pynetdicom answers 0xA801 Move Destination unknown
        return
    try:
        plan = _plan(event, archive)
    except InvalidQuery as exc:
        yield destination
        yield _status(status.QR_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, exc.message), None
        return
    holder: dict[str, Any] = {}

    def _capture(sub_event: Event) -> None:
        holder["assoc"] = sub_event.assoc

    yield (*destination, {"contexts": plan.proposed_contexts(),
                          "evt_handlers": [(evt.EVT_ACCEPTED, _capture)]})
    yield len(plan.records)
    accepted = plan.accepted_from(holder.get("assoc"))
    for record in plan.records:
        if event.is_cancelled:
            yield status.CANCEL, None
            return
        yield status.PENDING, plan.dataset_for(record, accepted)
