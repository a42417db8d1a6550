"""The storage SCP a legacy PACS sends to when the migration pulls by C-MOVE (``ports.migration.StoreReceiver``).

Why inside the migrate process and not through ``dicomvault serve``: the migration then knows exactly what arrived
for it (and throttles it: the C-STORE answer waits for the bytes/s budget, which slows the peer down), and works
on an archive whose DIMSE server is not running. The peer must know this AE title at this host and port (its move
destination list); ``dicomvault migrate`` tells the operator so when the peer answers 0xA801.

Every storage SOP class is accepted in every transfer syntax pynetdicom knows, the stored syntax first: the peer
proposes the syntax it keeps the object in (and often the uncompressed ones too, in the same context); the
acceptor picks the first of *its* list that the peer proposed, so an uncompressed syntax is accepted only when
the peer proposed no compressed one. Which C-STORE requests are accepted: any calling AE title (the port is
opened for the migration only; bind it to the interface the peer reaches).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomvault.adapters.remote.received import store_event
from dicomvault.ports.migration import Sink

log = logging.getLogger(__name__)

#: Compressed syntaxes first (what a PACS proposes next to the uncompressed ones is what it stored), then explicit
#: VR little endian, then implicit, then the rest.
_UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99")
ACCEPT_ORDER: list[str] = [*(str(ts) for ts in ALL_TRANSFER_SYNTAXES if str(ts) not in _UNCOMPRESSED),
                           *_UNCOMPRESSED]


class PynetdicomStoreScp:
    """A storage SCP on ``host:port`` with AE title ``aet``, handing each object to the sink given to ``start``."""

    def __init__(self, aet: str, host: str, port: int, *, timeout: float = 30.0, max_pdu: int = 0) -> None:
        self.aet, self.host, self.port = aet, host, port
        self.timeout = timeout
        self.max_pdu = max_pdu
        self._server: Any = None
        self._lock = threading.Lock()

    def start(self, sink: Sink) -> None:
        ae = AE(ae_title=self.aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.maximum_pdu_size = self.max_pdu
        ae.maximum_associations = 64
        ae.add_supported_context(Verification)
        for cx in AllStoragePresentationContexts:
            if cx.abstract_syntax is not None:
                ae.add_supported_context(cx.abstract_syntax, ACCEPT_ORDER)
        handlers: list[Any] = [(evt.EVT_C_STORE, store_event, [sink])]
        with self._lock:
            self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        log.info("migration storage SCP %s listening on %s:%d", self.aet, self.host, self.port)

    def stop(self) -> None:
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()
