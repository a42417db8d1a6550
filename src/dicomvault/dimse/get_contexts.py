"""Which transfer syntax the archive accepts in the storage contexts a C-GET requestor proposes.

pynetdicom's acceptor takes, in each proposed context, the first syntax of *its own* list that the requestor
proposed. For contexts we receive on (C-STORE) our order is right: uncompressed first, so a peer never has to
compress for us. For the contexts a C-GET requestor proposes with the SCP role (it receives, we send) that order
turned ``getscu +xy`` (JPEG Baseline, then Explicit and Implicit VR Little Endian) into an accepted Explicit VR Little
Endian, so a JPEG Baseline instance was decoded although the requestor had asked for it as stored. There the
requestor's order is the one that counts (PS3.8 leaves the choice to the acceptor; the proposal order is the
requestor's preference): we accept the first syntax it proposed that we support, send a stored instance unchanged
when that is its syntax, and convert otherwise to the accepted one (``scu.outgoing``).

Bound to ``EVT_REQUESTED``, which pynetdicom triggers before it negotiates; the supported contexts it changes are
the association's own copy (pynetdicom deep-copies the AE's for each association).
"""

from __future__ import annotations

from typing import Any

from pynetdicom.presentation import PresentationContext


def _requestor_order(event: Any) -> dict[str, list[str]]:
    """SOP class → transfer syntaxes the requestor proposed for it, in its order, for the SOP classes it proposed
    the SCP role for (several contexts of one SOP class: the first context's syntaxes first)."""
    assoc = event.assoc
    receives = {str(uid) for uid, item in assoc.requestor.role_selection.items() if item.scp_role}
    order: dict[str, list[str]] = {}
    request = assoc.requestor.primitive
    if request is None or not receives:
        return order
    for cx in request.presentation_context_definition_list:
        sop_class = str(cx.abstract_syntax)
        if sop_class in receives:
            syntaxes = order.setdefault(sop_class, [])
            syntaxes += [str(ts) for ts in cx.transfer_syntax if str(ts) not in syntaxes]
    return order


def prefer_requestor_order(event: Any) -> None:
    """EVT_REQUESTED: in the storage contexts the requestor proposed the SCP role for, accept its first proposed
    syntax that we support rather than our first (see the module docstring)."""
    order = _requestor_order(event)
    if not order:
        return
    acceptor = event.assoc.acceptor
    contexts: list[PresentationContext] = []
    for cx in acceptor.supported_contexts:
        proposed = order.get(str(cx.abstract_syntax))
        if proposed:
            ours = {str(ts) for ts in cx.transfer_syntax}
            first = [ts for ts in proposed if ts in ours]
            cx.transfer_syntax = [*first, *(str(ts) for ts in cx.transfer_syntax if str(ts) not in first)]
        contexts.append(cx)
    acceptor.supported_contexts = contexts
