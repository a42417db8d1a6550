"""Where each frame's bytes lie inside a stored blob, in a compact text form the index keeps per instance.

Why compact: the first form (JSON, one ``[offset, length]`` pair per frame) grew to 12.9 MB for an object of
1,000,000 one-pixel frames, and every read of the instance record parsed it (2 s per frame request). Now:

* native pixel data is arithmetic: ``N<first>,<frame length>,<count>``; frame N starts at
  ``first + (N - 1) × frame length`` (a few dozen characters whatever the frame count);
* encapsulated pixel data is ``E<count>,<fragments>,<width>,<first>,<table>;`` followed by base64 of packed
  little-endian integers: the offset of every fragment's item tag relative to ``first`` (``width`` bytes each,
  4 below 4 GiB), plus the end of the last fragment, and, only when frames are neither one fragment each nor all
  fragments of a single frame (``table`` = 1), the index of each frame's first fragment (4 bytes each). Fragments
  are consecutive items, so a fragment's length is the distance to the next item tag less the 8-byte item header.
  Frame N needs a handful of packed entries at computed positions: ``spans`` asks for those characters only
  (the index adapter reads them with SQL ``substr``), never the whole text (1,000,000 one-fragment frames:
  5.3 MB, of which a frame request reads 16 characters);
* text starting with ``{`` is the JSON form of earlier versions, still read: a native one is arithmetic already
  in its first characters (its frames are regular by construction), an encapsulated one is parsed whole, only
  when a frame is asked for.

An instance record carries the index decoded from the first ``HEAD_CHARS`` characters of the text: complete for
native data and for small encapsulated objects, a header to find positions with otherwise.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

#: Characters of the stored text that come with an instance record (native indexes and encapsulated ones of up
#: to ~190 one-fragment frames are complete within them).
HEAD_CHARS = 1024
_ITEM_HEADER = 8
_LEGACY_NATIVE = re.compile(r'^\{"e":false,"f":\[\[\[(\d+),(\d+)\]\]')

#: Reads ``length`` characters (None: to the end) of the stored text from character ``start`` (0-based).
TextReader = Callable[[int, int | None], str]


@dataclass(frozen=True)
class FrameIndex:
    """One instance's frame locations. Build with ``native`` or ``from_fragments``, store ``encode()``, read back
    with ``decode``; ``spans(n, read)`` gives frame n's (offset, length) spans in the blob."""

    encapsulated: bool
    count: int
    #: native: offset of frame 1; encapsulated: offset of the first fragment's item tag
    first: int = 0
    #: native: bytes per frame
    length: int = 0
    fragments: int = 0
    #: bytes per packed offset (encapsulated)
    width: int = 0
    #: whether a frame → first fragment table follows the offsets (encapsulated)
    table: bool = False
    #: the packed entries as base64 text, when loaded; None: read what a frame needs through ``spans``' reader
    packed: str | None = None
    #: characters before the packed text (the header ``E…;``)
    header_chars: int = 0
    #: stored in the earlier JSON form and not loaded yet
    legacy: bool = False

    # -- building --------------------------------------------------------------------------------------------

    @classmethod
    def native(cls, first: int, length: int, count: int) -> FrameIndex:
        return cls(False, count, first, length)

    @classmethod
    def from_fragments(cls, items: list[tuple[int, int]], frame_starts: list[int] | None, count: int) -> FrameIndex:
        """``items``: (item tag offset, data length) of each fragment, consecutive items; ``frame_starts``: index of
        each frame's first fragment, None when each fragment is a frame or all fragments are one frame."""
        if not items:
            raise ValueError("no fragments")
        for (pos, n), (nxt, _) in itertools.pairwise(items):
            if nxt != pos + _ITEM_HEADER + n:
                raise ValueError("fragments are not consecutive items")
        first = items[0][0]
        end = items[-1][0] + _ITEM_HEADER + items[-1][1]
        width = 4 if end - first < 1 << 32 else 8
        code = "<I" if width == 4 else "<Q"
        packed = b"".join(struct.pack(code, pos - first) for pos, _ in items) + struct.pack(code, end - first)
        table = frame_starts is not None and not (len(items) == count or count == 1)
        if table:
            assert frame_starts is not None
            packed += struct.pack(f"<{count + 1}I", *frame_starts, len(items))
        header = f"E{count},{len(items)},{width},{first},{int(table)};"
        return cls(True, count, first, 0, len(items), width, table, base64.b64encode(packed).decode("ascii"),
                   len(header))

    def encode(self) -> str:
        """The stored text (see the module docstring)."""
        if not self.encapsulated:
            return f"N{self.first},{self.length},{self.count}"
        if self.packed is None:
            raise ValueError("an index read partially cannot be stored again")
        return f"E{self.count},{self.fragments},{self.width},{self.first},{int(self.table)};{self.packed}"

    # -- reading ---------------------------------------------------------------------------------------------

    @classmethod
    def decode(cls, text: str, *, complete: bool, frames: int) -> FrameIndex:
        """The index from its stored text, or from its first ``HEAD_CHARS`` characters (``complete`` False).
        ``frames``: the instance's Number of Frames (what a legacy native index held as many spans as)."""
        if text.startswith("N"):
            first, length, count = (int(v) for v in text[1:].split(","))
            return cls.native(first, length, count)
        if text.startswith("E"):
            head, _, rest = text.partition(";")
            count, fragments, width, first, table = (int(v) for v in head[1:].split(","))
            return cls(True, count, first, 0, fragments, width, bool(table), rest if complete else None,
                       len(head) + 1)
        if complete:
            return cls._from_json(text)
        match = _LEGACY_NATIVE.match(text)
        if match:  # legacy native spans are regular: the first one and the count say everything
            return cls.native(int(match.group(1)), int(match.group(2)), max(1, frames))
        return cls(True, max(1, frames), legacy=True)

    @classmethod
    def _from_json(cls, text: str) -> FrameIndex:
        data = json.loads(text)
        frames = [[(int(o), int(n)) for o, n in fr] for fr in data["f"]]
        if not data["e"]:
            return cls.native(frames[0][0][0], frames[0][0][1], len(frames))
        items = [(o - _ITEM_HEADER, n) for fr in frames for o, n in fr]
        starts: list[int] = []
        k = 0
        for fr in frames:
            starts.append(k)
            k += len(fr)
        return cls.from_fragments(items, starts, len(frames))

    def pixel_span(self) -> tuple[int, int] | None:
        """(offset, length) of all native pixel data; None for encapsulated data."""
        return None if self.encapsulated else (self.first, self.length * self.count)

    def spans(self, number: int, read: TextReader) -> tuple[tuple[int, int], ...]:
        """(offset, length) of each piece of frame ``number`` (1-based, at most ``count``): one for native data,
        one per fragment for encapsulated data. ``read`` fetches parts of the stored text this record lacks."""
        if not 1 <= number <= self.count:
            raise IndexError(f"frame {number} is not in the index")
        if not self.encapsulated:
            return ((self.first + (number - 1) * self.length, self.length),)
        if self.legacy:
            return FrameIndex._from_json(read(0, None)).spans(number, read)
        if self.fragments == self.count:
            lo, hi = number - 1, number
        elif self.count == 1:
            lo, hi = 0, self.fragments
        else:
            base = (self.fragments + 1) * self.width
            lo, hi = struct.unpack("<2I", self._bytes(base + (number - 1) * 4, 8, read))
        code = "<I" if self.width == 4 else "<Q"
        raw = self._bytes(lo * self.width, (hi - lo + 1) * self.width, read)
        offsets = [self.first + v for (v,) in struct.iter_unpack(code, raw)]
        return tuple((pos + _ITEM_HEADER, nxt - pos - _ITEM_HEADER)
                     for pos, nxt in itertools.pairwise(offsets))

    def _bytes(self, start: int, length: int, read: TextReader) -> bytes:
        """``length`` bytes of the packed entries from byte ``start``: the base64 characters covering them."""
        first_char = start // 3 * 4
        end_char = -(-(start + length) // 3) * 4
        if self.packed is not None:
            text = self.packed[first_char:end_char]
        else:
            text = read(self.header_chars + first_char, end_char - first_char)
        skip = start - first_char // 4 * 3
        data = base64.b64decode(text)[skip : skip + length]
        if len(data) != length:
            raise ValueError("the stored frame index is shorter than its header says")
        return data
