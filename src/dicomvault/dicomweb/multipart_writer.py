"""Streaming ``multipart/related`` responses (RFC 2387) for WADO-RS.

Parts are written as their bytes arrive from the blob store, so a study of many gigabytes leaves the server in
1 MiB chunks with bounded memory. The boundary is random (it cannot collide with part content in practice: 128
random bits) and is announced in the response's Content-Type.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


def new_boundary() -> str:
    return "dicomvault-" + secrets.token_hex(16)


def content_type(boundary: str, inner: str) -> str:
    """``multipart/related; type="<inner>"; boundary=<b>`` (the inner type quoted because it may hold ``/`` and
    ``;``, both of which need quoting in a parameter value)."""
    inner_type = inner.replace('"', "'")
    return f'multipart/related; type="{inner_type}"; boundary={boundary}'


@dataclass
class PartSpec:
    """One part to write: its Content-Type, optional Content-Location, and its body as an iterable of chunks."""

    content_type: str
    body: Iterable[bytes]
    location: str | None = None


def part_head(boundary: str, ctype: str, location: str | None = None, *, first: bool = False) -> bytes:
    head = ("" if first else "\r\n") + f"--{boundary}\r\nContent-Type: {ctype}\r\n"
    if location:
        head += f"Content-Location: {location}\r\n"
    return (head + "\r\n").encode("latin-1")


def closing(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode("latin-1")


#: Chunks are coalesced up to this size before being handed to the server: Starlette moves every chunk of a
#: synchronous iterator through its thread pool, so many small chunks (part headers, small instances) cost more
#: than the bytes themselves.
COALESCE = 1 << 20


def stream_parts(boundary: str, parts: Iterable[PartSpec]) -> Iterator[bytes]:
    """Frame ``parts`` lazily: a part's body is not pulled before the previous part has been written."""
    pending: list[bytes] = []
    size = 0
    for piece in _frame(boundary, parts):
        pending.append(piece)
        size += len(piece)
        if size >= COALESCE:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


def _frame(boundary: str, parts: Iterable[PartSpec]) -> Iterator[bytes]:
    first = True
    for part in parts:
        yield part_head(boundary, part.content_type, part.location, first=first)
        first = False
        for chunk in part.body:
            if chunk:
                yield chunk
    if first:
        # No part at all: an empty multipart body still needs a delimiter to be well formed.
        yield f"--{boundary}".encode("latin-1")
        yield b"--\r\n"
        return
    yield closing(boundary)
