"""Streaming ``multipart/related`` reader (RFC 2046/2387) for STOW-RS request bodies.

Parts are yielded as soon as their closing delimiter arrives from the request stream, each spooled to a
``SpooledTemporaryFile`` (memory up to ``SPOOL_MAX``, then an unnamed temporary file in the caller's spool folder,
``<data_dir>/spool`` for STOW-RS), so a multi-GB upload costs a few megabytes of memory and the caller can store
part 1 while part 2 is still on the wire. Truncated bodies (no
closing delimiter), malformed part headers and bodies over the configured size limit raise ``MultipartError``
carrying the HTTP status to answer (400 or 413).
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

SPOOL_MAX = 16 * 1024 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_BOUNDARY = 70  # RFC 2046 5.1.1


class MultipartError(Exception):
    """The body is not acceptable multipart; ``status`` is the HTTP answer (400 bad syntax, 413 too large)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """``type/subtype; a=b; c="d; e"`` → ("type/subtype", {"a": "b", "c": "d; e"}); names lower-cased."""
    items: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for ch in value:
        if escaped:
            current.append(ch)
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
            current.append(ch)
        elif ch == ";" and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    media = items[0].strip().lower()
    params: dict[str, str] = {}
    for item in items[1:]:
        name, sep, val = item.partition("=")
        if not sep:
            continue
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] == '"':
            val = val[1:-1]
        params[name.strip().lower()] = val
    return media, params


@dataclass
class Part:
    """One body part: its headers (names lower-cased) and its content, spooled and rewound."""

    headers: dict[str, str]
    file: IO[bytes] = field(repr=False)
    size: int = 0

    @property
    def content_type(self) -> str:
        return parse_media_type(self.headers.get("content-type", ""))[0]

    @property
    def content_location(self) -> str | None:
        return self.headers.get("content-location")

    def close(self) -> None:
        self.file.close()


def _spool(folder: Path | None) -> IO[bytes]:
    """Memory up to ``SPOOL_MAX``, then a file in ``folder`` (None: the system temporary folder)."""
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX, mode="w+b", dir=None if folder is None else str(folder))


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    last: str | None = None
    for raw in block.split(b"\r\n"):
        if not raw:
            continue
        line = raw.decode("latin-1")
        if line[0] in " \t" and last is not None:  # obsolete line folding
            headers[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise MultipartError("malformed part header line")
        last = name.strip().lower()
        headers[last] = value.strip()
    return headers


class _Limiter:
    """Counts body bytes against the size limit."""

    def __init__(self, max_bytes: int | None) -> None:
        self.max_bytes = max_bytes
        self.total = 0

    def add(self, n: int) -> None:
        self.total += n
        if self.max_bytes and self.total > self.max_bytes:
            raise MultipartError(f"request body exceeds the limit of {self.max_bytes} bytes", 413)


async def read_single(chunks: AsyncIterator[bytes], headers: dict[str, str], *, max_bytes: int | None,
                      spool_dir: Path | None = None) -> Part:
    """A non-multipart body (``application/dicom``) as one spooled part."""
    limiter = _Limiter(max_bytes)
    part = Part(headers=headers, file=_spool(spool_dir))
    try:
        async for chunk in chunks:
            limiter.add(len(chunk))
            part.file.write(chunk)
        part.size = limiter.total
        part.file.seek(0)
    except BaseException:
        part.close()
        raise
    return part


async def iter_parts(chunks: AsyncIterator[bytes], boundary: str, *, max_bytes: int | None,
                     spool_dir: Path | None = None) -> AsyncIterator[Part]:
    """Yield the parts of a multipart body read from ``chunks``; the caller closes each part it receives.
    Parts larger than ``SPOOL_MAX`` go to unnamed files in ``spool_dir``.

    Raises ``MultipartError`` when the body ends before the closing delimiter, a header block is malformed, or
    the body grows beyond ``max_bytes``.
    """
    if not boundary or len(boundary) > MAX_BOUNDARY:
        raise MultipartError("missing or invalid multipart boundary")
    delim = b"\r\n--" + boundary.encode("latin-1")
    keep = len(delim) + 1
    limiter = _Limiter(max_bytes)
    # The first delimiter may open the body without a preceding CRLF: prepend one so one pattern fits all.
    buf = bytearray(b"\r\n")
    state = "preamble"
    part: Part | None = None
    try:
        async for chunk in chunks:
            limiter.add(len(chunk))
            if state == "epilogue":
                continue
            buf += chunk
            while True:
                if state == "preamble":
                    i = buf.find(delim)
                    if i < 0:
                        del buf[: max(0, len(buf) - keep)]
                        break
                    del buf[: i + len(delim)]
                    state = "delimiter"
                elif state == "delimiter":
                    if len(buf) < 2:
                        break
                    if buf[:2] == b"--":
                        state = "epilogue"
                        buf.clear()
                        break
                    eol = buf.find(b"\r\n")
                    if eol < 0:
                        if len(buf) > 1024:
                            raise MultipartError("malformed multipart delimiter line")
                        break
                    if buf[:eol].strip(b" \t"):
                        raise MultipartError("malformed multipart delimiter line")
                    del buf[: eol + 2]
                    state = "headers"
                elif state == "headers":
                    if buf[:2] == b"\r\n":
                        head_end, block = 2, b""
                    else:
                        j = buf.find(b"\r\n\r\n")
                        if j < 0:
                            if len(buf) > MAX_HEADER_BYTES:
                                raise MultipartError("part headers too long")
                            break
                        head_end, block = j + 4, bytes(buf[:j])
                    part = Part(headers=_parse_headers(block), file=_spool(spool_dir))
                    del buf[:head_end]
                    state = "body"
                else:  # body
                    assert part is not None
                    i = buf.find(delim)
                    if i < 0:
                        n = len(buf) - keep
                        if n > 0:
                            part.file.write(buf[:n])
                            part.size += n
                            del buf[:n]
                        break
                    verdict = _is_delimiter(buf, i + len(delim))
                    if verdict is not True:
                        # Undecided (need more bytes) or the boundary text inside the content: keep the bytes.
                        n = i if verdict is None else i + 1
                        part.file.write(buf[:n])
                        part.size += n
                        del buf[:n]
                        if verdict is None:
                            break
                        continue
                    part.file.write(buf[:i])
                    part.size += i
                    del buf[: i + len(delim)]
                    _check_length(part)
                    part.file.seek(0)
                    done, part = part, None
                    state = "delimiter"
                    yield done
        if state != "epilogue":
            raise MultipartError("multipart body is truncated (no closing boundary)")
    finally:
        if part is not None:
            part.close()


def _is_delimiter(buf: bytearray, j: int) -> bool | None:
    """Whether the boundary text ending at ``j`` is a delimiter: followed by ``--`` (close) or transport padding and
    CRLF. None: not enough bytes yet to tell. Content that merely contains the boundary text stays content."""
    rest = buf[j:j + 1026]
    if len(rest) < 2:
        return None
    if rest[:2] == b"--":
        return True
    for k, c in enumerate(rest):
        if c in (0x20, 0x09):
            continue
        if c == 0x0D:
            return None if k + 1 >= len(rest) else rest[k + 1] == 0x0A
        return False
    return None if len(rest) < 1026 else False


def _check_length(part: Part) -> None:
    declared = part.headers.get("content-length")
    if declared is None:
        return
    try:
        expected = int(declared)
    except ValueError:
        raise MultipartError("invalid Content-Length in a part header") from None
    if expected != part.size:
        part.close()
        raise MultipartError(f"part length {part.size} differs from its Content-Length {expected}")
