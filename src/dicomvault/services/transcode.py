"""Transfer syntax conversion through pydicom's pixel plugins (pylibjpeg, openjpeg, libjpeg, pyjpegls, RLE).

Used only when a peer cannot take the stored syntax: a C-GET/C-MOVE destination that did not propose it, or a
WADO-RS request for a specific syntax. Stored objects are never transcoded silently.
"""

from __future__ import annotations

import copy

import numpy
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import pack_bits
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from dicomvault.dicom import tables
from dicomvault.domain.errors import Unsupported

PIXEL_DATA = Tag(0x7FE0, 0x0010)
UNCOMPRESSED = {ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian}
#: Syntaxes whose stored object is as large as its decoded form.
NATIVE_UNDEFLATED = tables.NATIVE_UNDEFLATED
#: Lossless syntaxes we can encode to (pydicom encoders available with the pinned plugins).
ENCODABLE = {RLELossless, JPEGLSLossless, JPEG2000Lossless, "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.57"}


def can_transcode(source_ts: str, target_ts: str) -> bool:
    if source_ts == target_ts:
        return True
    if target_ts in UNCOMPRESSED:
        return True  # decoding is supported for every compressed syntax pydicom's plugins read
    # A compressed source is decoded first: a requestor that accepted only a lossless syntax (a C-GET context in
    # which it proposed JPEG 2000 Lossless first) still gets a lossy original, without further loss.
    return target_ts in {RLELossless, JPEGLSLossless, JPEG2000Lossless}


def to_syntax(ds: Dataset, target_ts: str) -> Dataset:
    """A copy of ``ds`` encoded in ``target_ts``; raises ``Unsupported`` with the reason."""
    source = UID(ds.file_meta.TransferSyntaxUID)
    target = UID(target_ts)
    if source == target:
        return ds
    out = copy.deepcopy(ds)
    try:
        if "PixelData" not in out:
            out.file_meta.TransferSyntaxUID = target
            return out
        if source.is_compressed:
            out.decompress(generate_instance_uid=False)  # now native little endian
        little = True if source.is_compressed else source.is_little_endian
        if not target.is_compressed and little != target.is_little_endian:
            swap_byte_order(out)
        if target.is_compressed:
            if not can_transcode(ExplicitVRLittleEndian, target):
                raise Unsupported(f"cannot encode to {target.name or target}")
            out.compress(target, generate_instance_uid=False)
        else:
            out.file_meta.TransferSyntaxUID = target
    except Unsupported:
        raise
    except Exception as exc:
        raise Unsupported(f"cannot transcode {source.name or source} to {target.name or target}: {exc}") from exc
    out.file_meta.TransferSyntaxUID = target
    return out


#: Bytes per value of the VRs whose values pydicom keeps as raw bytes in the data set's byte order.
_SWAPPED_VRS = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def swap_byte_order(ds: Dataset) -> None:
    """Reverse the byte order of every raw word value (OW/OL/OF/OD/OV, nested sequences included) in place: for a
    change between little and big endian, which pydicom does not do when writing (numbers it decoded, such as US
    or FL values, are re-encoded in the target order by itself). Pixel Data words are BitsAllocated bits wide."""
    width = max(int(ds.get("BitsAllocated", 16) or 16) // 8, 2) if "PixelData" in ds else 2

    def swap(value: bytes, size: int) -> bytes:
        if size < 2 or len(value) % size:
            return value
        return bytes(numpy.frombuffer(value, dtype=f"u{size}").byteswap().tobytes())

    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                swap_byte_order(item)
        elif elem.VR in _SWAPPED_VRS and isinstance(elem.value, bytes | bytearray):
            size = width if elem.tag == PIXEL_DATA and elem.VR == "OW" else _SWAPPED_VRS[elem.VR]
            elem.value = swap(bytes(elem.value), size)


def frame_from_dataset(ds: Dataset, number: int) -> bytes:
    """Frame bytes (stored syntax) taken from a fully read dataset: the slow path when no index exists."""
    ts = UID(ds.file_meta.TransferSyntaxUID)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    if ts.is_encapsulated:
        for i, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=n), start=1):
            if i == number:
                return bytes(frame)
        raise Unsupported("frame not found in encapsulated pixel data")
    arr = ds.pixel_array
    pixels = arr[number - 1] if n > 1 else arr
    if int(ds.get("BitsAllocated", 8) or 8) == 1:
        return pack_bits(pixels)  # native 1-bit frames are bit-packed (pixel_array unpacks them to bytes)
    return bytes(pixels.astype(pixels.dtype.newbyteorder("<")).tobytes())
