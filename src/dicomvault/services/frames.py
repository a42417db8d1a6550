"""Frame offset index, built once at ingest so that any frame is served with one byte-range read.

Native pixel data: frame N lies at a computed offset. Encapsulated pixel data: fragment item headers are walked
(seeking over the fragment data, never reading it) and fragments are grouped into frames using, in order, the
Extended Offset Table, the Basic Offset Table, one-fragment-per-frame, or start-of-codestream markers.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from pydicom.dataset import Dataset
from pydicom.uid import UID

from dicomvault.domain.records import FrameIndex

_IMPLICIT = "1.2.840.10008.1.2"
_BIG = "1.2.840.10008.1.2.2"
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"}
_ITEM = 0xFFFEE000
_SEQ_DELIM = 0xFFFEE0DD
_FRAME_START_MARKERS = (b"\xff\xd8", b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP")


def _int_attr(ds: Dataset, keyword: str, default: int) -> int:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def number_of_frames(ds: Dataset) -> int:
    return max(1, _int_attr(ds, "NumberOfFrames", 1))


def build_frame_index(
    stream: BinaryIO, ds: Dataset, tsuid: str, pixel_offset: int, file_size: int
) -> FrameIndex | None:
    """Return the index, or None when frames cannot be located without decoding (big endian, 1-bit, odd data)."""
    if tsuid == _BIG or pixel_offset is None:
        return None
    stream.seek(pixel_offset)
    header = stream.read(12)
    if len(header) < 8:
        return None
    if tsuid == _IMPLICIT:
        (length,) = struct.unpack("<I", header[4:8])
        value_offset = pixel_offset + 8
    elif header[4:6] in _LONG_VRS:
        (length,) = struct.unpack("<I", header[8:12])
        value_offset = pixel_offset + 12
    else:
        (length,) = struct.unpack("<H", header[6:8])
        value_offset = pixel_offset + 8
    n_frames = number_of_frames(ds)
    if length != 0xFFFFFFFF:
        return _native(ds, value_offset, length, n_frames, file_size)
    if not UID(tsuid).is_encapsulated:
        return None
    return _encapsulated(stream, ds, value_offset, n_frames, file_size)


def _native(ds: Dataset, offset: int, length: int, n_frames: int, file_size: int) -> FrameIndex | None:
    rows = _int_attr(ds, "Rows", 0)
    cols = _int_attr(ds, "Columns", 0)
    spp = _int_attr(ds, "SamplesPerPixel", 1)
    bits = _int_attr(ds, "BitsAllocated", 0)
    if rows <= 0 or cols <= 0 or bits <= 0 or bits % 8:
        return None
    frame = rows * cols * spp * bits // 8
    if ds.get("PhotometricInterpretation") == "YBR_FULL_422":
        frame = rows * cols * 2 * bits // 8
    if frame * n_frames > length or offset + frame * n_frames > file_size:
        return None
    return FrameIndex(False, tuple(((offset + i * frame, frame),) for i in range(n_frames)))


def _encapsulated(stream: BinaryIO, ds: Dataset, offset: int, n_frames: int, file_size: int) -> FrameIndex | None:
    stream.seek(offset)
    items: list[tuple[int, int]] = []  # (item tag offset, data length)
    pos = offset
    bot: bytes = b""
    first = True
    while pos + 8 <= file_size:
        head = stream.read(8)
        if len(head) < 8:
            return None
        group, elem, length = struct.unpack("<HHI", head)
        tag = group << 16 | elem
        if tag == _SEQ_DELIM:
            break
        if tag != _ITEM or length == 0xFFFFFFFF or pos + 8 + length > file_size:
            return None
        if first:
            bot = stream.read(length) if length else b""
            first = False
        else:
            items.append((pos, length))
            stream.seek(length, 1)
        pos += 8 + length
    if not items:
        return None
    frags = [(p + 8, n) for p, n in items]
    if n_frames == 1:
        return FrameIndex(True, (tuple(frags),))
    starts: list[int] | None = None
    eot = ds.get("ExtendedOffsetTable")
    if eot is not None:
        try:
            starts = list(struct.unpack(f"<{len(eot.value) // 8}Q", eot.value))
        except Exception:
            starts = None
    if starts is None and len(bot) >= 4 * n_frames:
        starts = list(struct.unpack(f"<{len(bot) // 4}I", bot))
    if starts is not None and len(starts) == n_frames:
        base = items[0][0]
        rel = {p - base: i for i, (p, _) in enumerate(items)}
        if all(s in rel for s in starts):
            bounds = [rel[s] for s in starts] + [len(items)]
            return FrameIndex(True, tuple(tuple(frags[bounds[i]:bounds[i + 1]]) for i in range(n_frames)))
    if len(frags) == n_frames:
        return FrameIndex(True, tuple((f,) for f in frags))
    # Markers: a fragment that starts a codestream starts a frame.
    frames: list[list[tuple[int, int]]] = []
    for data_off, n in frags:
        stream.seek(data_off)
        lead = stream.read(4)
        if not frames or any(lead.startswith(m) for m in _FRAME_START_MARKERS):
            frames.append([])
        frames[-1].append((data_off, n))
    if len(frames) != n_frames:
        return None
    return FrameIndex(True, tuple(tuple(f) for f in frames))
