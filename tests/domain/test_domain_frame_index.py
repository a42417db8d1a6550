"""The compact frame index: arithmetic for native frames, packed offsets for fragments, frame N located from a
few characters of the stored text, and the JSON form of earlier versions still read."""

from __future__ import annotations

import json

import pytest

from dicomvault.domain.frame_index import HEAD_CHARS, FrameIndex


class Reader:
    """Serves parts of a stored text as the index adapter does (SQL substr), counting what was read."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.chars = 0

    def __call__(self, start: int, length: int | None) -> str:
        part = self.text[start:] if length is None else self.text[start : start + length]
        self.chars += len(part)
        return part


def _items(lengths: list[int], first: int = 1000) -> list[tuple[int, int]]:
    items, pos = [], first
    for n in lengths:
        items.append((pos, n))
        pos += 8 + n
    return items


def _read_back(index: FrameIndex, frames: int) -> tuple[FrameIndex, Reader]:
    text = index.encode()
    head = text[:HEAD_CHARS]
    return FrameIndex.decode(head, complete=len(head) < HEAD_CHARS, frames=frames), Reader(text)


def test_native_index_is_arithmetic() -> None:
    index = FrameIndex.native(1234, 1, 1_000_000)
    assert index.encode() == "N1234,1,1000000"
    back, read = _read_back(index, 1_000_000)
    assert back.spans(1, read) == ((1234, 1),)
    assert back.spans(1_000_000, read) == ((1234 + 999_999, 1),)
    assert back.pixel_span() == (1234, 1_000_000)
    assert read.chars == 0
    with pytest.raises(IndexError):
        back.spans(1_000_001, read)


@pytest.mark.parametrize(("starts", "count", "bounds"), [
    (None, 6, [0, 1, 2, 3, 4, 5, 6]),  # one fragment per frame
    (None, 1, [0, 6]),  # one frame in six fragments
    ([0, 2, 3], 3, [0, 2, 3, 6]),  # frames of 2, 1 and 3 fragments (a frame table)
])
def test_encapsulated_frames_are_found_from_a_few_characters(
    starts: list[int] | None, count: int, bounds: list[int]
) -> None:
    items = _items([100, 7, 64, 3, 9, 11])
    index = FrameIndex.from_fragments(items, starts, count)
    assert index.table == (starts is not None)
    back, read = _read_back(index, count)
    for n in range(1, count + 1):
        expected = tuple((pos + 8, size) for pos, size in items[bounds[n - 1] : bounds[n]])
        assert back.spans(n, read) == expected
        assert index.spans(n, read) == expected


def test_large_encapsulated_index_reads_only_what_a_frame_needs() -> None:
    count = 200_000
    items = _items([300 + i % 7 for i in range(count)])
    index = FrameIndex.from_fragments(items, None, count)
    text = index.encode()
    assert len(text) < 6 * count  # 4 bytes per fragment, base64
    back, read = _read_back(index, count)
    assert back.packed is None  # only the head came with the record
    assert back.spans(123_456, read) == ((items[123_455][0] + 8, items[123_455][1]),)
    assert read.chars <= 16


def test_offsets_beyond_4_gib_use_8_bytes() -> None:
    items = _items([3 << 30, 3 << 30, 5])
    index = FrameIndex.from_fragments(items, None, 3)
    assert index.width == 8
    back, read = _read_back(index, 3)
    assert back.spans(3, read) == ((items[2][0] + 8, 5),)


def _old_json(encapsulated: bool, frames: list[list[tuple[int, int]]]) -> str:
    """What FrameIndex.to_json of earlier versions stored."""
    return json.dumps({"e": encapsulated, "f": frames}, separators=(",", ":"))


def test_legacy_json_native_is_read_from_its_head() -> None:
    text = _old_json(False, [[(5000 + i * 2, 2)] for i in range(100_000)])
    assert len(text) > HEAD_CHARS
    index = FrameIndex.decode(text[:HEAD_CHARS], complete=False, frames=100_000)
    read = Reader(text)
    assert index.spans(77_777, read) == ((5000 + 77_776 * 2, 2),)
    assert read.chars == 0


def test_legacy_json_encapsulated_is_parsed_when_a_frame_is_asked_for() -> None:
    items = _items([10, 20, 30, 40, 50])
    frames = [[(items[0][0] + 8, 10), (items[1][0] + 8, 20)], [(items[2][0] + 8, 30)],
              [(items[3][0] + 8, 40), (items[4][0] + 8, 50)]]
    text = _old_json(True, frames)
    for head in (text, text[:40]):
        index = FrameIndex.decode(head, complete=head == text, frames=3)
        assert index.encapsulated and index.count == 3
        read = Reader(text)
        for n in (1, 2, 3):
            assert index.spans(n, read) == tuple(frames[n - 1])
