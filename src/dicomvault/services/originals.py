"""The object as received, rebuilt from its losslessly compressed blob and the recipe the index keeps for it.

An instance compressed at rest (``services.compression``) has a blob holding a Part 10 object in a lossless
syntax (one fragment per frame) and, in ``blob_originals``, its recipe: the original's bytes before and after the
Pixel Data value and the layout of its native frames. The original is, byte for byte::

    head  +  decode(fragment 1) + … + decode(fragment N)  [+ b"\\0" up to the value's recorded length]  +  tail

(the zero is the pad byte of a conformant odd-length value: its frames are one byte shorter than the value; a
non-conformant odd-length value without a pad byte gets none, as it came).

streamed here in that order, frame by frame (one frame decoded in memory at a time, whatever the object's size),
from one sequential read of the compressed blob. ``dicom.lossless.decode_frame`` gives each frame the original's
bit patterns (byte order, planar configuration, the bits above Bits Stored), which is what makes the SHA-256 of
the result the SHA-256 of what was received: ``services.compression`` checks exactly that before it switches an
instance, and ``prove`` checks it again whenever fixity asks for the deep proof.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from typing import BinaryIO

from dicomvault.dicom import lossless
from dicomvault.domain.errors import IntegrityFailure
from dicomvault.domain.records import OriginalRecipe

_ITEM = 0xE000FFFE  # (FFFE,E000) read as one little-endian 32-bit number: group in the low half
_SEQUENCE_END = 0xE0DDFFFE
_SKIP = 1 << 16


def _skip(f: BinaryIO, n: int) -> None:
    """Move ``n`` bytes forward in a stream that may not seek (an S3 body)."""
    while n > 0:
        data = f.read(min(n, _SKIP))
        if not data:
            raise IntegrityFailure("the compressed object ends before its pixel data")
        n -= len(data)


def _read_exact(f: BinaryIO, n: int) -> bytes:
    parts: list[bytes] = []
    while n > 0:
        data = f.read(n)
        if not data:
            raise IntegrityFailure("the compressed object ends inside its pixel data")
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


def iter_fragments(f: BinaryIO, first_item: int, count: int) -> Iterator[bytes]:
    """The values of ``count`` consecutive fragment items, the first one's item tag at byte ``first_item`` of the
    stream (``FrameIndex.first`` of an encapsulated object), ``f`` positioned at its start."""
    _skip(f, first_item)
    for _ in range(count):
        tag, length = struct.unpack("<II", _read_exact(f, 8))
        if tag != _ITEM or length == 0xFFFFFFFF:
            raise IntegrityFailure("the compressed object's fragments are not where its frame index says")
        yield _read_exact(f, length)


def iter_original(compressed: BinaryIO, syntax: str, first_item: int, recipe: OriginalRecipe) -> Iterator[bytes]:
    """The original object's bytes, from the stream of its compressed form (in ``syntax``, its first fragment's
    item at ``first_item``) and ``recipe``."""
    layout = lossless.FrameLayout.from_dict(recipe.form.layout)
    # ``pixel_length`` is the Pixel Data value's length in the original, pad byte included: the frames fill it but
    # for that byte (``lossless.eligibility`` requires it to be zero).
    pad = recipe.pixel_length - layout.frame_length * layout.number_of_frames
    if pad not in (0, 1):
        raise IntegrityFailure(f"the recipe's pixel data length {recipe.pixel_length} does not fit its frames")
    yield recipe.head
    for fragment in iter_fragments(compressed, first_item, layout.number_of_frames):
        yield lossless.decode_frame(fragment, syntax, layout)
    if pad:
        yield b"\0"
    yield recipe.tail


def prove(compressed: BinaryIO, syntax: str, first_item: int, recipe: OriginalRecipe) -> str | None:
    """None when the rebuilt original has the recorded size and SHA-256, else what differs."""
    digest = hashlib.sha256()
    size = 0
    try:
        for chunk in iter_original(compressed, syntax, first_item, recipe):
            digest.update(chunk)
            size += len(chunk)
    except (IntegrityFailure, lossless.LosslessError) as exc:
        return f"the original cannot be rebuilt: {exc}"
    except Exception as exc:  # a codec's own error on a damaged codestream
        return f"the original cannot be rebuilt: {type(exc).__name__}"
    if size != recipe.form.size:
        return f"the rebuilt original is {size} bytes, {recipe.form.size} were received"
    if digest.hexdigest() != recipe.form.sha256:
        return "the rebuilt original's SHA-256 differs from the one received"
    return None


__all__ = ["iter_fragments", "iter_original", "prove"]
