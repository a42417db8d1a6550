"""Streaming ``multipart/related`` responses (RFC 2387) for WADO-RS.

Parts are written as their bytes arrive from the blob store, so a study of many gigabytes leaves the server in
1 MiB chunks with bounded memory. The boundary is random (it cannot collide with part content in practice: 128
random bits) and is announced in the response's Content-Type.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool


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


#: Bytes pulled from the blob store per trip through the thread pool by ``stream_parts_async``.
BATCH = 4 << 20


def body_length(boundary: str, parts: Iterable[tuple[str, int]]) -> int:
    """Exact length of the multipart body of ``parts`` given as (content type, body size), at least one part, no
    Content-Location: announced as Content-Length so the server writes the parts as they are (no chunked
    framing, which costs a copy of every chunk) and the client knows what to expect."""
    total, first = 0, True
    for ctype, size in parts:
        total += len(part_head(boundary, ctype, first=first)) + size
        first = False
    return total + len(closing(boundary))


async def stream_parts_async(boundary: str, parts: Iterable[PartSpec], batch: int = BATCH) -> AsyncIterator[bytes]:
    """Like ``stream_parts``, for large bodies: up to ``batch`` bytes of framed parts are read in one trip to the
    thread pool (part bodies do blocking reads) and then handed to the server piece by piece, never joined. The
    synchronous path pays a thread hop per chunk and a copy per coalesced chunk; this one pays one hop per
    ``batch`` and no copy, which is what whole-study retrieval of many small objects is made of."""
    pieces = _frame(boundary, parts)

    def pull() -> tuple[list[bytes], bool]:
        out: list[bytes] = []
        size = 0
        for piece in pieces:
            out.append(piece)
            size += len(piece)
            if size >= batch:
                return out, False
        return out, True

    try:
        done = False
        while not done:
            out, done = await run_in_threadpool(pull)
            for piece in out:
                yield piece
    finally:
        pieces.close()  # a client that went away: close the blob being read now


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


def _frame(boundary: str, parts: Iterable[PartSpec]) -> Generator[bytes, None, None]:
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
