"""The archive as a DIMSE client of a peer (``ports.remote.RemoteDimse``), with pynetdicom.

Every association is bounded in time (``timeout``: connection, ACSE, DIMSE and network reads) so that a peer that
does not answer cannot hold a worker; failures come back as results with the reason, never as exceptions."""

from __future__ import annotations

import logging
import time

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomvault.domain.peers import RemotePeer
from dicomvault.ports.remote import EchoResult

log = logging.getLogger(__name__)


class PynetdicomRemote:
    def __init__(self, aet: str, *, timeout: float = 10.0) -> None:
        self.aet = aet
        self.timeout = timeout

    def _ae(self) -> AE:
        ae = AE(ae_title=self.aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = self.timeout
        return ae

    def echo(self, peer: RemotePeer) -> EchoResult:
        if not peer.reachable:
            return EchoResult(False, 0.0, "no host and port known for this peer")
        ae = self._ae()
        ae.add_requested_context(Verification)
        started = time.monotonic()
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.aet)
        try:
            if not assoc.is_established:
                reason = "association rejected" if assoc.is_rejected else "no association (connection refused, " \
                    "timed out or aborted)"
                return EchoResult(False, (time.monotonic() - started) * 1000, reason)
            status = assoc.send_c_echo()
            elapsed = (time.monotonic() - started) * 1000
            code = getattr(status, "Status", None)
            if code == 0:
                return EchoResult(True, elapsed, "C-ECHO status 0x0000")
            return EchoResult(False, elapsed, "no C-ECHO response" if code is None else f"C-ECHO status 0x{code:04X}")
        finally:
            if assoc.is_established:
                assoc.release()
