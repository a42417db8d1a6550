"""The DICOM TLS listener: pynetdicom's threaded association server with the handshake moved out of the accept loop.

pynetdicom wraps each accepted socket in the accept loop (``AssociationServer.get_request``), so the TLS handshake
runs there, blocking, with no time limit: one client that opens a connection and sends nothing stops every other
client from being accepted. Here the accept loop only accepts; the handshake runs in the connection's own thread,
bounded (``tls.handshake``), then pynetdicom serves the association as on the plain port, with the same AE,
contexts, handlers and access policy.

Associations on the TLS port are served by pynetdicom, not by the lean storage path: ``fast_store`` peeks at the
A-ASSOCIATE-RQ with MSG_PEEK, which a TLS socket cannot do. docs/conformance.md §2 has the measured cost.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from typing import Any

from pynetdicom import AE

from dicomvault.dimse.fast_store import StorageRoutingServer
from dicomvault.dimse.tls import handshake
from dicomvault.settings import Settings

log = logging.getLogger(__name__)


class TlsAssociationServer(StorageRoutingServer):
    """pynetdicom's threaded association server on a TLS port, handshaking in each connection's thread."""

    handshake_timeout: float | None = 60.0

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept only; pynetdicom's own version would run the handshake here, in the accept loop."""
        assert self.socket is not None
        return self.socket.accept()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        context = self.ssl_context
        assert context is not None
        tls = handshake(context, request, client_address, self.handshake_timeout)
        if tls is not None:
            super().process_request_thread(tls, client_address)


def start_listener(ae: AE, settings: Settings, context: ssl.SSLContext,
                   evt_handlers: list[Any]) -> TlsAssociationServer:
    """Listen on ``host:dimse_tls_port`` in background threads with the same AE, contexts and handlers as the
    plain port (returns at once)."""
    server = ae.make_server((settings.host, settings.dimse_tls_port or 0), evt_handlers=evt_handlers,
                            ssl_context=context, server_class=TlsAssociationServer)
    assert isinstance(server, TlsAssociationServer)
    server.handshake_timeout = settings.dimse_timeout
    threading.Thread(target=server.serve_forever, name="DimseTlsAcceptor", daemon=True).start()
    ae._servers.append(server)
    log.info("DICOM TLS listening on %s:%d", settings.host, server.server_address[1])
    return server
