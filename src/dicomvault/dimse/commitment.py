"""The Storage Commitment Push Model on the DIMSE server (issue #12 item 4, PS3.4 J): N-ACTION from a modality
(the archive as SCP), N-EVENT-REPORT from a routing destination (the archive as SCU, on an association the
destination opened).

N-ACTION is answered at once (success: the request is accepted, PS3.4 J.3.2); what the archive commits to
(``services.commitment``: durably stored and verified) is computed afterwards in a thread of its own and reported by
N-EVENT-REPORT, after the N-ACTION response has gone out: on the same association while the modality keeps it open,
else on a new association to the modality, which must then be a known peer with a host and port. Associations that
propose this SOP class are served by pynetdicom (the lean storage path takes only storage and Verification), so a
modality may store and ask for commitment on one association.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_context, build_role, evt
from pynetdicom.pdu import P_DATA_TF

from dicomvault.dicom import commitment
from dicomvault.dimse.tls import outbound_tls
from dicomvault.domain.errors import DicomVaultError
from dicomvault.services.archive import Archive
from dicomvault.services.commitment import CommitmentService

log = logging.getLogger(__name__)

#: N-ACTION statuses (PS3.7 C): no such action type, missing attribute.
NO_SUCH_ACTION = 0x0123
MISSING_ATTRIBUTE = 0x0120


def handle_n_action(event: Any, archive: Archive) -> tuple[int, Dataset | None]:
    """Accept a storage commitment request; the N-EVENT-REPORT follows once the response was sent."""
    if str(event.request.RequestedSOPClassUID) != commitment.PUSH_MODEL:
        return NO_SUCH_ACTION, None
    if int(event.action_type or 0) != commitment.REQUEST_COMMITMENT:
        return NO_SUCH_ACTION, None
    try:
        found = commitment.read_request(event.action_information)
    except Exception:
        found = None
    if found is None:
        return MISSING_ATTRIBUTE, None
    transaction, references = found
    assoc = event.assoc
    calling = str(assoc.requestor.ae_title).strip()
    log.info("storage commitment request from %s: %d instances (transaction %s)", calling, len(references),
             transaction)
    started = threading.Event()

    def after_response(sent: Any) -> None:
        # the first P-DATA sent after the request is its response (no asynchronous operations are negotiated)
        if isinstance(sent.pdu, P_DATA_TF) and not started.is_set():
            started.set()
            threading.Thread(target=_report, args=(archive, assoc, calling, transaction, references),
                             name="dicomvault-commitment", daemon=True).start()

    assoc.bind(evt.EVT_PDU_SENT, after_response)
    return 0x0000, None


def _report(archive: Archive, assoc: Any, calling: str, transaction: str,
            references: list[tuple[str, str]]) -> None:
    try:
        committed, failed = CommitmentService(archive.retrieve).check(references)
    except DicomVaultError as exc:  # the index is down: every reference fails, the modality keeps its copies
        log.warning("storage commitment for %s: cannot check (%s): reported as failures", calling, exc.message)
        committed, failed = [], dict.fromkeys(references, commitment.PROCESSING_FAILURE)
    event_type, info = commitment.report(transaction, committed, failed)
    if assoc.is_established:
        try:
            status, _ = assoc.send_n_event_report(info, event_type, commitment.PUSH_MODEL,
                                                  commitment.PUSH_MODEL_INSTANCE)
            if status and int(status.get("Status", 0xC000)) == 0:
                log.info("storage commitment for %s: %d committed, %d failed (same association)", calling,
                         len(committed), len(failed))
                return
        except Exception as exc:  # released meanwhile: a new association below
            log.debug("N-EVENT-REPORT on the request's association failed: %s", type(exc).__name__)
    _report_on_new_association(archive, calling, event_type, info, len(committed), len(failed))


def _report_on_new_association(archive: Archive, calling: str, event_type: int, info: Dataset, committed: int,
                               failed: int) -> None:
    try:
        peer = archive.peers.get(calling) if archive.peers is not None else None
    except DicomVaultError:
        peer = None
    if peer is None or not peer.reachable:
        log.error("storage commitment for %s: the association was released and the peer has no host and port "
                  "(dicomvault peers add): the N-EVENT-REPORT cannot be sent", calling)
        return
    s = archive.settings
    ae = AE(ae_title=s.aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = s.dimse_timeout
    ae.connection_timeout = s.dimse_artim_timeout
    try:
        tls = outbound_tls(s, peer.aet, peer.host)
        # the archive (requestor) acts as the SCP of the SOP class: role selection says so
        assoc = ae.associate(peer.host, peer.port, contexts=[build_context(commitment.PUSH_MODEL)],
                             ae_title=peer.aet, ext_neg=[build_role(commitment.PUSH_MODEL, scp_role=True)], **tls)
    except OSError as exc:
        log.error("storage commitment for %s: cannot connect (%s)", calling, type(exc).__name__)
        return
    if not assoc.is_established:
        log.error("storage commitment for %s: association to %s:%d not established; N-EVENT-REPORT not sent",
                  calling, peer.host, peer.port)
        return
    try:
        status, _ = assoc.send_n_event_report(info, event_type, commitment.PUSH_MODEL,
                                              commitment.PUSH_MODEL_INSTANCE)
        code = int(status.get("Status", 0xC000)) if status else None
        log.info("storage commitment for %s: %d committed, %d failed (new association, status %s)", calling,
                 committed, failed, "none" if code is None else f"0x{code:04X}")
    finally:
        if assoc.is_established:
            assoc.release()


def handle_n_event_report(event: Any, archive: Archive) -> tuple[int, Dataset | None]:
    """A routing destination reports on a commitment the archive requested (on an association of its own)."""
    if str(event.request.AffectedSOPClassUID) != commitment.PUSH_MODEL:
        return 0x0110, None
    result = commitment.read_report(event.event_information)
    if result is None:
        return MISSING_ATTRIBUTE, None
    if archive.routing is None:
        return 0x0000, None
    try:
        archive.routing.commitment_report(result)
    except DicomVaultError as exc:
        log.warning("storage commitment report from %s not recorded: %s", event.assoc.requestor.ae_title,
                    exc.message)
        return 0x0110, None  # processing failure: the peer may send it again
    return 0x0000, None
