"""pynetdicom's per-connection fault chatter, demoted to DEBUG.

A connection that sends junk, stops half-way or is cut by a deadline makes pynetdicom's transport-level modules log
several ERROR lines and tracebacks ("Connection closed before the entire PDU was received", "Unable to decode the
received PDU data", "Association Aborted", ...): 33 ERROR lines and a traceback for one connection sending random
bytes, before issue #9. DicomVault logs one line of its own for such a connection (``admission``,
``pynetdicom_guard``, ``store_link``), so these records are turned into DEBUG records: kept, with their
tracebacks, when pynetdicom's logger is enabled for DEBUG (``--log-level DEBUG``), dropped otherwise. Records of
pynetdicom's other modules (service classes, handler errors, the AE) are left as they are.
"""

from __future__ import annotations

import logging

#: pynetdicom's modules that report on connections, associations and the PDUs peers send (the DUL, its state
#: machine, the socket, ACSE, the association reactor, PDU decoding), whatever the peer did. Their messages may
#: quote what the peer sent (a UID in "Non-conformant ... value"): one more reason to keep them at DEBUG.
CONNECTION_LOGGERS = ("pynetdicom.dul", "pynetdicom.fsm", "pynetdicom.transport", "pynetdicom.acse",
                      "pynetdicom.association", "pynetdicom.pdu", "pynetdicom.pdu_items", "pynetdicom.pdu_primitives",
                      "pynetdicom.presentation", "pynetdicom.utils")


class DemoteToDebug(logging.Filter):
    """Rewrites a record as DEBUG; lets it through only if its logger is enabled for DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG:
            record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


_FILTER = DemoteToDebug()


def install() -> None:
    """Attach the filter to pynetdicom's connection loggers (idempotent; process-wide, like the loggers)."""
    for name in CONNECTION_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
