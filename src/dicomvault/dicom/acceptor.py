"""Answering an A-ASSOCIATE-RQ as pynetdicom's acceptor would, for the lean storage paths (PS3.8 9.3.3, PS3.7 D.3.3).

Why here: the archive's DIMSE server (``dimse/fast_store``) and the storage SCP of ``dicomvault migrate``
(``adapters/remote/store_listener``) both negotiate storage associations themselves and then serve them with
``dicom/store_link``; the negotiation is pynetdicom's own (``negotiate_as_acceptor`` against the acceptor's
supported contexts, so accepted contexts and transfer syntax preference are identical), the A-ASSOCIATE-AC and
-RJ are encoded by its PDU classes. Reading the request under a deadline stays with each caller (the DIMSE server
has its connection gate and ARTIM bookkeeping).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 9.3.4, as pynetdicom's acse sends them
REJECT_LOCAL_LIMIT = (0x02, 0x03, 0x02)


def accept(request: A_ASSOCIATE, supported: Sequence[PresentationContext], *, max_pdu: int,
           implementation_uid: str, implementation_version: str | None) -> tuple[dict[int, tuple[str, str]], bytes]:
    """Negotiate ``request``'s presentation contexts against ``supported`` and build the A-ASSOCIATE-AC: (accepted
    context ID → (abstract syntax, transfer syntax), the AC's bytes). ``max_pdu``: the largest P-DATA-TF we take
    (0: unlimited)."""
    rq_roles = {
        item.sop_class_uid: (item.scu_role, item.scp_role)
        for item in request.user_information
        if isinstance(item, SCP_SCU_RoleSelectionNegotiation) and item.sop_class_uid is not None
    }
    result, ac_roles = negotiate_as_acceptor(request.presentation_context_definition_list, list(supported), rq_roles)
    accepted = {
        int(cx.context_id): (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
        for cx in result
        if cx.result == 0x00 and cx.context_id is not None
    }
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = max_pdu
    impl_uid = ImplementationClassUIDNotification()
    impl_uid.implementation_class_uid = implementation_uid
    user_info: list[Any] = [max_length, impl_uid]
    if implementation_version:
        version = ImplementationVersionNameNotification()
        version.implementation_version_name = implementation_version
        user_info.append(version)
    user_info.extend(ac_roles)
    primitive = A_ASSOCIATE()
    primitive.application_context_name = request.application_context_name
    primitive.calling_ae_title = request.calling_ae_title
    primitive.called_ae_title = request.called_ae_title
    primitive.result = 0x00
    primitive.result_source = 0x01
    primitive.presentation_context_definition_results_list = (
        [cx for cx in result if cx.result == 0x00] + [cx for cx in result if cx.result != 0x00]
    )
    primitive.user_information = user_info
    ac = A_ASSOCIATE_AC()
    ac.from_primitive(primitive)
    return accepted, bytes(ac.encode())


def reject(rsd: tuple[int, int, int]) -> bytes:
    """An A-ASSOCIATE-RJ PDU with (result, source, diagnostic)."""
    primitive = A_ASSOCIATE()
    primitive.result, primitive.result_source, primitive.diagnostic = rsd
    pdu = A_ASSOCIATE_RJ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())
