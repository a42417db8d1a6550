"""The C-MOVE sub-association, and a clear failure when it cannot be opened.

pynetdicom's C-MOVE SCP opens the sub-association itself, with ``ae.associate`` on the acceptor's AE, after the
handler yielded the destination and the number of sub-operations; when that association fails it answers 0xA801
"Move Destination Unknown" on its own, with no Error Comment and no counts. 0xA801 is for a destination AE title
the archive does not know (PS3.4 C.4.2.1.5). A configured destination that is down, refuses us or accepts none of
the proposed contexts is an out-of-resources failure of the sub-operations: 0xA702 "Refused: Out of Resources –
Unable to perform sub-operations", every sub-operation counted as failed and listed in the Failed SOP Instance UID
List, and the reason in the Error Comment. dcmtk's dcmqrscp answers the same status when every sub-operation
failed (it "fails all sub-operations" when the sub-association cannot be built).

pynetdicom offers no hook for this, so ``ArchiveAE.associate`` takes one more keyword, ``sub_association``, passed
through pynetdicom from the handler's destination yield: when the association is not established it records the
reason and returns ``_NotOpened`` in its place, which pynetdicom takes for an open association (it only reads
``is_established`` and later calls ``release``), so it goes on to ask the handler for the first sub-operation —
and the handler, seeing the failure, yields the 0xA702 status with its comment instead. The same stand-in, without
any connection attempt, carries a failure known before any sub-operation (an invalid Identifier: 0xA900 with its
comment), which used to cost a short association to the destination.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom._globals import DEFAULT_MAX_LENGTH
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType
from pynetdicom.pdu_primitives import _UI
from pynetdicom.presentation import PresentationContext

from dicomvault.dimse.scu import install_sender
from dicomvault.domain.errors import Unavailable


@dataclass
class SubAssociation:
    """What the C-MOVE handler asks of (and learns about) the sub-association pynetdicom opens for it."""

    aet: str
    host: str
    port: int
    #: False: the C-MOVE fails before any sub-operation; do not contact the destination.
    needed: bool = True
    #: the established association (None until then, or when it failed)
    assoc: Association | None = None
    #: why it could not be opened (short: it goes into the Error Comment)
    failure: str | None = None
    _connected: bool = field(default=False, repr=False)
    #: the peer's answer to our A-ASSOCIATE-RQ (PDU class name), seen as the PDU arrives: pynetdicom's requestor
    #: can report a reject that arrives very fast as an abort, so ``is_rejected`` alone is not reliable
    _answer: str = field(default="", repr=False)

    def destination(self, contexts: list[PresentationContext] | None = None,
                    **extra: Any) -> tuple[str, int, dict[str, Any]]:
        """The handler's first yield: (address, port, keyword arguments for ``ArchiveAE.associate``); ``extra``
        adds more of them (``tls_args`` for a destination reached over DICOM TLS, from ``tls.outbound_tls``)."""
        kwargs: dict[str, Any] = {"sub_association": self, **extra}
        if contexts is not None:
            kwargs["contexts"] = contexts
        return self.host, self.port, kwargs

    def _opened(self, event: Any) -> None:
        self._connected = True

    def _received(self, event: Any) -> None:
        self._answer = self._answer or type(event.pdu).__name__

    def _failure_reason(self, assoc: Association) -> str:
        if not self._connected:
            why = "cannot connect"
        elif assoc.is_rejected or self._answer == "A_ASSOCIATE_RJ":
            why = "association rejected"
        elif self._answer == "A_ASSOCIATE_AC":
            why = "no presentation context accepted"
        else:
            why = "association not established"
        return f"Destination {self.aet}: {why}"


class _NotOpened:
    """Stands in for the sub-association that was not opened (see the module doc): pynetdicom reads
    ``is_established`` right after ``associate`` (True: no 0xA801), then only calls ``release``."""

    is_established = True

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def release(self) -> None:
        self.is_established = False

    def send_c_store(self, *args: Any, **kwargs: Any) -> Dataset:
        raise Unavailable(self.reason)


class ArchiveAE(AE):
    """pynetdicom's AE, with the ``sub_association`` keyword on ``associate`` (see the module doc)."""

    def associate(
        self,
        addr: str | tuple[str, int, int],
        port: int,
        contexts: list[PresentationContext] | None = None,
        ae_title: str = "ANY-SCP",
        max_pdu: int = DEFAULT_MAX_LENGTH,
        ext_neg: list[_UI] | None = None,
        bind_address: tuple[str, int] | tuple[str, int, int, int] | None = None,
        tls_args: Any = None,
        evt_handlers: list[EventHandlerType] | None = None,
        *,
        sub_association: SubAssociation | None = None,
    ) -> Association:
        if sub_association is None:
            return super().associate(addr, port, contexts, ae_title, max_pdu, ext_neg, bind_address, tls_args,
                                     evt_handlers)
        if not sub_association.needed:
            return cast(Association, _NotOpened("no sub-operation attempted"))
        handlers: list[EventHandlerType] = [*(evt_handlers or []), (evt.EVT_CONN_OPEN, sub_association._opened),
                                            (evt.EVT_PDU_RECV, sub_association._received)]
        assoc = super().associate(addr, port, contexts, ae_title, max_pdu, ext_neg, bind_address, tls_args, handlers)
        if assoc.is_established:
            install_sender(assoc)
            sub_association.assoc = assoc
            return assoc
        sub_association.failure = sub_association._failure_reason(assoc)
        return cast(Association, _NotOpened(sub_association.failure))
