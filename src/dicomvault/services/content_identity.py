"""Is a re-sent object the same data set as the stored one, whatever its encoding?

Ingest recognises an identical re-send by its SHA-256. The same data set can arrive as other bytes, though: from
another calling AE title (our File Meta names it), through another toolkit (Implementation Version Name), or in
another transfer syntax's encoding (``storescu -xi``: implicit instead of explicit VR; dcmtk drops group lengths
and trailing padding). Refusing those as "different content" told modalities and ``dicomvault import`` that an
object already safely archived was in conflict (issue #10). So, only on the rare path where a SOP Instance UID is
already stored with other bytes, both objects are reduced to a digest of their content:

- group 0002 (File Meta) is left out, and so are group lengths (gggg,0000) and Data Set Trailing Padding
  (FFFC,FFFC): they describe the encoding, not the data set;
- each element counts as its tag and its value bytes, which are the same in implicit and explicit VR little
  endian; values of binary VRs read in big endian are byte-swapped first. A VR is not part of the identity (an
  implicit VR object has none to compare);
- sequences count item by item, so defined and undefined lengths compare equal; an implicit VR value whose VR is
  unknown (a private sequence) but that starts with an item tag counts as the sequence it encodes;
- pixel data (native or encapsulated) is hashed straight from the stream in chunks, fragment by fragment for
  encapsulated data: a multi-GB object costs a few megabytes of memory. Compressed pixel data is compared as the
  encapsulated bytes (the same image in another compression is another object).

Everything but pixel data is read like ingest reads a header (``services.header``: deferred large values, and a
deflated data set inflated within ``limits`` into a spool), so the memory bound is ingest's own. Deferred values
are hashed from the stream in chunks; sequences are read into memory (no real sequence is large).
"""

from __future__ import annotations

import array
import hashlib
import struct
from typing import IO, Any, BinaryIO, cast

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_data_element
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from dicomvault.dicom import tables
from dicomvault.domain.errors import MalformedDicom
from dicomvault.services import header as hdr
from dicomvault.services.frames import PIXEL_TAGS
from dicomvault.services.inflate import Limits

CHUNK = 1 << 20  # a multiple of every swap width
#: values above this are not held in memory to be hashed (deferred and hashed from the stream)
DEFER = 64 * 1024
#: an unknown-VR value this large is hashed as bytes, not parsed as a sequence (kept in memory to parse)
MAX_UNKNOWN_SEQUENCE = 16 << 20
#: what reading damaged bytes raises (``services.header``), and deep nesting
_UNREADABLE: tuple[type[Exception], ...] = (RecursionError, *hdr._PYDICOM_ERRORS)
_ITEM = 0xFFFEE000
_SEQ_DELIM = 0xFFFEE0DD
_TRAILING_PADDING = 0xFFFCFFFC
_ITEM_TAG_LE = b"\xfe\xff\x00\xe0"
#: width of one value for the VRs whose bytes depend on endianness
_SWAP_WIDTH = {"US": 2, "SS": 2, "OW": 2, "AT": 2, "UL": 4, "SL": 4, "FL": 4, "OF": 4, "OL": 4,
               "FD": 8, "OD": 8, "SV": 8, "UV": 8, "OV": 8}
#: string VRs: trailing spaces (NUL for UI) are padding, not content (PS3.5 6.2); dcmtk drops them when it
#: re-encodes, e.g. ``DERIVED\\OTHER  `` becomes ``DERIVED\\OTHER``. Only for public tags, whose VR is known
#: whatever the encoding
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
                       "UR", "UT"})
_ARRAY_CODE = {2: "H", 4: "I", 8: "Q"}
_LONG_LENGTH_VRS = tables.LONG_LENGTH_VRS


def same_content(received: BinaryIO, stored: BinaryIO, limits: Limits) -> bool:
    """True when both Part 10 objects hold the same data set (see the module docstring); ``MalformedDicom`` when
    either cannot be read (for the stored copy: it is damaged)."""
    return content_digest(received, limits) == content_digest(stored, limits)


def content_digest(stream: BinaryIO, limits: Limits) -> str:
    """SHA-256 over the data set's content, independent of its transfer syntax's encoding."""
    parsed = hdr.parse_header(stream, limits)
    try:
        source: IO[bytes] | BinaryIO = parsed.inflated if parsed.inflated is not None else stream
        syntax = parsed.transfer_syntax_uid
        implicit = syntax == ImplicitVRLittleEndian
        little = syntax != ExplicitVRBigEndian
        digest = hashlib.sha256()
        try:
            _dataset(parsed.dataset, source, digest)
            if parsed.pixel_data_offset is not None:
                _rest(source, parsed.pixel_data_offset, implicit, little, digest)
        except _UNREADABLE as exc:
            hdr._reraise_io_failure(exc)
            raise MalformedDicom(f"malformed DICOM object ({type(exc).__name__})") from exc
        return digest.hexdigest()
    finally:
        parsed.close()


def _skipped(tag: int) -> bool:
    return tag >> 16 == 0x0002 or tag & 0xFFFF == 0 or tag == _TRAILING_PADDING


def _dataset(ds: Dataset, source: IO[bytes] | BinaryIO, digest: Any) -> None:
    for tag in sorted(int(t) for t in ds.keys()):  # noqa: SIM118 - iterating a Dataset converts its elements
        if not _skipped(tag):
            _element(ds.get_item(tag, keep_deferred=True), source, digest)


def _element(elem: RawDataElement | DataElement, source: IO[bytes] | BinaryIO, digest: Any) -> None:
    tag = int(elem.tag)
    head = struct.pack("<I", tag)
    if isinstance(elem, DataElement):
        if elem.VR == "SQ":
            _sequence(head, elem.value, source, digest)
            return
        # Converted while reading (pydicom decodes Specific Character Set at once, the header reader a few pixel
        # module attributes): compared as the bytes it encodes to, like any other value.
        elem = _as_raw(elem)
    known = _public_vr(tag)
    vr = elem.VR or known  # implicit VR: the dictionary's, when the tag is public
    if vr == "SQ" or (vr in (None, "UN") and elem.length <= MAX_UNKNOWN_SEQUENCE and _starts_with_item(elem, source)):
        from pydicom.values import convert_SQ

        value = elem.value if elem.value is not None else _read(source, elem.value_tell, elem.length)
        try:
            items = convert_SQ(value, elem.is_implicit_VR if vr == "SQ" else True,
                               elem.is_little_endian if vr == "SQ" else True)
        except hdr._PYDICOM_ERRORS:
            if vr == "SQ":
                raise
        else:
            _sequence(head, items, source, digest)
            return
    width = 0 if elem.is_little_endian else _SWAP_WIDTH.get(vr or "", 0)
    if elem.value is not None:
        value = elem.value.rstrip(b" \0") if known in _TEXT_VRS else elem.value
        digest.update(head + b"B" + struct.pack("<Q", len(value)) + _little(value, width))
    else:
        digest.update(head + b"B" + struct.pack("<Q", elem.length))
        _hash_range(source, elem.value_tell, elem.length, width, digest)


def _as_raw(elem: DataElement) -> RawDataElement:
    """A decoded element back as its little endian value bytes."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = True
    write_data_element(fp, elem)
    value = fp.getvalue()[8:]  # after tag and length
    return RawDataElement(elem.tag, elem.VR, len(value), value, 0, True, True)


def _public_vr(tag: int) -> str | None:
    """The dictionary's VR of a public tag (None for private tags: the same on both sides of a comparison, whether
    or not an explicit VR encoding named one)."""
    if tag >> 16 & 1:
        return None
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


def _starts_with_item(elem: RawDataElement, source: IO[bytes] | BinaryIO) -> bool:
    if elem.length == 0xFFFFFFFF:
        return False
    first = elem.value[:4] if elem.value is not None else _read(source, elem.value_tell, 4)
    return first == _ITEM_TAG_LE


def _sequence(head: bytes, items: Any, source: IO[bytes] | BinaryIO, digest: Any) -> None:
    digest.update(head + b"S" + struct.pack("<Q", len(items)))
    for item in items:
        digest.update(b"I")
        _dataset(item, source, digest)
        digest.update(b"E")


def _read(source: IO[bytes] | BinaryIO, offset: int, length: int) -> bytes:
    source.seek(offset)
    data = source.read(length)
    if len(data) != length:
        raise MalformedDicom("the object is truncated")
    return data


def _little(data: bytes, width: int) -> bytes:
    """``data`` (a whole number of ``width``-byte values, big endian) in little endian; as is for width 0."""
    if width == 0 or len(data) % width:
        return data
    values = array.array(_ARRAY_CODE[width], data)
    values.byteswap()
    return values.tobytes()


def _hash_range(source: IO[bytes] | BinaryIO, offset: int, length: int, width: int, digest: Any) -> None:
    source.seek(offset)
    left = length
    while left:
        chunk = source.read(min(CHUNK, left))
        if not chunk:
            raise MalformedDicom("the object is truncated")
        digest.update(_little(chunk, width))
        left -= len(chunk)


def _rest(source: IO[bytes] | BinaryIO, offset: int, implicit: bool, little: bool, digest: Any) -> None:
    """Pixel data elements from ``offset`` on, hashed from the stream, and whatever elements follow them."""
    source.seek(0, 2)
    size = source.tell()
    pos = offset
    while pos < size:
        source.seek(pos)
        tag_bytes = source.read(4)
        if len(tag_bytes) < 4:
            break
        group, element = struct.unpack("<HH" if little else ">HH", tag_bytes)
        if (group << 16 | element) in PIXEL_TAGS:
            pos = _pixel_element(source, pos, implicit, little, digest)
            continue
        source.seek(pos)
        trailing = read_dataset(cast(BinaryIO, source), implicit, little,
                                stop_when=lambda t, _vr, _n: int(t) in PIXEL_TAGS, defer_size=DEFER)
        _dataset(trailing, source, digest)
        after = source.tell()
        if after <= pos:
            break
        pos = after


def _pixel_element(source: IO[bytes] | BinaryIO, pos: int, implicit: bool, little: bool, digest: Any) -> int:
    """Hash the pixel data element at ``pos``; returns the offset after it."""
    order = "<" if little else ">"
    source.seek(pos)
    head = source.read(8)
    if len(head) < 8:
        raise MalformedDicom("the object is truncated")
    group, element = struct.unpack(order + "HH", head[:4])
    tag = group << 16 | element
    vr: str | None = None
    if implicit:
        (length,) = struct.unpack(order + "I", head[4:8])
    else:
        vr = head[4:6].decode("ascii", "replace")
        if vr in _LONG_LENGTH_VRS:
            (length,) = struct.unpack(order + "I", source.read(4))
        else:
            (length,) = struct.unpack(order + "H", head[6:8])
    start = source.tell()
    out = struct.pack("<I", tag)
    if length != 0xFFFFFFFF:
        digest.update(out + b"B" + struct.pack("<Q", length))
        _hash_range(source, start, length, 0 if little else _SWAP_WIDTH.get(vr or "", 0), digest)
        return start + length
    digest.update(out + b"F")  # encapsulated: fragment by fragment (always little endian)
    at = start
    while True:
        source.seek(at)
        item = source.read(8)
        if len(item) < 8:
            raise MalformedDicom("the object is truncated")
        item_group, item_element, item_length = struct.unpack("<HHI", item)
        item_tag = item_group << 16 | item_element
        at += 8
        if item_tag == _SEQ_DELIM:
            digest.update(b"D")
            return at
        if item_tag != _ITEM or item_length == 0xFFFFFFFF:
            raise MalformedDicom("malformed encapsulated pixel data")
        digest.update(b"I" + struct.pack("<Q", item_length))
        _hash_range(source, at, item_length, 0, digest)
        at += item_length
