"""The archive as a STOW-RS client of a peer (``ports.forwarding.RemoteStow``), with httpx: routing ``via =
"dicomweb"``.

One request per batch: a ``multipart/related; type="application/dicom"`` body streamed from the stored files
(each part as stored, nothing converted: STOW-RS accepts any transfer syntax the origin server supports). The
answer's Failed SOP Sequence (0008,1198) names the instances refused; a 5xx or an unreachable peer raises
``Unavailable`` so the delivery job is retried.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from dicomvault.domain.errors import Unavailable
from dicomvault.domain.peers import RemotePeer
from dicomvault.ports.forwarding import Outbound, OutboundFiles, SendReport

CHUNK = 1 << 20
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_INSTANCE = "00081155"
FAILURE_REASON = "00081197"


class HttpxStow:
    """Implements ``ports.forwarding.RemoteStow``."""

    def __init__(self, *, timeout: float = 60.0, verify: bool | str = True) -> None:
        self.timeout = timeout
        self.verify = verify

    def stow(self, peer: RemotePeer, items: Sequence[Outbound], files: OutboundFiles) -> SendReport:
        report = SendReport()
        if not items:
            return report
        if not peer.dicomweb_url:
            raise Unavailable(f"peer {peer.aet} has no DICOMweb URL")
        boundary = uuid.uuid4().hex
        headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                   "Accept": "application/dicom+json"}
        if peer.dicomweb_token:
            headers["Authorization"] = f"Bearer {peer.dicomweb_token}"
        with contextlib.ExitStack() as stack:
            paths = [stack.enter_context(files.file(item, item.transfer_syntax_uid)) for item in items]

            def body() -> Iterator[bytes]:
                for path in paths:
                    yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                    with path.open("rb") as f:
                        while chunk := f.read(CHUNK):
                            yield chunk
                    yield b"\r\n"
                yield f"--{boundary}--\r\n".encode()

            try:
                response = httpx.post(f"{peer.dicomweb_url}/studies", content=body(), headers=headers,
                                      timeout=self.timeout, verify=self.verify)
            except httpx.HTTPError as exc:
                raise Unavailable(f"STOW-RS to {peer.aet} failed: {type(exc).__name__}") from None
        if response.status_code >= 500 or response.status_code in (401, 403, 408, 429):
            raise Unavailable(f"STOW-RS to {peer.aet}: HTTP {response.status_code}")
        failed = _failures(response) if response.status_code != 200 else {}
        if response.status_code >= 400 and not failed:
            failed = {item.sop_uid: f"STOW-RS HTTP {response.status_code}" for item in items}
        for item in items:
            if item.sop_uid in failed:
                report.failed[item.sop_uid] = failed[item.sop_uid]
            else:
                report.sent[item.sop_uid] = 0
        return report


def _failures(response: httpx.Response) -> dict[str, str]:
    """SOP Instance UID → reason for each item of the answer's Failed SOP Sequence."""
    try:
        document: Any = response.json()
    except ValueError:
        return {}
    if isinstance(document, list):
        document = document[0] if document else {}
    out: dict[str, str] = {}
    for item in (document.get(FAILED_SOP_SEQUENCE) or {}).get("Value") or []:
        uid = ((item.get(REFERENCED_SOP_INSTANCE) or {}).get("Value") or [None])[0]
        reason = ((item.get(FAILURE_REASON) or {}).get("Value") or [None])[0]
        if uid:
            out[str(uid)] = f"STOW-RS failure reason {reason}" if reason is not None else "refused by STOW-RS"
    return out
