"""DIMSE access control on both receive paths: admission at A-ASSOCIATE, permission per DIMSE request.

The decision is ``services.peer_access.PeerAccessPolicy`` (rules there); this module translates it into the
DICOM upper layer, identically on pynetdicom's path and on the lean storage path (``fast_store``):

* **Refused association** → A-ASSOCIATE-RJ, rejected-permanent (PS3.8 9.3.4): called AE title not the archive's
  → source service-user, "called-AE-title-not-recognized"; calling AE title unknown, or known but from the wrong
  address / not over TLS / with a client certificate that does not name it → "calling-AE-title-not-recognized";
  invalid user identity → source service-provider (ACSE related function), "no-reason-given", as PS3.7 D.3.3.7
  prescribes for an authorisation failure. The check fails closed: if it cannot be made (the index holding the
  API tokens is down, an unexpected error), the request is rejected-transient (service-user, no-reason-given).
* **User Identity Negotiation** (PS3.7 D.3.3.7): type 2 (username + passcode): the passcode is verified like an
  HTTP bearer credential (an API token, or an OIDC JWT when an issuer is configured); the username is not checked
  (the token alone authenticates, as over HTTP; name the token after the device). Type 5 (JWT): verified against
  the OIDC issuer (ignored when none is configured). Types 1 (username only), 3 (Kerberos) and 4 (SAML) cannot be
  verified here and are ignored, as the standard lets an acceptor that does not support them. A verified identity
  requested with a positive response gets a User Identity sub-item with an empty server response (D.3.3.7.2).
* **Operation not permitted** → the response status 0x0124 "Refused: Not authorized" (a general DIMSE status,
  PS3.7 Annex C) with an ErrorComment naming the missing permission; the association carries on and
  C-ECHO always works. Why per operation rather than refusing the association: an A-ASSOCIATE-RJ cannot say
  "not authorized" (its only fitting diagnostic is "no-reason-given"), a modality operator then cannot tell a
  permission problem from a network one, while 0x0124 with a comment names it in the device's log; and a peer
  whose permissions do not cover what it proposed can still verify the link with C-ECHO. On pynetdicom's path
  the check runs before the request reaches the service class (``Association._serve_request``), so a refused
  C-MOVE opens no sub-association and a refused C-STORE is not stored.

pynetdicom hook: ``EVT_REQUESTED`` (A-ASSOCIATE-RQ received, before negotiation) is where pynetdicom lets a handler
send the A-ASSOCIATE-RJ itself; the rejection then ends exactly as pynetdicom's own (EVT_REJECTED, wait for the
requestor to close, bounded by the ARTIM timer).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, BinaryIO

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_FIND, C_GET, C_MOVE, C_STORE
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import A_ASSOCIATE, UserIdentityNegotiation

from dicomvault.dimse import status
from dicomvault.domain.peers import Permission
from dicomvault.services.archive import Archive
from dicomvault.services.auth import OidcVerifier, Principal, verify_credential, verify_jwt
from dicomvault.services.peer_access import Grant, PeerAccessPolicy, Refusal, Rejected, Request
from dicomvault.services.tokens import TokenService

log = logging.getLogger(__name__)
audit = logging.getLogger("dicomvault.audit")

#: A-ASSOCIATE-RJ (result, source, reason/diagnostic) per refusal, PS3.8 9.3.4 and PS3.7 D.3.3.7.
REJECTION: dict[Refusal, tuple[int, int, int]] = {
    Refusal.CALLED_AET: (0x01, 0x01, 0x07),
    Refusal.CALLING_AET: (0x01, 0x01, 0x03),
    Refusal.IDENTITY: (0x01, 0x02, 0x01),
    Refusal.UNAVAILABLE: (0x02, 0x01, 0x01),  # rejected-transient, service-user, no-reason-given
}
#: The permission each DIMSE request needs (C-ECHO and anything else: none).
NEEDED: dict[type, Permission] = {
    C_STORE: Permission.STORE,
    C_FIND: Permission.QUERY,
    C_GET: Permission.RETRIEVE,
    C_MOVE: Permission.RETRIEVE,
}
_NAMES = {C_STORE: "C-STORE", C_FIND: "C-FIND", C_GET: "C-GET", C_MOVE: "C-MOVE"}
USERNAME_AND_PASSCODE = 2
JWT = 5

#: What the lean path stores one data set with (``store_link.StoreFunction``).
StoreFunction = Callable[[AbstractContextManager[tuple[BinaryIO, int, int]], str, str, str], Dataset]


def not_authorized(permission: Permission, calling: str) -> Dataset:
    """The status of an operation the association may not perform."""
    return status.status_dataset(status.NOT_AUTHORIZED, f"{calling} lacks the {permission.value} permission")


def rejection(decision: Rejected) -> tuple[int, int, int]:
    """The A-ASSOCIATE-RJ (result, source, diagnostic) of a refused request."""
    return REJECTION[decision.reason]


def certificate_names(sock: Any) -> frozenset[str] | None:
    """Subject CN and DNS subject alternative names (lower-case) of the client certificate verified on ``sock``;
    None for a plain socket or a TLS connection without a verified client certificate."""
    if not isinstance(sock, ssl.SSLSocket):
        return None
    cert = sock.getpeercert()
    if not cert:
        return None
    names = {str(attr[1]) for rdn in cert.get("subject", ()) for attr in rdn if attr[0] == "commonName"}
    names |= {str(entry[1]) for entry in cert.get("subjectAltName", ()) if entry[0] == "DNS"}
    return frozenset(n.lower() for n in names)


class DimseAccess:
    """The access policy of one DIMSE server, for both receive paths."""

    def __init__(self, policy: PeerAccessPolicy, tokens: TokenService | None, oidc: OidcVerifier | None) -> None:
        self.policy = policy
        self.tokens = tokens
        self.oidc = oidc

    @classmethod
    def from_archive(cls, archive: Archive) -> DimseAccess:
        """Raises ``ConfigurationError`` for unsafe or inconsistent settings (before any port is opened)."""
        if archive.peers is None:
            policy = PeerAccessPolicy.from_settings(archive.settings)
        else:  # the configuration file's peers and the index registry's (``services.peers``)
            policy = PeerAccessPolicy(archive.peers, archive.settings)
            policy.check_startup()
        return cls(policy, archive.tokens, OidcVerifier.from_settings(archive.settings))

    # -- admission ------------------------------------------------------------------------------------------------

    def admit(self, request: A_ASSOCIATE, address: str, sock: Any) -> Grant | Rejected:
        """Admit or refuse an A-ASSOCIATE-RQ that arrived from ``address`` on ``sock`` (plain or TLS); logs the
        outcome to the audit log (AE titles, address, grounds: no secrets, no patient data). Never raises: a
        check that cannot be made refuses (transient)."""
        calling = str(request.calling_ae_title).strip()
        called = str(request.called_ae_title).strip()
        over_tls = isinstance(sock, ssl.SSLSocket)
        try:
            identity = next((i for i in request.user_information if isinstance(i, UserIdentityNegotiation)), None)
            principal, identity_rejected = self._identity(identity)
            decision = self.policy.admit(
                Request(calling, called, address, tls=over_tls, certificate_names=certificate_names(sock)),
                principal, identity_rejected)
        except Exception as exc:
            log.error("DIMSE access check for %s (calling %s) failed: %s", address, calling, type(exc).__name__)
            log.debug("access check failure detail", exc_info=True)
            decision = Rejected(Refusal.UNAVAILABLE, f"access check failed ({type(exc).__name__})")
        if isinstance(decision, Rejected):
            audit.info("DIMSE association from %s (calling %s, called %s) rejected: %s", address, calling, called,
                       decision.detail)
        else:
            allowed = ", ".join(p.value for p in Permission if decision.allows(p)) or "C-ECHO only"
            audit.info("DIMSE association from %s (calling %s%s) admitted as %s: %s", address, calling,
                       ", TLS" if over_tls else "", decision.grounds, allowed)
        return decision

    def _identity(self, item: UserIdentityNegotiation | None) -> tuple[Principal | None, bool]:
        """(verified principal, whether a credential was presented and failed) for a User Identity sub-item."""
        if item is None:
            return None, False
        kind = item.user_identity_type
        field = item.secondary_field if kind == USERNAME_AND_PASSCODE else item.primary_field
        if kind not in (USERNAME_AND_PASSCODE, JWT) or (kind == JWT and self.oidc is None):
            return None, False  # not a kind this archive verifies: ignored (PS3.7 D.3.3.7)
        try:
            credential = bytes(field or b"").decode("utf-8").strip()
        except UnicodeDecodeError:
            return None, True
        if kind == JWT:
            principal = verify_jwt(self.oidc, credential)
        else:
            principal = verify_credential(credential, self.tokens, self.oidc)
        return principal, principal is None

    # -- pynetdicom's path --------------------------------------------------------------------------------------

    def handlers(self) -> list[Any]:
        """pynetdicom event bindings for ``AE.make_server``."""
        return [(evt.EVT_REQUESTED, self.on_requested)]

    def on_requested(self, event: Event) -> None:
        """EVT_REQUESTED: admit (and install the per-request check) or reject before pynetdicom negotiates.

        Fails closed: pynetdicom logs and swallows an exception in a notification handler and would then accept
        the association unchecked, so anything unexpected here rejects it (transient)."""
        assoc = event.assoc
        try:
            request = assoc.requestor.primitive
            if request is None:
                raise ValueError("no A-ASSOCIATE-RQ")
            sock = getattr(assoc.dul.socket, "socket", None)
            decision = self.admit(request, str(assoc.requestor.address), sock)
            if isinstance(decision, Grant):
                identity = next((i for i in request.user_information if isinstance(i, UserIdentityNegotiation)),
                                None)
                if decision.principal is not None and identity is not None and identity.positive_response_requested:
                    response = UserIdentityNegotiation()
                    response.server_response = b""
                    assoc.acceptor.add_negotiation_item(response)
                _install_check(assoc, decision)
                return
        except Exception as exc:
            log.error("DIMSE access check failed: %s", type(exc).__name__)
            log.debug("access check failure detail", exc_info=True)
            decision = Rejected(Refusal.UNAVAILABLE, "access check failed")
        assoc.acse.send_reject(*rejection(decision))
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()

    # -- the lean storage path --------------------------------------------------------------------------------

    @staticmethod
    def guard_store(store: StoreFunction, grant: Grant) -> StoreFunction:
        """The lean path's store function for an association with ``grant``: unchanged when it may store, else
        one that answers 0x0124 and stores nothing."""
        if grant.allows(Permission.STORE):
            return store

        def refused(dataset: AbstractContextManager[tuple[BinaryIO, int, int]], sop_class: str, sop_instance: str,
                    transfer_syntax: str) -> Dataset:
            log.info("C-STORE from %s refused: no store permission", grant.calling)
            return not_authorized(Permission.STORE, grant.calling)

        return refused


def _install_check(assoc: Association, grant: Grant) -> None:
    """Check every DIMSE request of ``assoc`` against ``grant`` before pynetdicom's service class runs it.

    pynetdicom's C-GET/C-MOVE handlers cannot answer a failure before naming a destination or a sub-operation
    count, so the check sits in front of them: ``_serve_request`` is the one method the association's reactor
    calls for each request (patched on this association only)."""
    serve = assoc._serve_request

    def serve_request(msg: Any, context_id: int) -> None:
        needed = NEEDED.get(type(msg))
        if needed is None or grant.allows(needed):
            serve(msg, context_id)
            return
        log.info("%s from %s refused: no %s permission", _NAMES[type(msg)], grant.calling, needed.value)
        rsp = type(msg)()
        rsp.MessageIDBeingRespondedTo = msg.MessageID
        rsp.AffectedSOPClassUID = msg.AffectedSOPClassUID
        if isinstance(msg, C_STORE):
            rsp.AffectedSOPInstanceUID = msg.AffectedSOPInstanceUID
        for element in not_authorized(needed, grant.calling):
            setattr(rsp, element.keyword, element.value)
        assoc.dimse.send_msg(rsp, context_id)

    assoc._serve_request = serve_request  # type: ignore[method-assign]
