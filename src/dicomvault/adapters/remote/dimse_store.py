"""The archive as a storage SCU and storage commitment SCU of a peer (``ports.forwarding.RemoteStore``): routing's
C-STORE and N-ACTION (PS3.4 B and J). C-STOREs go through the lean sender (``store_sender``: negotiated with
pynetdicom's building blocks, each object written as large socket writes on the calling thread) unless ``lean``
is off; the N-ACTION through pynetdicom.

Contexts: each SOP class in each stored transfer syntax and each preferred syntax in a context of its own (the
peer cannot answer with another syntax than the one proposed, so a context accepted in the stored syntax sends the
bytes unchanged), plus one with the uncompressed syntaxes as the fallback. Files are streamed from disk (lean
sender; pynetdicom: ``STORE_SEND_CHUNKED_DATASET``), never decoded unless the peer accepted no context in the
stored syntax.

Every association is bounded in time (``timeout``: connection, ACSE, DIMSE and network reads), so an unresponsive
peer cannot hold a delivery job beyond its lease.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

from pydicom.uid import UID
from pynetdicom import AE, _config, build_context, evt

from dicomvault.adapters.remote.store_sender import AssociationFailed, AssociationLost, ObjectError, StoreAssociation
from dicomvault.dicom import commitment
from dicomvault.domain.errors import Unavailable
from dicomvault.domain.peers import RemotePeer
from dicomvault.domain.routing import CommitmentResult
from dicomvault.ports.forwarding import Outbound, OutboundFiles, SendReport

log = logging.getLogger(__name__)

UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
#: PS3.8: at most 128 presentation contexts in one association request.
MAX_CONTEXTS = 128
#: PS3.4 B.2.3 warning statuses of C-STORE (the instance was stored).
_WARNINGS = (0x0107, 0x0116)

#: pynetdicom's reactor sleep between polls (its default, 1 ms, is added to every exchange); as the DIMSE server.
REACTOR_IDLE_DELAY = 0.0002

TlsArgs = Callable[[str, str], dict[str, Any]]


def proposed_contexts(items: Sequence[Outbound], preferred: Sequence[str]) -> list[Any]:
    """Each class in each of its stored syntaxes and each preferred one, a context apiece, plus an uncompressed
    fallback; above 128 contexts, one context per class with every syntax."""
    pairs: dict[str, list[str]] = {}
    for item in items:
        syntaxes = pairs.setdefault(item.sop_class_uid, [])
        for ts in (*preferred, item.transfer_syntax_uid):
            if ts not in syntaxes:
                syntaxes.append(ts)
    contexts = []
    for sop_class, syntaxes in pairs.items():
        contexts += [build_context(sop_class, [ts]) for ts in syntaxes if ts not in UNCOMPRESSED]
        contexts.append(build_context(sop_class, list(UNCOMPRESSED)))
    if len(contexts) > MAX_CONTEXTS:
        contexts = [build_context(c, [*s, *(u for u in UNCOMPRESSED if u not in s)]) for c, s in pairs.items()]
    return contexts[:MAX_CONTEXTS]


def _record(report: SendReport, item: Outbound, status: Any) -> None:
    """A C-STORE response into the report: success and warnings are sent, anything else failed."""
    code = int(status.get("Status", 0xC000))
    if code == 0 or 0xB000 <= code <= 0xBFFF or code in _WARNINGS:
        report.sent[item.sop_uid] = code
    else:
        comment = str(status.get("ErrorComment", "") or "")
        report.failed[item.sop_uid] = f"C-STORE status 0x{code:04X}" + (f": {comment}" if comment else "")


class PynetdicomStore:
    """Implements ``ports.forwarding.RemoteStore``. ``lean`` (default): C-STOREs through ``store_sender``;
    False: through pynetdicom's ``send_c_store``. Storage commitment always goes through pynetdicom."""

    def __init__(self, aet: str, *, timeout: float = 30.0, max_pdu: int = 4 * 1024 * 1024,
                 tls: TlsArgs | None = None, lean: bool = True) -> None:
        self.aet = aet
        self.lean = lean
        self.timeout = timeout
        self.max_pdu = max_pdu
        self.tls = tls

    def _ae(self) -> AE:
        ae = AE(ae_title=self.aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.connection_timeout = min(self.timeout, 10.0)
        ae.maximum_pdu_size = self.max_pdu
        return ae

    def _associate(self, ae: AE, peer: RemotePeer, contexts: list[Any], **kwargs: Any) -> Any:
        if not peer.reachable:
            raise Unavailable(f"peer {peer.aet} has no host and port")
        try:
            extra = self.tls(peer.aet, peer.host) if self.tls is not None else {}
        except OSError as exc:
            raise Unavailable(f"cannot load the TLS files for {peer.aet}: {type(exc).__name__}") from None
        assoc = ae.associate(peer.host, peer.port, contexts=contexts, ae_title=peer.aet, **extra, **kwargs)
        if not assoc.is_established:
            what = "rejected" if assoc.is_rejected else "not established (refused, timed out or aborted)"
            raise Unavailable(f"association to {peer.aet} at {peer.host}:{peer.port} {what}")
        # Nagle's algorithm against the peer's delayed ACK costs ~40 ms per C-STORE (measured: 30 instead of
        # 300 objects/s to storescp); pynetdicom's reactor polls every millisecond unless told otherwise
        raw = getattr(assoc.dul.socket, "socket", None)
        if raw is not None:
            with contextlib.suppress(OSError):
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(AttributeError):
            assoc.dul._run_loop_delay = REACTOR_IDLE_DELAY
        return assoc

    def send(self, peer: RemotePeer, items: Sequence[Outbound], files: OutboundFiles, *,
             preferred: Sequence[str] = ()) -> SendReport:
        if not items:
            return SendReport()
        if self.lean:
            return self._send_lean(peer, items, files, preferred)
        return self._send_pynetdicom(peer, items, files, preferred)

    def _send_lean(self, peer: RemotePeer, items: Sequence[Outbound], files: OutboundFiles,
                   preferred: Sequence[str]) -> SendReport:
        """Negotiated like pynetdicom, each C-STORE written and answered on this thread (``store_sender``)."""
        report = SendReport()
        if not peer.reachable:
            raise Unavailable(f"peer {peer.aet} has no host and port")
        try:
            extra = self.tls(peer.aet, peer.host) if self.tls is not None else {}
        except OSError as exc:
            raise Unavailable(f"cannot load the TLS files for {peer.aet}: {type(exc).__name__}") from None
        try:
            assoc = StoreAssociation.open(peer.host, peer.port, calling=self.aet, called=peer.aet,
                                          contexts=proposed_contexts(items, preferred), timeout=self.timeout,
                                          max_pdu=self.max_pdu, tls=extra.get("tls_args"))
        except AssociationFailed as exc:
            raise Unavailable(str(exc)) from None
        accepted = assoc.syntaxes()
        try:
            for item in items:
                if not assoc.established:
                    break  # the rest: neither sent nor failed, the caller retries them
                syntax = _syntax_for(report, peer, item, files, accepted)
                if syntax is None:
                    continue
                try:
                    with files.file(item, syntax) as path:
                        status = assoc.store(path)
                except AssociationLost as exc:
                    log.info("association to %s ended during a C-STORE: %s", peer.aet, exc)
                    report.failed[item.sop_uid] = f"C-STORE not completed: {exc}"
                    break
                except ObjectError as exc:
                    report.failed[item.sop_uid] = f"C-STORE not sent: {exc}"
                    continue
                except Exception as exc:  # unreadable blob, failed conversion
                    report.failed[item.sop_uid] = f"C-STORE not sent: {getattr(exc, 'message', type(exc).__name__)}"
                    continue
                _record(report, item, status)
        finally:
            assoc.release()
        return report

    def _send_pynetdicom(self, peer: RemotePeer, items: Sequence[Outbound], files: OutboundFiles,
                         preferred: Sequence[str]) -> SendReport:
        """pynetdicom's ``send_c_store`` (``lean = False``)."""
        report = SendReport()
        assoc = self._associate(self._ae(), peer, proposed_contexts(items, preferred))
        accepted: dict[str, set[str]] = {}
        for cx in assoc.accepted_contexts:
            if cx.transfer_syntax:
                accepted.setdefault(str(cx.abstract_syntax), set()).add(str(cx.transfer_syntax[0]))
        try:
            for item in items:
                if not assoc.is_established:
                    break  # the rest: neither sent nor failed, the caller retries them
                syntax = _syntax_for(report, peer, item, files, accepted)
                if syntax is None:
                    continue
                try:
                    with files.file(item, syntax) as path:
                        _config.STORE_SEND_CHUNKED_DATASET = True  # stream the file, exactly as it is
                        status = assoc.send_c_store(path)
                except Exception as exc:  # unreadable blob, failed conversion, broken association
                    report.failed[item.sop_uid] = f"C-STORE not sent: {getattr(exc, 'message', type(exc).__name__)}"
                    continue
                if not status:
                    report.failed[item.sop_uid] = "no C-STORE response (association aborted or timed out)"
                    continue
                _record(report, item, status)
        finally:
            if assoc.is_established:
                assoc.release()
        return report

    def request_commitment(self, peer: RemotePeer, references: Sequence[tuple[str, str]], transaction_uid: str, *,
                           wait: float) -> CommitmentResult | None:
        reports: list[CommitmentResult] = []
        arrived = threading.Event()

        def on_report(event: Any) -> tuple[int, None]:
            result = commitment.read_report(event.event_information)
            if result is not None and result.transaction_uid == transaction_uid:
                reports.append(result)
                arrived.set()
            return 0x0000, None

        assoc = self._associate(self._ae(), peer, [build_context(commitment.PUSH_MODEL)],
                                evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
        try:
            status, _ = assoc.send_n_action(commitment.request(transaction_uid, references),
                                            commitment.REQUEST_COMMITMENT, commitment.PUSH_MODEL,
                                            commitment.PUSH_MODEL_INSTANCE)
            code = int(status.get("Status", 0xC000)) if status else None
            if code != 0:
                raise Unavailable(f"storage commitment request to {peer.aet} refused: "
                                  + ("no response" if code is None else f"status 0x{code:04X}"))
            arrived.wait(wait)
        finally:
            if assoc.is_established:
                assoc.release()
        return reports[0] if reports else None


def _syntax_for(report: SendReport, peer: RemotePeer, item: Outbound, files: OutboundFiles,
                accepted: dict[str, set[str]]) -> str | None:
    """The transfer syntax to send ``item`` in, or None after failing it in ``report`` (the peer accepted none
    the archive can give)."""
    syntax = files.choose(item, accepted.get(item.sop_class_uid, set()))
    if syntax is None:
        name = UID(item.sop_class_uid).name or item.sop_class_uid
        report.failed[item.sop_uid] = f"{peer.aet} accepted no usable transfer syntax for {name}"
    return syntax

