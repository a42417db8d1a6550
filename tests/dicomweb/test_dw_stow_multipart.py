"""The streaming multipart reader on its own: delimiters split across any chunk boundary, header forms, limits,
and parts larger than the memory spool landing on disk."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from dicomvault.dicomweb.multipart import SPOOL_MAX, MultipartError, iter_parts, parse_media_type, read_single


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def collect(data: bytes, boundary: str, size: int, max_bytes: int | None = None) -> list[tuple[dict[str, str], bytes]]:
    async def run() -> list[tuple[dict[str, str], bytes]]:
        out = []
        async for part in iter_parts(_chunks(data, size), boundary, max_bytes=max_bytes):
            try:
                out.append((part.headers, part.file.read()))
            finally:
                part.close()
        return out

    return asyncio.run(run())


BODY = (b"preamble text\r\n--XyZ\r\nContent-Type: application/dicom\r\nContent-Location: one\r\n\r\n"
        b"first\r\n--XyZ-not-a-delimiter-inside\r\n"
        b"\r\n--XyZ  \t\r\n\r\nsecond (no headers)\r\n--XyZ--\r\nepilogue --XyZ\r\n")


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 11, 64, 4096])
def test_parts_survive_any_chunking(size: int) -> None:
    parts = collect(BODY, "XyZ", size)
    assert [p[1] for p in parts] == [b"first\r\n--XyZ-not-a-delimiter-inside\r\n", b"second (no headers)"]
    assert parts[0][0] == {"content-type": "application/dicom", "content-location": "one"}
    assert parts[1][0] == {}


def test_truncation_and_malformed_headers() -> None:
    with pytest.raises(MultipartError, match="truncated") as info:
        collect(BODY[:60], "XyZ", 16)
    assert info.value.status == 400
    with pytest.raises(MultipartError, match="truncated"):
        collect(b"", "XyZ", 16)
    with pytest.raises(MultipartError, match="header"):
        collect(b"--XyZ\r\nthis is no header\r\n\r\nbody\r\n--XyZ--", "XyZ", 16)
    with pytest.raises(MultipartError, match="boundary"):
        collect(BODY, "", 16)


def test_size_limit_is_413() -> None:
    with pytest.raises(MultipartError) as info:
        collect(BODY, "XyZ", 8, max_bytes=50)
    assert info.value.status == 413


def test_large_part_is_spooled_to_disk() -> None:
    payload = os.urandom(SPOOL_MAX + 1024 * 1024)
    data = b"--b\r\n\r\n" + payload + b"\r\n--b--"

    async def run() -> None:
        async for part in iter_parts(_chunks(data, 65536), "b", max_bytes=None):
            try:
                assert part.size == len(payload)
                assert part.file._rolled  # type: ignore[attr-defined]  # beyond the memory spool: a temp file
                assert part.file.read() == payload
            finally:
                part.close()

    asyncio.run(run())


def test_single_body() -> None:
    async def run() -> bytes:
        part = await read_single(_chunks(b"DICM" * 10, 7), {"content-type": "application/dicom"}, max_bytes=None)
        try:
            return part.file.read()
        finally:
            part.close()

    assert asyncio.run(run()) == b"DICM" * 10


def test_media_type_parameters() -> None:
    assert parse_media_type('Multipart/Related; type="application/dicom"; boundary="a;b=c"') == (
        "multipart/related", {"type": "application/dicom", "boundary": "a;b=c"})
    assert parse_media_type("multipart/related;boundary=abc;type=application/dicom") == (
        "multipart/related", {"boundary": "abc", "type": "application/dicom"})
    assert parse_media_type("") == ("", {})
