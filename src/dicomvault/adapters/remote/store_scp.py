"""The storage SCP a legacy PACS sends to when the migration pulls by C-MOVE (``ports.migration.StoreReceiver``),
through pynetdicom: used when ``dimse_fast_store = false``; otherwise ``store_listener`` serves the same contexts on
the lean receive path.

Why inside the migrate process and not through ``dicomvault serve``: the migration then knows exactly what arrived
for it (and throttles it: the C-STORE answer waits for the bytes/s budget, which slows the peer down), and works
on an archive whose DIMSE server is not running. The peer must know this AE title at this host and port (its move
destination list); ``dicomvault migrate`` tells the operator so when the peer answers 0xA801.

Every storage SOP class is accepted in every transfer syntax pynetdicom knows, the stored syntax first: the peer
proposes the syntax it keeps the object in (and often the uncompressed ones too, in the same context); the
acceptor picks the first of *its* list that the peer proposed, so an uncompressed syntax is accepted only when
the peer proposed no compressed one. Which C-STORE requests are accepted: any calling AE title (the port is
opened for the migration only; bind it to the interface the peer reaches).

Start, stop and each association are quick (they were most of a short migration's time): the 170 storage
contexts × 45 syntaxes are built once per process from one validated template (``supported_contexts``; adding
them one by one took 0.1 s to 0.3 s); pynetdicom's copy of them for each association the peer opens is shallow
(``_SharedContext``; otherwise 40 to 50 ms of CPU per C-MOVE); the server polls for its shutdown every 50 ms
instead of socketserver's 0.5 s (``stop`` waited 0.25 s on average); accepted connections are tuned like every
pull association (``received.tune_connection``: no Nagle, a shorter reactor poll).
"""

from __future__ import annotations

import copy
import functools
import logging
import threading
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, build_context, evt
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from dicomvault.adapters.remote.received import store_event, tune_connection
from dicomvault.ports.migration import Sink

log = logging.getLogger(__name__)

#: Compressed syntaxes first (what a PACS proposes next to the uncompressed ones is what it stored), then explicit
#: VR little endian, then implicit, then the rest.
_UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99")
ACCEPT_ORDER: list[str] = [*(str(ts) for ts in ALL_TRANSFER_SYNTAXES if str(ts) not in _UNCOMPRESSED),
                           *_UNCOMPRESSED]


#: How often the server's accept loop checks for ``stop`` (socketserver's default is 0.5 s).
SHUTDOWN_POLL = 0.05


class _SharedContext(PresentationContext):
    """A supported context that copies cheaply: pynetdicom deep-copies the server's supported contexts for every
    association it accepts, which for 170 classes × 45 syntaxes of ``pydicom.uid.UID`` took 40 to 50 ms of CPU
    (holding the GIL) per C-MOVE; the UIDs are immutable strings, so a copy needs only its own list of them."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _SharedContext:
        clone = copy.copy(self)
        clone._transfer_syntax = list(self._transfer_syntax)
        return clone


@functools.cache
def supported_contexts() -> tuple[PresentationContext, ...]:
    """Verification, and every storage SOP class in every syntax of ``ACCEPT_ORDER``; built once, from one context
    whose syntaxes pynetdicom validated (validating them again for each of the 170 classes took 0.1 s)."""
    template = _SharedContext()
    template.transfer_syntax = ACCEPT_ORDER  # type: ignore[assignment]
    out: list[PresentationContext] = [build_context(Verification)]
    for cx in AllStoragePresentationContexts:
        if cx.abstract_syntax is not None:
            context = copy.deepcopy(template)
            context.abstract_syntax = cx.abstract_syntax
            out.append(context)
    return tuple(out)


class _QuickServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, checking for shutdown every ``SHUTDOWN_POLL`` seconds."""

    def serve_forever(self, poll_interval: float = SHUTDOWN_POLL) -> None:
        super().serve_forever(poll_interval=poll_interval)


class _AE(AE):
    """An AE whose non-blocking server is a ``_QuickServer``."""

    def make_server(self, address: Any, ae_title: str | None = None, contexts: Any = None,
                    ssl_context: Any = None, evt_handlers: Any = None, server_class: Any = None,
                    **kwargs: Any) -> Any:
        return super().make_server(address, ae_title=ae_title, contexts=contexts, ssl_context=ssl_context,
                                   evt_handlers=evt_handlers, server_class=_QuickServer, **kwargs)


class PynetdicomStoreScp:
    """A storage SCP on ``host:port`` with AE title ``aet``, handing each object to the sink given to ``start``."""

    def __init__(self, aet: str, host: str, port: int, *, timeout: float = 30.0, max_pdu: int = 0) -> None:
        self.aet, self.host, self.port = aet, host, port
        self.timeout = timeout
        self.max_pdu = max_pdu
        self._server: Any = None
        self._lock = threading.Lock()

    def start(self, sink: Sink) -> None:
        ae = _AE(ae_title=self.aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.maximum_pdu_size = self.max_pdu
        ae.maximum_associations = 64
        handlers: list[Any] = [(evt.EVT_C_STORE, store_event, [sink]), (evt.EVT_CONN_OPEN, tune_connection)]
        with self._lock:
            self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers,
                                           contexts=list(supported_contexts()))
        log.info("migration storage SCP %s listening on %s:%d", self.aet, self.host, self.port)

    def stop(self) -> None:
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.shutdown()
