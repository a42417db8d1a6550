"""Reading a legacy PACS over DICOMweb (``ports.migration.LegacySource``): QIDO-RS for studies and instances,
WADO-RS for each study as ``multipart/related; type="application/dicom"; transfer-syntax=*`` (the peer sends every
object in the syntax it stored it in, with its own File Meta: the archive keeps that file byte for byte).

The multipart body is parsed as it streams (``MultipartReader``): one part at a time is held, in a spooled
temporary file past ``SPOOL_BYTES``, so a study of any size passes in bounded memory, and a throttling sink slows
the download itself (TCP back-pressure), not only the bookkeeping.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO, cast

import httpx

from dicomvault.domain.migration import PullOutcome, RemoteInstance, RemoteStudy, StudyFilter
from dicomvault.domain.peers import RemotePeer
from dicomvault.ports.migration import PeerUnreachable, Received, Sink

log = logging.getLogger(__name__)

#: QIDO-RS page size (the peer may cap it lower; paging continues while pages come back non-empty and full).
PAGE = 500
#: A part larger than this goes to a temporary file while it is received.
SPOOL_BYTES = 16 << 20
ACCEPT_STUDY = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def _value(item: dict[str, Any], tag: str) -> Any:
    values = (item.get(tag) or {}).get("Value") or []
    return values[0] if values else None


def _values(item: dict[str, Any], tag: str) -> list[Any]:
    return list((item.get(tag) or {}).get("Value") or [])


class HttpxPull:
    """Implements ``ports.migration.LegacySource`` over DICOMweb."""

    def __init__(self, *, timeout: float = 60.0, verify: bool | str = True) -> None:
        self.timeout, self.verify = timeout, verify

    def _base(self, peer: RemotePeer) -> str:
        if not peer.dicomweb_url:
            raise PeerUnreachable(f"peer {peer.aet} has no DICOMweb URL (dicomvault peers add {peer.aet} "
                                  "--dicomweb-url URL)")
        return peer.dicomweb_url

    def _headers(self, peer: RemotePeer, accept: str) -> dict[str, str]:
        headers = {"Accept": accept}
        if peer.dicomweb_token:
            headers["Authorization"] = f"Bearer {peer.dicomweb_token}"
        return headers

    def _qido(self, peer: RemotePeer, path: str, params: list[tuple[str, str]]) -> Iterator[dict[str, Any]]:
        url = f"{self._base(peer)}{path}"
        offset = 0
        with httpx.Client(timeout=self.timeout, verify=self.verify) as client:
            while True:
                try:
                    r = client.get(url, params=[*params, ("limit", str(PAGE)), ("offset", str(offset))],
                                   headers=self._headers(peer, "application/dicom+json"))
                except httpx.HTTPError as exc:
                    raise PeerUnreachable(f"peer {peer.aet}: QIDO-RS {url}: {type(exc).__name__}") from None
                if r.status_code == 204:
                    return
                if r.status_code != 200:
                    raise PeerUnreachable(f"peer {peer.aet}: QIDO-RS {url}: HTTP {r.status_code}")
                page = r.json() or []
                yield from page
                if len(page) < PAGE:
                    return
                offset += len(page)

    def find_studies(self, peer: RemotePeer, flt: StudyFilter) -> list[RemoteStudy]:
        params = [("includefield", "00201208"), ("includefield", "00080061"), ("includefield", "00100020"),
                  ("includefield", "00080020")]
        if flt.date_range():
            params.append(("StudyDate", str(flt.date_range())))
        if flt.modality:
            params.append(("ModalitiesInStudy", flt.modality))
        found: dict[str, RemoteStudy] = {}
        for extra in ([[("StudyInstanceUID", uid)] for uid in flt.study_uids] or [[]]):
            for item in self._qido(peer, "/studies", [*params, *extra]):
                uid = str(_value(item, "0020000D") or "").strip()
                if not uid:
                    continue
                count = _value(item, "00201208")
                found[uid] = RemoteStudy(study_uid=uid, study_date=str(_value(item, "00080020") or ""),
                                         patient_id=str(_value(item, "00100020") or ""),
                                         modalities=tuple(str(m) for m in _values(item, "00080061")),
                                         expected=int(count) if count not in (None, "") else None)
        return list(found.values())

    def find_instances(self, peer: RemotePeer, study_uid: str) -> list[RemoteInstance]:
        out: dict[str, RemoteInstance] = {}
        for item in self._qido(peer, f"/studies/{study_uid}/instances", [("includefield", "00080016")]):
            uid = str(_value(item, "00080018") or "").strip()
            if uid:
                out[uid] = RemoteInstance(uid, str(_value(item, "00080016") or ""),
                                          str(_value(item, "0020000E") or ""))
        return list(out.values())

    def pull(self, peer: RemotePeer, study_uid: str, instances: Sequence[RemoteInstance], sink: Sink, *,
             only: bool = False) -> PullOutcome:
        # ``only`` is not used: the whole study is asked for again; what is already stored is a duplicate
        out = PullOutcome()
        try:
            url = f"{self._base(peer)}/studies/{study_uid}"
        except PeerUnreachable as exc:
            return PullOutcome(error=str(exc))
        try:
            with httpx.Client(timeout=self.timeout, verify=self.verify) as client, client.stream(
                    "GET", url, headers=self._headers(peer, ACCEPT_STUDY)) as r:
                if r.status_code != 200:
                    out.error = f"peer {peer.aet}: WADO-RS {url}: HTTP {r.status_code}"
                    return out
                boundary = _boundary(r.headers.get("content-type", ""))
                if boundary is None:
                    out.error = f"peer {peer.aet}: WADO-RS answered {r.headers.get('content-type')!r}, not multipart"
                    return out
                for headers, body, size in MultipartReader(r.iter_bytes(1 << 16), boundary):
                    with body:
                        kind = headers.get("content-type", "application/dicom").split(";")[0].strip().lower()
                        if kind != "application/dicom":
                            out.failed += 1
                            out.refused.append(f"a part of type {kind}")
                            continue
                        problem = sink(Received(stream=body, size=size, part10=True))
                    if problem is None:
                        out.received += 1
                        out.bytes += size
                    else:
                        out.failed += 1
                        out.refused.append(problem)
        except httpx.HTTPError as exc:
            out.error = f"peer {peer.aet}: WADO-RS {url}: {type(exc).__name__}"
        except ValueError as exc:
            out.error = f"peer {peer.aet}: WADO-RS {url}: {exc}"
        return out


def _boundary(content_type: str) -> bytes | None:
    if not content_type.lower().startswith("multipart/"):
        return None
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary":
            return value.strip().strip('"').encode("latin-1")
    return None


class MultipartReader:
    """Iterate the parts of a multipart body arriving as ``chunks``: (headers, body stream at 0, body size)."""

    def __init__(self, chunks: Iterator[bytes], boundary: bytes) -> None:
        self._chunks = iter(chunks)
        self._delimiter = b"\r\n--" + boundary
        self._buf = b""
        self._done = False

    def _more(self) -> bool:
        chunk = next(self._chunks, None)
        if chunk is None:
            return False
        self._buf += chunk
        return True

    def _read_until(self, marker: bytes) -> bytes:
        while (at := self._buf.find(marker)) < 0:
            if not self._more():
                raise ValueError("multipart body ends early")
        head, self._buf = self._buf[:at], self._buf[at + len(marker):]
        return head

    def __iter__(self) -> Iterator[tuple[dict[str, str], BinaryIO, int]]:
        # the preamble ends with the first delimiter (no CRLF before it when the body starts with it)
        self._buf = b"\r\n"
        self._read_until(self._delimiter)
        while True:
            while len(self._buf) < 2 and self._more():
                pass
            if self._buf.startswith(b"--"):
                return
            head = self._read_until(b"\r\n\r\n")
            headers = {}
            for line in head.decode("latin-1").split("\r\n"):
                key, sep, value = line.partition(":")
                if sep:
                    headers[key.strip().lower()] = value.strip()
            body = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - closed by the caller
            size = self._body(cast(BinaryIO, body))
            body.seek(0)
            yield headers, cast(BinaryIO, body), size

    def _body(self, body: BinaryIO) -> int:
        """Copy bytes up to the next delimiter into ``body``; the buffer then starts after the delimiter."""
        size = 0
        keep = len(self._delimiter) - 1
        while True:
            at = self._buf.find(self._delimiter)
            if at >= 0:
                body.write(self._buf[:at])
                size += at
                self._buf = self._buf[at + len(self._delimiter):]
                return size
            if len(self._buf) > keep:
                body.write(self._buf[:-keep])
                size += len(self._buf) - keep
                self._buf = self._buf[-keep:]
            if not self._more():
                raise ValueError("multipart body ends inside a part")
