"""Property-based fuzzing of the STOW-RS body parsers (issue #9): ``multipart.iter_parts`` over random, well-formed
and mutated bodies in random chunkings (parts or ``MultipartError``, nothing else; well-formed bodies give back
exactly their parts; memory bounded while streaming) and ``parse_media_type``. Example counts and the long-run
switch: tests/fuzzing.py."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator, Iterable

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from dicomvault.dicomweb.multipart import (
    MAX_HEADER_BYTES,
    SPOOL_MAX,
    MultipartError,
    iter_parts,
    parse_media_type,
)
from tests.fuzzing import fuzz_settings

#: RFC 2046 5.1.1 bchars (a boundary may not end with a space).
BCHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? "
boundaries = st.text(alphabet=BCHARS, min_size=1, max_size=70).filter(lambda b: not b.endswith(" "))
#: Header values arrive as latin-1 text (Starlette decodes them so), so every boundary the parser sees is latin-1.
any_boundaries = st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=80)

Parsed = list[tuple[dict[str, str], bytes]]


async def _chunks(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    pos, i = 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)] if sizes else len(data)
        yield data[pos : pos + n]
        pos, i = pos + n, i + 1


def _parse(body: bytes, boundary: str, sizes: list[int], max_bytes: int | None = None) -> Parsed:
    async def run() -> Parsed:
        out: Parsed = []
        async for part in iter_parts(_chunks(body, sizes), boundary, max_bytes=max_bytes):
            try:
                out.append((part.headers, part.file.read()))
            finally:
                part.close()
        return out

    return asyncio.run(run())


def _outcome(body: bytes, boundary: str, sizes: list[int], max_bytes: int | None = None) -> Parsed | MultipartError:
    """The parts, or the ``MultipartError``; any other exception propagates (and fails the test)."""
    try:
        return _parse(body, boundary, sizes, max_bytes)
    except MultipartError as exc:
        assert exc.status in (400, 413) and exc.message
        return exc


def _body(boundary: str, parts: Iterable[tuple[dict[str, str], bytes]], preamble: bytes = b"",
          epilogue: bytes = b"") -> bytes:
    out = preamble + (b"\r\n" if preamble else b"")
    for headers, content in parts:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        out += f"--{boundary}\r\n{head}\r\n".encode("latin-1") + content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode("latin-1") + epilogue


chunkings = st.lists(st.integers(1, 4096), min_size=1, max_size=8)
part_headers = st.fixed_dictionaries({}, optional={
    "content-type": st.sampled_from(["application/dicom", "application/octet-stream", 'application/dicom; x="a;b"']),
    "content-location": st.from_regex(r"\A[a-z0-9/]{1,20}\Z"),
})


@st.composite
def well_formed(draw: st.DrawFn) -> tuple[bytes, str, Parsed]:
    boundary = draw(boundaries)
    delim = f"--{boundary}".encode("latin-1")
    parts: Parsed = []
    for _ in range(draw(st.integers(1, 4))):
        content = draw(st.binary(max_size=3000))
        assume(delim not in content)  # a sender picks a boundary its content does not contain
        headers = dict(draw(part_headers))
        if draw(st.booleans()):
            headers["content-length"] = str(len(content))
        parts.append((headers, content))
    preamble = draw(st.binary(max_size=200))
    assume(delim not in preamble)
    return _body(boundary, parts, preamble, draw(st.binary(max_size=200))), boundary, parts


@fuzz_settings(300)
@given(body=st.binary(max_size=4096), boundary=any_boundaries, sizes=chunkings)
def test_random_bodies_give_parts_or_multipart_error(body: bytes, boundary: str, sizes: list[int]) -> None:
    _outcome(body, boundary, sizes)


@fuzz_settings(200)
@given(case=well_formed(), sizes=chunkings)
def test_well_formed_bodies_give_back_their_parts(case: tuple[bytes, str, Parsed], sizes: list[int]) -> None:
    body, boundary, parts = case
    assert _parse(body, boundary, sizes) == parts


@fuzz_settings(300)
@given(case=well_formed(), sizes=chunkings, edits=st.lists(
    st.tuples(st.sampled_from(["set", "insert", "delete", "truncate"]), st.floats(0, 1), st.binary(min_size=1,
                                                                                                  max_size=12)),
    min_size=1, max_size=4))
def test_mutated_bodies_give_parts_or_multipart_error(case: tuple[bytes, str, Parsed], sizes: list[int],
                                                      edits: list[tuple[str, float, bytes]]) -> None:
    body, boundary, _ = case
    buf = bytearray(body)
    for op, where, data in edits:
        pos = int(where * len(buf))
        if op == "set" and pos < len(buf):
            buf[pos] = data[0]
        elif op == "insert":
            buf[pos:pos] = data
        elif op == "delete":
            del buf[pos : pos + len(data)]
        elif op == "truncate":
            del buf[pos:]
    _outcome(bytes(buf), boundary, sizes)


@fuzz_settings(100)
@given(case=well_formed(), sizes=chunkings, cut=st.floats(0.05, 0.95))
def test_size_limit_applies_whatever_the_content(case: tuple[bytes, str, Parsed], sizes: list[int],
                                                 cut: float) -> None:
    body, boundary, _ = case
    limit = max(1, int(len(body) * cut))
    over = _outcome(body, boundary, sizes, max_bytes=limit)
    assert isinstance(over, MultipartError) and over.status == 413
    assert _outcome(body, boundary, sizes, max_bytes=len(body)) == case[2]


# -- memory while streaming: what the parser keeps between chunks does not grow with the body ----------------------

CHUNK = 64 * 1024
BIG = 40 * 1024 * 1024  # past SPOOL_MAX: a large part ends up in a temporary file


def _peak_while_parsing(head: bytes, filler: bytes, tail: bytes, boundary: str) -> tuple[int, Parsed | MultipartError]:
    """Stream ``head`` + ``filler`` repeated to BIG bytes + ``tail`` in 64 KiB chunks; parts are closed as they come
    (as STOW-RS does once each is stored). Returns the peak traced memory and the outcome."""

    async def source() -> AsyncIterator[bytes]:
        yield head
        block = (filler * (CHUNK // len(filler) + 1))[:CHUNK]
        for _ in range(BIG // CHUNK):
            yield block
        yield tail

    async def run() -> Parsed | MultipartError:
        out: Parsed = []
        try:
            async for part in iter_parts(source(), boundary, max_bytes=None):
                out.append((part.headers, b"%d bytes" % part.size))
                part.close()
        except MultipartError as exc:
            return exc
        return out

    tracemalloc.start()
    try:
        outcome = asyncio.run(run())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, outcome


@pytest.mark.parametrize(("name", "head", "filler", "tail"), [
    ("preamble without a delimiter", b"", b"x", b""),
    ("delimiter line that never ends", b"--B", b" ", b""),
    ("part headers that never end", b"--B\r\n", b"X-Header: y\r\n", b""),
    ("one large part", b"--B\r\n\r\n", b"\0\1\2\3", b"\r\n--B--\r\n"),
], ids=["preamble", "delimiter-line", "part-headers", "large-part"])
def test_memory_stays_bounded_while_streaming(name: str, head: bytes, filler: bytes, tail: bytes) -> None:
    peak, outcome = _peak_while_parsing(head, filler, tail, "B")
    if name == "one large part":
        assert outcome == [({}, b"%d bytes" % BIG)]
        # The part's content is spooled: in memory up to SPOOL_MAX (with the buffer's growth margin), then on disk.
        assert peak < SPOOL_MAX * 1.5 + 4 * CHUNK, peak
    else:
        assert isinstance(outcome, MultipartError) and outcome.status == 400
        assert peak < 4 * CHUNK + MAX_HEADER_BYTES, (name, peak)  # a chunk or two, never the body


# -- parse_media_type ---------------------------------------------------------------------------------------------

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
tokens = st.text(alphabet=TCHARS, min_size=1, max_size=20)
quoted_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                        max_size=30)


@fuzz_settings(300)
@given(value=st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=200))
def test_parse_media_type_never_raises(value: str) -> None:
    media, params = parse_media_type(value)
    assert media == media.lower() and all(k == k.lower() for k in params)


@fuzz_settings(300)
@given(media=st.tuples(tokens, tokens), params=st.dictionaries(tokens.map(str.lower), st.one_of(
    tokens.map(lambda t: (t, t)),
    quoted_values.map(lambda v: (v, '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"')),
), max_size=5), spaces=st.sampled_from(["", " ", "  "]))
def test_parse_media_type_round_trip(media: tuple[str, str], params: dict[str, tuple[str, str]], spaces: str) -> None:
    header = f"{media[0]}/{media[1]}" + "".join(f";{spaces}{k}={encoded}" for k, (_, encoded) in params.items())
    assert parse_media_type(header) == (f"{media[0]}/{media[1]}".lower(), {k: v for k, (v, _) in params.items()})
