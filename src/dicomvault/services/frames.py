"""Frame offset index, built once at ingest so that any frame is served with one byte-range read, and the pixel
geometry both ingest and retrieval check against (bytes native pixel data must hold, bytes a decoded frame takes).

Native pixel data: frame N lies at a computed offset. Encapsulated pixel data: fragment item headers are walked
(seeking over the fragment data, never reading it) and fragments are grouped into frames using, in order, the
Extended Offset Table, the Basic Offset Table, one-fragment-per-frame, or start-of-codestream markers.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import IO, BinaryIO

from pydicom.dataset import Dataset
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import UID

from dicomvault.dicom.tables import LONG_LENGTH_VR_BYTES
from dicomvault.domain.errors import TRUNCATED, MalformedDicom
from dicomvault.domain.records import FrameIndex

_IMPLICIT = "1.2.840.10008.1.2"
_BIG = "1.2.840.10008.1.2.2"
#: Float Pixel Data, Double Float Pixel Data, Pixel Data
PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)
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


def expected_pixel_bytes(ds: Dataset, frames: int | None = None) -> int | None:
    """Bytes native pixel data must hold for the Image Pixel Module of ``ds`` (PS3.5 8.1.1, PS3.3 C.7.6.3:
    Rows × Columns × Samples per Pixel × Bits Allocated / 8 × Number of Frames, 1-bit data packed, YBR_FULL_422
    two samples per pixel), the trailing padding byte of odd-length data excluded; for ``frames`` frames if
    given. pydicom's ``get_expected_length`` does the arithmetic, on the attributes it needs with the standard's
    defaults (it raises on a missing Samples per Pixel, warns on a zero Number of Frames). None when Rows,
    Columns or Bits Allocated is missing or invalid: nothing to check against."""
    rows, columns, bits = _int_attr(ds, "Rows", 0), _int_attr(ds, "Columns", 0), _int_attr(ds, "BitsAllocated", 0)
    if rows <= 0 or columns <= 0 or not (bits == 1 or (bits > 0 and bits % 8 == 0)):
        return None
    return _expected_length(rows, columns, bits, max(1, _int_attr(ds, "SamplesPerPixel", 1)),
                            str(ds.get("PhotometricInterpretation", "") or "").strip(),
                            frames if frames is not None else number_of_frames(ds))


@functools.lru_cache(maxsize=256)
def _expected_length(rows: int, columns: int, bits: int, samples: int, photometric: str, frames: int) -> int:
    """pydicom's arithmetic for one geometry. Cached: a series repeats one geometry, and building the small
    ``Dataset`` pydicom wants costs more than the rest of an instance's pixel checks."""
    geometry = Dataset()
    geometry.Rows, geometry.Columns, geometry.BitsAllocated = rows, columns, bits
    geometry.SamplesPerPixel = samples
    geometry.PhotometricInterpretation = photometric
    geometry.NumberOfFrames = frames
    return int(get_expected_length(geometry))



def pixel_length_problem(ds: Dataset, length: int) -> str | None:
    """Why native pixel data of ``length`` bytes cannot be decoded: it is shorter than the header describes.
    Longer data is accepted (pydicom's decoders read the leading bytes; vendors pad)."""
    expected = expected_pixel_bytes(ds)
    if expected is None or length >= expected:
        return None
    return f"pixel data holds {length} of the {expected} bytes the header describes"


def decoded_frame_bytes(ds: Dataset) -> int:
    """Memory one decoded frame of ``ds`` takes as an array (Rows × Columns × Samples per Pixel × bytes per
    sample; 1-bit samples unpack to one byte): what ``max_decoded_bytes`` is checked against before decoding."""
    rows, columns = max(0, _int_attr(ds, "Rows", 0)), max(0, _int_attr(ds, "Columns", 0))
    samples = max(1, _int_attr(ds, "SamplesPerPixel", 1))
    bits = max(8, _int_attr(ds, "BitsAllocated", 8))
    return rows * columns * samples * ((bits + 7) // 8)


def pixel_element(stream: BinaryIO | IO[bytes], tsuid: str, tag_offset: int) -> tuple[int, int] | None:
    """(value offset, value length) of the pixel data element whose tag starts at ``tag_offset`` (length
    0xFFFFFFFF: encapsulated); None when no pixel data element starts there or its header is cut."""
    stream.seek(tag_offset)
    header = stream.read(12)
    if len(header) < 8:
        return None
    order = ">" if tsuid == _BIG else "<"
    group, element = struct.unpack(order + "HH", header[:4])
    if (group << 16 | element) not in PIXEL_TAGS:
        return None
    if tsuid == _IMPLICIT:
        (length,) = struct.unpack(order + "I", header[4:8])
        return tag_offset + 8, int(length)
    if header[4:6] in LONG_LENGTH_VR_BYTES:
        if len(header) < 12:
            return None
        (length,) = struct.unpack(order + "I", header[8:12])
        return tag_offset + 12, int(length)
    (length,) = struct.unpack(order + "H", header[6:8])
    return tag_offset + 8, int(length)


@dataclass(frozen=True)
class PixelLayout:
    """Where the pixel data element's value lies, found once at ingest (``pixel_layout``) and used both to check
    the object and to build its frame index. ``length`` 0xFFFFFFFF: encapsulated, with the fragment items
    (item tag offset, data length) after the Basic Offset Table, and that table's bytes."""

    value_offset: int
    length: int
    items: tuple[tuple[int, int], ...] = ()
    basic_offset_table: bytes = b""

    @property
    def encapsulated(self) -> bool:
        return self.length == 0xFFFFFFFF


def pixel_layout(stream: BinaryIO | IO[bytes], tsuid: str, offset: int, size: int) -> PixelLayout:
    """The layout of the pixel data element whose tag starts at ``offset`` in an object of ``size`` bytes: the
    value must end inside the object (defined length) or its items be closed by a sequence delimiter
    (encapsulated). Raises ``MalformedDicom`` naming what is wrong (``TRUNCATED`` when cut short)."""
    located = pixel_element(stream, tsuid, offset)
    if located is None:
        raise MalformedDicom("the object is truncated inside the pixel data element", reason=TRUNCATED)
    value, length = located
    if length != 0xFFFFFFFF:
        if value + length > size:
            raise MalformedDicom(f"the object is truncated: pixel data needs {value + length - size} more bytes",
                                 reason=TRUNCATED)
        return PixelLayout(value, length)
    items: list[tuple[int, int]] = []
    bot = b""
    pos = value
    stream.seek(pos)
    while pos + 8 <= size:
        group, elem, n = struct.unpack("<HHI", stream.read(8))
        if (group, elem) == (0xFFFE, 0xE0DD):
            return PixelLayout(value, length, tuple(items), bot)
        if (group, elem) != (0xFFFE, 0xE000) or n == 0xFFFFFFFF:
            raise MalformedDicom("encapsulated pixel data is malformed (unexpected item tag)")
        if pos == value:
            bot = stream.read(min(n, max(0, size - pos - 8)))
        else:
            items.append((pos, n))
        pos += 8 + n
        stream.seek(pos)
    raise MalformedDicom("the object is truncated: encapsulated pixel data has no sequence delimiter",
                         reason=TRUNCATED)


def build_frame_index(
    stream: BinaryIO, ds: Dataset, tsuid: str, layout: PixelLayout, file_size: int
) -> FrameIndex | None:
    """Return the index, or None when frames cannot be located without decoding (big endian, 1-bit, odd data).
    ``layout`` is the pixel element as ``pixel_layout`` found it (no second walk of the fragments)."""
    if tsuid == _BIG:
        return None
    n_frames = number_of_frames(ds)
    if not layout.encapsulated:
        return _native(ds, layout.value_offset, layout.length, n_frames, file_size)
    if not UID(tsuid).is_encapsulated:
        return None
    return _encapsulated(stream, ds, layout, n_frames)


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
    return FrameIndex.native(offset, frame, n_frames)


def _encapsulated(stream: BinaryIO, ds: Dataset, layout: PixelLayout, n_frames: int) -> FrameIndex | None:
    items = list(layout.items)
    bot = layout.basic_offset_table
    if not items:
        return None
    if n_frames == 1 or len(items) == n_frames:
        return FrameIndex.from_fragments(items, None, n_frames)
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
            return FrameIndex.from_fragments(items, [rel[s] for s in starts], n_frames)
    # Markers: a fragment that starts a codestream starts a frame.
    first_fragments: list[int] = []
    for i, (item_off, _) in enumerate(items):
        stream.seek(item_off + 8)
        lead = stream.read(4)
        if not first_fragments or any(lead.startswith(m) for m in _FRAME_START_MARKERS):
            first_fragments.append(i)
    if len(first_fragments) != n_frames:
        return None
    return FrameIndex.from_fragments(items, first_fragments, n_frames)
