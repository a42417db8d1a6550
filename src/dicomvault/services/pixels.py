"""Header reads and single-frame decoding for WADO-RS frames, rendering and bulk data.

A frame is decoded from its own bytes (one byte-range read through ``RetrieveService.frame``) wrapped in a tiny
one-frame dataset that carries the stored pixel module, so frame 900 of a 1000-frame object costs the same as
frame 1 and the rest of the pixel data is never read or decoded. Before decoding, the decoded size is checked
against ``max_decoded_bytes`` and a flagged object's pixel problem is answered. Bulk data values are streamed
(``BulkValue``): by range from the stored object, or, for a deflated object, from its inflated spool.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import UID, ExplicitVRLittleEndian

from dicomvault.dicom import lossless, tables
from dicomvault.domain.errors import DamagedPixelData, NotFound, Unavailable, Unsupported
from dicomvault.domain.records import InstanceRecord
from dicomvault.services.frames import PIXEL_TAGS, decoded_frame_bytes, pixel_element
from dicomvault.services.retrieve import RetrieveService

NATIVE = tables.NATIVE_SYNTAXES
_PIXEL_MODULE = (
    "Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    "PhotometricInterpretation", "PlanarConfiguration",
)


#: Decoder result keys → the attribute describing the decoded pixels.
_META_KEYWORDS = {
    "photometric_interpretation": "PhotometricInterpretation", "bits_allocated": "BitsAllocated",
    "bits_stored": "BitsStored", "samples_per_pixel": "SamplesPerPixel", "planar_configuration": "PlanarConfiguration",
    "pixel_representation": "PixelRepresentation",
}


def read_header(retrieve: RetrieveService, record: InstanceRecord) -> Dataset:
    """The stored object's dataset up to (not including) its pixel data."""
    return retrieve.header(record)


def is_image(header: Dataset) -> bool:
    return "Rows" in header and "Columns" in header and "BitsAllocated" in header


def frame_dataset(header: Dataset, stored_ts: str, frame: bytes) -> Dataset:
    """A one-frame dataset holding ``frame`` (bytes as ``RetrieveService.frame`` returns them: native frames are
    already little endian, encapsulated frames are the codestream)."""
    ds = Dataset()
    for keyword in _PIXEL_MODULE:
        if keyword in header:
            setattr(ds, keyword, header[keyword].value)
    ds.NumberOfFrames = 1
    ds.file_meta = FileMetaDataset()
    ts = UID(stored_ts)
    if stored_ts in NATIVE or not ts.is_encapsulated:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        expected = _native_frame_length(ds)
        if expected and len(frame) > expected:
            frame = frame[:expected]
        ds.PixelData = frame
    else:
        ds.file_meta.TransferSyntaxUID = ts
        ds.PixelData = encapsulate([frame])
    return ds


def _native_frame_length(ds: Dataset) -> int:
    try:
        bits = int(ds.BitsAllocated)
        n = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return 0
    if bits == 1:
        return (n + 7) // 8
    if ds.get("PhotometricInterpretation") == "YBR_FULL_422":
        return int(ds.Rows) * int(ds.Columns) * 2 * bits // 8
    return n * bits // 8


def decode_frame(
    retrieve: RetrieveService, record: InstanceRecord, number: int, header: Dataset | None = None
) -> tuple[np.ndarray, Dataset]:
    """Frame ``number`` (1-based) decoded to an array, plus the dataset describing the decoded pixels (its
    PhotometricInterpretation is RGB when a YBR codestream was converted). Raises ``NotFound``/``Unsupported``."""
    header = header if header is not None else read_header(retrieve, record)
    if not is_image(header):
        raise Unsupported("the object has no image pixel data")
    if record.pixel_problem:
        raise DamagedPixelData(record.pixel_problem)
    # Checked before any byte is decoded: a 1 MiB RLE object can describe a 128 MiB frame.
    retrieve.check_memory(decoded_frame_bytes(header), f"decoding frame {number} of this instance")
    data = retrieve.frame(record, number)
    ds = frame_dataset(header, record.transfer_syntax_uid, data)
    try:
        decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
        arr, meta = decoder.as_array(ds, index=0)
    except Exception as exc:
        name = UID(record.transfer_syntax_uid).name or record.transfer_syntax_uid
        raise Unsupported(f"frame cannot be decoded from {name}: {type(exc).__name__}") from exc
    described = Dataset()
    for keyword in _PIXEL_MODULE:
        if keyword in ds:
            setattr(described, keyword, ds[keyword].value)
    for key, keyword in _META_KEYWORDS.items():
        if meta.get(key) is not None:
            value = meta[key]
            setattr(described, keyword, str(getattr(value, "value", value)) if key == "photometric_interpretation"
                    else int(value))
    return arr, described


def native_frame_bytes(retrieve: RetrieveService, record: InstanceRecord, number: int) -> bytes:
    """Frame ``number`` decoded to native little-endian bytes (the octet-stream form of PS3.18 Table 8.7.3-4),
    interleaved samples, RGB when the codestream was YBR. For an instance compressed at rest: the frame exactly as
    the original held it (``dicom.lossless.decode_frame``), as it was served before the object was compressed."""
    if record.original is not None:
        if record.pixel_problem:
            raise DamagedPixelData(record.pixel_problem)
        layout = lossless.FrameLayout.from_dict(record.original.layout)
        return lossless.decode_frame(retrieve.frame(record, number), record.transfer_syntax_uid, layout)
    arr, _ = decode_frame(retrieve, record, number)
    return np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("<"), copy=False)).tobytes()


def can_decode(stored_ts: str) -> bool:
    """Whether a decoder plugin is installed for ``stored_ts`` (native data always 'decodes')."""
    if stored_ts in NATIVE:
        return True
    try:
        return bool(get_decoder(UID(stored_ts)).is_available)
    except Exception:
        return False


@dataclass
class BulkValue:
    """A bulk data value to stream: ``size`` bytes, ``chunks(offset, length)`` produces a part of them. ``close``
    releases what it holds (a deflated object's inflated spool): call it when done, or let ``chunks`` run out."""

    size: int
    chunks: Callable[[int, int], Iterator[bytes]]
    close: Callable[[], None] = lambda: None


def bytes_value(data: bytes) -> BulkValue:
    return BulkValue(len(data), lambda offset, length: iter((data[offset:offset + length],)))


def blob_value(retrieve: RetrieveService, record: InstanceRecord, offset: int, size: int) -> BulkValue:
    """``size`` bytes of the stored object from ``offset``, read by range when streamed."""
    return BulkValue(size, lambda start, length: iter_range(retrieve, record, offset + start, length))


def native_pixel_value(retrieve: RetrieveService, record: InstanceRecord, offset: int, length: int) -> BulkValue:
    """The native Pixel Data value whose frames the frame index places at ``offset`` (``length`` bytes): with its
    pad byte when the frames' length is odd and the element says so (PS3.5 7.1.1: a value's length is even, so an
    odd length of frames is followed by a pad byte that belongs to the value), as a deflated object's value and the
    original of an instance compressed at rest (``original_pixel_value``) are given; one read of the 4-byte value
    length before the value (explicit and implicit VR alike), only then."""
    if length & 1 and offset >= 4:
        declared = b"".join(iter_range(retrieve, record, offset - 4, 4))
        if int.from_bytes(declared, "little") == length + 1:
            length += 1
    return blob_value(retrieve, record, offset, length)


def bulk_value(retrieve: RetrieveService, record: InstanceRecord, tag: int) -> BulkValue:
    """A top-level element's value (pixel data only for a deflated object: others' are served by frame): read by
    range from the stored object when it is large, else held. Raises ``NotFound``."""
    if retrieve.is_deflated(record):
        return _inflated_value(retrieve, record, tag)
    if record.transfer_syntax_uid == "1.2.840.10008.1.2.2":
        return bytes_value(_value_bytes(retrieve.read_dataset(record, stop_before_pixels=True), tag))
    with retrieve.open(record) as f:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, defer_size=1024, force=True)
        except Unavailable:  # a store down or an object not restored: not the object's fault
            raise
        except Exception as exc:
            raise Unsupported(f"the stored object cannot be parsed: {type(exc).__name__}") from exc
        raw: Any = ds.get_item(tag, keep_deferred=True)
    if raw is None:
        raise NotFound("the instance has no such attribute")
    if getattr(raw, "is_raw", False) and raw.value is None and raw.length not in (0, 0xFFFFFFFF):
        return blob_value(retrieve, record, int(raw.value_tell), int(raw.length))
    return bytes_value(_value_bytes(ds, tag))


def _inflated_value(retrieve: RetrieveService, record: InstanceRecord, tag: int) -> BulkValue:
    """A value of a deflated object, from its inflated spool (kept open until the value has been streamed)."""
    found = retrieve.open_inflated(record)
    try:
        ds = found.dataset(defer_size=1024)
        if tag in PIXEL_TAGS:
            if record.pixel_problem:
                raise DamagedPixelData(record.pixel_problem)
            located = pixel_element(found.file, ExplicitVRLittleEndian, found.file.tell())
            if located is None:
                raise NotFound("the instance has no pixel data")
            value_offset, size = located
        else:
            raw: Any = ds.get_item(tag, keep_deferred=True)
            if raw is None:
                raise NotFound("the instance has no such attribute")
            if not (getattr(raw, "is_raw", False) and raw.value is None and raw.length not in (0, 0xFFFFFFFF)):
                data = _value_bytes(ds, tag)
                found.close()
                return bytes_value(data)
            value_offset, size = int(raw.value_tell), int(raw.length)
    except BaseException:
        found.close()
        raise

    def chunks(start: int, length: int) -> Iterator[bytes]:
        try:
            found.file.seek(value_offset + start)
            left = length
            while left > 0:
                data = found.file.read(min(1 << 20, left))
                if not data:
                    raise NotFound("the inflated object is shorter than its header says")
                left -= len(data)
                yield data
        finally:
            found.close()

    return BulkValue(size, chunks, found.close)


def original_pixel_value(retrieve: RetrieveService, record: InstanceRecord) -> BulkValue:
    """The native Pixel Data value of an instance compressed at rest, as the original held it (the metadata
    describes the original): frames decoded one at a time as the requested range needs them."""
    assert record.original is not None
    layout = lossless.FrameLayout.from_dict(record.original.layout)
    size = layout.frame_length * layout.number_of_frames
    # the value's length as received, pad byte included (a record from before the length was kept: even-padded)
    total = record.original.pixel_length or size + (size & 1)

    def chunks(start: int, length: int) -> Iterator[bytes]:
        end = min(start + length, total)
        first = start // layout.frame_length
        for i in range(first, layout.number_of_frames):
            lo = i * layout.frame_length
            if lo >= end:
                return
            frame = lossless.decode_frame(retrieve.frame(record, i + 1), record.transfer_syntax_uid, layout)
            yield frame[max(start - lo, 0):end - lo]
        if end > size:
            yield bytes(end - max(start, size))

    return BulkValue(total, chunks)


def nested_value(retrieve: RetrieveService, record: InstanceRecord, path: list[tuple[int, int]], tag: int) -> bytes:
    """The value of ``tag`` inside nested sequence items: ``path`` is [(sequence tag, item index), ...] from the top
    level down (the ``bulk/<seq>/<item>/<tag>`` URIs of the cached metadata). Raises ``NotFound``."""
    ds = retrieve.read_dataset(record, stop_before_pixels=True)
    for seq_tag, index in path:
        if seq_tag not in ds or ds[seq_tag].VR != "SQ" or index >= len(ds[seq_tag].value):
            raise NotFound("the instance has no such sequence item")
        ds = ds[seq_tag].value[index]
    return _value_bytes(ds, tag)


def iter_range(retrieve: RetrieveService, record: InstanceRecord, offset: int, length: int,
               chunk: int = 1 << 20) -> Iterator[bytes]:
    """``length`` bytes of the stored object from ``offset``, in chunks (bulk data of any size, bounded memory)."""
    with retrieve.open(record) as f:
        f.seek(offset)
        left = length
        while left > 0:
            data = f.read(min(chunk, left))
            if not data:
                raise NotFound("the stored object is shorter than its header says")
            left -= len(data)
            yield data


def _value_bytes(ds: Dataset, tag: int) -> bytes:
    if tag not in ds:
        raise NotFound("the instance has no such attribute")
    elem = ds[tag]
    if elem.VR == "SQ":
        raise NotFound("a sequence has no bulk data value")
    value = elem.value
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    raw = ds.get_item(tag)
    raw_value = getattr(raw, "value", None)
    if isinstance(raw_value, bytes | bytearray):
        return bytes(raw_value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise Unsupported("this attribute has no bulk data form")
