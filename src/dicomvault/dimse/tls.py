"""DICOM TLS: the TLS listener (customarily port 2762) and TLS on outbound associations (C-MOVE, sends).

Profile: PS3.15 B.9, BCP 195: TLS 1.2 or 1.3 only; for TLS 1.2 the AES-GCM suites with forward secrecy that
BCP 195 recommends (ECDHE with RSA or ECDSA certificates, DHE with RSA); no TLS compression, no renegotiation.
dcmtk's default profile (``+tls``, "Non-downgrading BCP 195") negotiates with it.

The listener is one more ``DimseServer.listen`` behind the connection gate; the handshake runs in each connection's
own thread (``admission.tls_handshake``), bounded by the ARTIM deadline for the whole handshake (CPython's
``do_handshake`` applies a socket timeout as an overall deadline, not per read), never in the accept loop.

Mutual TLS: with ``dimse_tls_client_ca`` set, a client must present a certificate issued by those CAs; its
subject CN and DNS subject alternative names are what the access policy matches against a peer's ``tls_names``
(``dimse.access``, ``services.peer_access``).

Outbound: a peer whose ``dimse_peers`` rule says ``tls = true`` is connected to with TLS: its server certificate is
verified against the rule's ``tls_ca`` (else ``dimse_tls_client_ca``, else the system's trust store) and must be
valid for the first of its ``tls_names`` (else for the host it is reached at); the archive presents
``dimse_tls_cert`` when configured, for peers that require client certificates.
"""

from __future__ import annotations

import functools
import logging
import ssl
from pathlib import Path
from typing import Any

from dicomvault.domain.errors import ConfigurationError
from dicomvault.settings import Settings

log = logging.getLogger(__name__)

#: BCP 195 (RFC 9325 4.2, as PS3.15 B.9 requires) TLS 1.2 suites, OpenSSL names; TLS 1.3 suites are all AEAD and
#: keep OpenSSL's defaults.
BCP195_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-GCM-SHA384",
))


def _profile(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return context


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS listener's context, or None when ``dimse_tls_port`` is unset. Raises ``ConfigurationError`` when
    the certificate, key or client CA file is missing or unreadable, for the listener or for a peer the archive
    connects to over TLS (refused at start-up, not at the first connection)."""
    for aet in settings.dimse_peers:
        try:
            outbound_tls(settings, aet, "")
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"DICOM TLS towards {aet}: cannot load the TLS files: {exc}") from None
    if settings.dimse_tls_port is None:
        return None
    if settings.dimse_tls_cert is None or settings.dimse_tls_key is None:
        raise ConfigurationError("dimse_tls_port is set: dimse_tls_cert and dimse_tls_key are needed too")
    context = _profile(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    try:
        context.load_cert_chain(settings.dimse_tls_cert, settings.dimse_tls_key)
        if settings.dimse_tls_client_ca is not None:
            context.load_verify_locations(cafile=settings.dimse_tls_client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"DICOM TLS: cannot load the certificate, key or client CA: {exc}") from None
    return context


@functools.lru_cache(maxsize=32)
def _client_context(cert: Path | None, key: Path | None, ca: Path | None) -> ssl.SSLContext:
    """One context per (certificate, key, CA) for the life of the process: loading them costs milliseconds,
    an outbound association should not."""
    context = _profile(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))  # verifies the chain and the host name
    if ca is not None:
        context.load_verify_locations(cafile=ca)
    else:
        context.load_default_certs()
    if cert is not None and key is not None:
        context.load_cert_chain(cert, key)
    return context


def outbound_tls(settings: Settings, aet: str, host: str) -> dict[str, Any]:
    """Extra keyword arguments of ``AE.associate`` for an association to ``aet`` reached at ``host``:
    ``tls_args`` when its peer rule says ``tls``, else nothing. Raises ``OSError``/``ssl.SSLError`` when the
    configured files cannot be loaded (the association then fails like an unreachable peer)."""
    peer = settings.dimse_peers.get(aet.strip())
    if peer is None or not peer.tls:
        return {}
    context = _client_context(settings.dimse_tls_cert, settings.dimse_tls_key,
                              peer.tls_ca or settings.dimse_tls_client_ca)
    return {"tls_args": (context, peer.tls_names[0] if peer.tls_names else host)}
