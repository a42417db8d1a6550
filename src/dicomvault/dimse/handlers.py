"""One small function per DIMSE event; each translates the protocol into a service call and back.

Bound to pynetdicom events by ``server.py`` with the ``Archive`` as the handler argument. pynetdicom runs each
association in its own thread, which fits the synchronous core directly. No handler lets an exception escape:
every failure becomes a status with an ErrorComment and the association carries on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, BinaryIO, cast

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from dicomvault.dimse import identifier, move, received, retrieval, scu, status, tls
from dicomvault.domain.errors import DicomVaultError, ResultLimitExceeded
from dicomvault.domain.records import InstanceRecord
from dicomvault.domain.tags import Level
from dicomvault.services.archive import Archive

log = logging.getLogger(__name__)

#: Patient Root Q/R FIND, MOVE, GET
_PATIENT_ROOT = {"1.2.840.10008.5.1.4.1.2.1.1", "1.2.840.10008.5.1.4.1.2.1.2", "1.2.840.10008.5.1.4.1.2.1.3"}
#: C-FIND responses between two chances for a C-CANCEL to arrive
CANCEL_CHECK_EVERY = 32


def handle_echo(event: Event, archive: Archive) -> int:
    return status.SUCCESS


def handle_store(event: Event, archive: Archive) -> Dataset:
    """C-STORE through pynetdicom: the received data set bytes go to ``store_received``."""
    req = cast(C_STORE, event.request)
    calling = str(event.assoc.requestor.ae_title).strip()
    return store_received(archive, received.received_dataset(req), str(req.AffectedSOPClassUID),
                          str(req.AffectedSOPInstanceUID), str(event.context.transfer_syntax), calling)


def store_received(archive: Archive, dataset: AbstractContextManager[tuple[BinaryIO, int, int]], sop_class_uid: str,
                   sop_instance_uid: str, transfer_syntax: str, calling: str) -> Dataset:
    """Store one received C-STORE data set and return the status to answer. The one function both receive paths
    call (pynetdicom's handler above and the lean storage path, ``fast_store``), so they answer identically.

    ``dataset`` is entered here, inside the error handling, and yields (stream, start, length) of the data set
    bytes exactly as received; they are kept exactly, only the Part 10 header (naming ``calling``) is added.
    Success is answered only after ingest returned, i.e. once the object is durable and indexed."""
    try:
        with dataset as part:
            stream = received.part10_stream(part, sop_class_uid, sop_instance_uid, transfer_syntax, calling)
            result = archive.ingest.ingest(stream, source=f"dimse:{calling}",
                                           expect=(sop_class_uid, sop_instance_uid))
    except DicomVaultError as exc:
        code, reason = status.store_status(exc), status.store_comment(exc)
        # The reason is the Error Comment's text: written by the archive, naming attributes, never their values.
        log.info("C-STORE from %s refused: status 0x%04X (%s): %s", calling, code, type(exc).__name__, reason)
        return status.status_dataset(code, reason)
    except Exception as exc:
        # Type only above DEBUG: an exception message may quote attribute values (patient data).
        log.error("C-STORE from %s failed unexpectedly: %s", calling, type(exc).__name__)
        log.debug("C-STORE failure detail", exc_info=True)
        return status.status_dataset(status.STORE_UNEXPECTED_FAILURE, "Internal error while storing; see server log")
    if result.pixel_problem is not None:
        return status.status_dataset(status.STORE_WARNING_DATASET_MISMATCH, result.pixel_problem)
    if result.warning:
        log.info("C-STORE from %s: %s", calling, result.warning)
    return status.status_dataset(status.SUCCESS)


def _level_and_keys(event: Event) -> tuple[Level, dict[str, str]]:
    patient_root = str(event.context.abstract_syntax) in _PATIENT_ROOT
    ident = event.identifier
    return identifier.query_level(ident, patient_root=patient_root), identifier.matching_keys(ident)


def _qr_failure(exc: Exception, what: str) -> tuple[Dataset, None]:
    if isinstance(exc, DicomVaultError):
        code = status.qr_status(exc)
        log.info("%s refused: status 0x%04X (%s)", what, code, type(exc).__name__)
        return status.status_dataset(code, exc.message), None
    log.error("%s failed unexpectedly: %s", what, type(exc).__name__)
    log.debug("%s failure detail", what, exc_info=True)
    return status.status_dataset(status.QR_UNABLE_TO_PROCESS, f"Internal error in {what}; see server log"), None


def handle_find(event: Event, archive: Archive) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """C-FIND on the shared query engine; responses carry exactly the requested keys.

    Matches are streamed from the index a page at a time (``QueryService.stream``), so the first response leaves
    before the last row is read. After ``query_max_results`` responses, or once the records examined for keys the
    index does not hold reach ``query_max_scanned``, the C-FIND ends with 0xA700 and an Error Comment saying why
    (``status.FIND_STATUS``), and a WARNING is logged (counts only, no query values)."""
    calling = str(event.assoc.requestor.ae_title).strip()
    try:
        level, keys = _level_and_keys(event)
        spec = archive.query.build_spec(level, keys)
        ident = event.identifier
        results = archive.query.stream(spec, max_results=archive.settings.query_max_results)
        for n, result in enumerate(results):
            if n and n % CANCEL_CHECK_EVERY == 0:
                _let_requests_in(event.assoc)
            if event.is_cancelled:
                yield status.CANCEL, None
                return
            yield status.PENDING, identifier.response(result, ident, level, archive.settings.aet)
    except DicomVaultError as exc:
        code = status.find_status(exc)
        if isinstance(exc, ResultLimitExceeded):
            log.warning("C-FIND from %s stopped: %s (status 0x%04X)", calling, exc.message, code)
        else:
            log.info("C-FIND from %s refused: status 0x%04X (%s)", calling, code, type(exc).__name__)
        yield status.status_dataset(code, exc.message), None
    except Exception as exc:
        yield _qr_failure(exc, "C-FIND")


def _let_requests_in(assoc: Association) -> None:
    """pynetdicom's network thread sends everything queued before it reads again, so a C-CANCEL would only be
    seen after the last response. Waiting now and then for the queue to drain lets it in (cost: ~1 ms per
    ``CANCEL_CHECK_EVERY`` responses)."""
    queue = getattr(getattr(assoc, "dul", None), "to_provider_queue", None)
    if queue is None:
        return
    deadline = time.monotonic() + 1.0
    while not queue.empty() and time.monotonic() < deadline:
        time.sleep(0.0005)
    time.sleep(0.001)


def _records(event: Event, archive: Archive) -> list[InstanceRecord]:
    level, keys = _level_and_keys(event)
    try:
        return retrieval.locate(archive, level, keys)
    except ResultLimitExceeded as exc:
        what = event.event.name.removeprefix("EVT_").replace("_", "-")  # "C-GET" / "C-MOVE"
        log.warning("%s from %s refused: %s", what, str(event.assoc.requestor.ae_title).strip(), exc.message)
        raise


def handle_get(event: Event, archive: Archive) -> Iterator[Any]:
    """C-GET: sub-operations go back over the requestor's own association (SCP/SCU role selection)."""
    try:
        records = _records(event, archive)
    except Exception as exc:
        yield 1  # pynetdicom reads a sub-operation count before any status (else it answers a bare 0xC413)
        yield _qr_failure(exc, "C-GET")
        return
    assoc = event.assoc
    yield from retrieval.sub_operations(archive, records, lambda: assoc, lambda: bool(event.is_cancelled))


def handle_move(event: Event, archive: Archive) -> Iterator[Any]:
    """C-MOVE: the destination AE title must be known (``move_destinations``, or a registered peer marked as a move
    destination: ``services.peers``), else 0xA801; pynetdicom opens
    the sub-association with the contexts we propose (``move.ArchiveAE``) and counts the sub-operations. A
    configured destination that cannot be reached: 0xA702, every sub-operation failed, the reason in the comment."""
    aet = str(event.move_destination or "").strip()
    destination = archive.peers.destination(aet) if archive.peers is not None else archive.settings.destination(aet)
    if destination is None:
        log.info("C-MOVE to an unknown destination refused")
        yield None, None  # pynetdicom answers 0xA801 Move Destination Unknown
        return
    target = move.SubAssociation(aet, *destination)
    try:
        records = _records(event, archive)
    except Exception as exc:
        # pynetdicom takes a failure with its ErrorComment only after a sub-operation count and an open
        # sub-association: the stand-in (no connection) lets the 0xA900 and its comment through.
        target.needed = False
        yield target.destination()
        yield 1
        yield _qr_failure(exc, "C-MOVE")
        return
    try:
        outbound = tls.outbound_tls(archive.settings, aet, target.host)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError: the TLS files cannot be loaded
        log.debug("C-MOVE TLS set-up failure detail", exc_info=True)
        target.needed, target.failure = False, f"Destination {aet}: TLS set-up failed ({type(exc).__name__})"
        outbound = {}
    yield target.destination(scu.proposed_contexts(records), **outbound)
    yield len(records)
    if not records:
        return
    if target.failure is not None:
        calling = str(event.assoc.requestor.ae_title).strip()
        log.warning("C-MOVE from %s: %s (%s:%d); %d sub-operation(s) failed", calling, target.failure,
                    target.host, target.port, len(records))
        failed = Dataset()
        failed.FailedSOPInstanceUIDList = [r.sop_uid for r in records]
        yield status.status_dataset(status.RETRIEVE_SUBOPS_OUT_OF_RESOURCES, target.failure), failed
        return
    yield from retrieval.send_each(archive, records, lambda: target.assoc, lambda: bool(event.is_cancelled))
