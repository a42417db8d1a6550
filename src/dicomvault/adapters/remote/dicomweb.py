"""The archive as a DICOMweb client of a peer (``ports.remote.RemoteDicomweb``), with httpx.

Requests carry the peer's bearer token when one is registered; time is bounded (``timeout``); failures come back
as results with the reason (never the token)."""

from __future__ import annotations

import time

import httpx

from dicomvault.domain.peers import RemotePeer
from dicomvault.ports.remote import EchoResult


class HttpxDicomweb:
    def __init__(self, *, timeout: float = 10.0, verify: bool | str = True) -> None:
        self.timeout = timeout
        self.verify = verify

    def _headers(self, peer: RemotePeer, accept: str) -> dict[str, str]:
        headers = {"Accept": accept}
        if peer.dicomweb_token:
            headers["Authorization"] = f"Bearer {peer.dicomweb_token}"
        return headers

    def echo(self, peer: RemotePeer) -> EchoResult:
        if not peer.dicomweb_url:
            return EchoResult(False, 0.0, "no DICOMweb URL registered for this peer")
        started = time.monotonic()
        try:
            response = httpx.get(f"{peer.dicomweb_url}/studies", params={"limit": "1"},
                                 headers=self._headers(peer, "application/dicom+json"), timeout=self.timeout,
                                 verify=self.verify)
        except httpx.HTTPError as exc:
            return EchoResult(False, (time.monotonic() - started) * 1000, f"{type(exc).__name__}")
        elapsed = (time.monotonic() - started) * 1000
        ok = response.status_code in (200, 204)
        return EchoResult(ok, elapsed, f"QIDO-RS HTTP {response.status_code}")
