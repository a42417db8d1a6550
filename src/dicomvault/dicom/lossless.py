"""Lossless re-encoding of native pixel data, frame by frame, proved to give back the original bytes (issue #11, 4).

Three pieces the compression-at-rest policy stands on:

* ``eligibility(ds)``: None when the object's native pixel data can be compressed and restored bit for bit, else
  a short reason that the archive records and shows (the object then stays as it is).
* ``encode_frames(ds, syntax)``: one codestream per frame (PS3.5 A.4: one fragment per frame, so that reading a
  frame of the stored object stays one read), checked by decoding each one before it is returned.
* ``decode_frame(data, syntax, layout)``: a frame's bytes exactly as the original stored them: byte order, planar
  configuration, and for signed data the bits above Bits Stored as the original had them (sign-extended or zero).

Encoding goes through pydicom's own encoders (``pydicom.pixels.encoders``: pyjpegls for JPEG-LS, pylibjpeg-openjpeg
for JPEG 2000), which already cut frames, resize containers and reorder planes the way the codecs expect; decoding
calls the codec libraries directly, because pydicom's decoders return *values* (sign-corrected, possibly converted)
whereas the archive must give back the original *bit patterns*, and going from values back to patterns is the part
that needs the layout recorded here.

HTJ2K (1.2.840.10008.1.2.4.201) is decoded by pylibjpeg-openjpeg (OpenJPEG reads HTJ2K since 2.5) but there is no
encoder on this project's Python: pydicom 3.0 has none, OpenJPEG does not write HTJ2K, and every ``ojph`` release
with a wheel (OpenJPH bindings) needs Python >= 3.12 while the project runs on 3.11 (the 0.1.x source releases need
an OpenJPH newer than Debian 12's 0.9). ``encode_frames`` says so with ``CodecUnavailable``. The decode path is
tested on OpenJPH's codestreams: bit-exact for unsigned data, but OpenJPEG misreads the negative samples of OpenJPH
0.9's signed codestreams, so an HTJ2K encoder added later must keep ``verify`` on (docs/benchmarks.md, section 8).

What this module does not do (the storage integration does): rebuild the whole original object. The frames it
gives back are the Pixel Data value; the object is the original's bytes before that value, the frames, a zero pad
byte when the length is odd, and the original's bytes after it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels.encoders.base import ENCODING_PROFILES, get_encoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
)

#: The lossless syntaxes the policy may choose, in the order of the issue.
LOSSLESS_SYNTAXES: tuple[str, ...] = (str(HTJ2KLossless), str(JPEGLSLossless), str(JPEG2000Lossless))
_J2K_FAMILY = frozenset({str(HTJ2KLossless), str(JPEG2000Lossless)})
_NATIVE = frozenset({str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)})
#: Smallest frame worth (and safely able) to compress; see ``_codec_reason``.
MIN_FRAME_BYTES = 256
_J2K_MIN_SIDE = 32
_MONO = frozenset({"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR"})
_COLOUR = frozenset({"RGB", "YBR_FULL"})


#: Codec names of the configuration (``compress_on_ingest``, a rule's ``compress``) → transfer syntax UID.
#: ``htj2k`` is known so that configuring it gets a clear refusal (no encoder) rather than "unknown codec".
CODECS: dict[str, str] = {
    "jpeg-ls": str(JPEGLSLossless),
    "jpeg2000": str(JPEG2000Lossless),
    "htj2k": str(HTJ2KLossless),
}


def codec_syntax(name: str) -> str:
    """The transfer syntax UID of a configured codec name; ``ValueError`` saying why not."""
    syntax = CODECS.get(name.strip().lower())
    if syntax is None:
        raise ValueError(f"unknown codec {name!r}: one of {', '.join(c for c in CODECS if c != 'htj2k')}")
    if syntax == str(HTJ2KLossless):
        raise ValueError("htj2k: no HTJ2K encoder on this installation (OpenJPEG only decodes HTJ2K and the ojph "
                         "bindings need Python >= 3.12); use jpeg-ls")
    return syntax


class LosslessError(ValueError):
    """Pixel data that cannot be (or was not) compressed losslessly; the message is the reason to record."""


class CodecUnavailable(LosslessError):
    """The transfer syntax is a lossless one but no encoder for it is installed."""


@dataclass(frozen=True)
class FrameLayout:
    """What a frame's original bytes looked like, beyond what a compressed data set's header still says.

    The compressed object's header keeps Rows, Columns, Bits Stored, … but a codestream does not keep the planar
    configuration (PS3.5 8.2.3/8.2.4 require 0 for the compressed form), nor whether signed samples had their sign
    copied into the bits above Bits Stored (DICOM leaves those bits to the writer; both conventions exist in the
    wild). The archive must keep this next to the compressed object to rebuild the original (``as_dict``).
    """

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    planar_configuration: int
    photometric_interpretation: str
    number_of_frames: int
    #: Signed data only: the bits above Bits Stored hold copies of the sign bit (else they are zero).
    sign_extended: bool

    @property
    def frame_length(self) -> int:
        """Bytes of one native frame."""
        return self.rows * self.columns * self.samples_per_pixel * self.bits_allocated // 8

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FrameLayout:
        return cls(**d)


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int:
    value = ds.get(keyword, default)
    if value is None or isinstance(value, (list, tuple)):
        raise LosslessError(f"{keyword} missing or multi-valued")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise LosslessError(f"{keyword} is not a number ({value!r})") from None


def _syntax_reason(ds: Dataset) -> str | None:
    """Why the object's transfer syntax rules compression out (only the two little-endian native syntaxes pass).

    Big endian and deflated objects are refused although their pixels are native: going to a compressed syntax
    re-encodes every other attribute little endian (big endian) or drops the deflate stream, and neither can be
    reproduced byte for byte when the original object must be given back.
    """
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if not syntax:
        return "no Transfer Syntax UID in the File Meta"
    syntax = UID(str(syntax))
    if syntax in _NATIVE:
        return None
    if syntax == ExplicitVRBigEndian:
        return "big endian (retired) syntax: the object cannot be re-encoded without changing its other bytes"
    if syntax == DeflatedExplicitVRLittleEndian:
        return "deflated data set: its deflate stream cannot be reproduced byte for byte"
    if syntax.is_compressed or syntax.is_encapsulated:
        return f"already compressed ({syntax.name})"
    return f"transfer syntax {syntax} is not a native little-endian one"


def _layout(ds: Dataset) -> tuple[FrameLayout, bytes]:
    """The layout of the object's native pixel data and the pixel bytes, or ``LosslessError`` with the reason."""
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        raise LosslessError("float or double float pixel data (no lossless integer codec applies)")
    if "PixelData" not in ds:
        raise LosslessError("no pixel data")
    reason = _syntax_reason(ds)
    if reason:
        raise LosslessError(reason)
    data = ds["PixelData"].value
    if not isinstance(data, (bytes, bytearray)):
        raise LosslessError("pixel data not read as bytes")
    allocated, stored = _int(ds, "BitsAllocated"), _int(ds, "BitsStored")
    high, representation = _int(ds, "HighBit"), _int(ds, "PixelRepresentation")
    samples, rows, columns = _int(ds, "SamplesPerPixel"), _int(ds, "Rows"), _int(ds, "Columns")
    frames = _int(ds, "NumberOfFrames", 1)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    # 1-bit (packed), 32-bit and other containers: the codecs' DICOM profiles (PS3.5 8.2.3, 8.2.4) cover 8 and 16.
    if allocated not in (8, 16):
        raise LosslessError(f"BitsAllocated {allocated} (only 8 and 16 are compressed)")
    if not 1 <= stored <= allocated:
        raise LosslessError(f"BitsStored {stored} does not fit BitsAllocated {allocated}")
    # The codecs keep the low BitsStored bits of each sample; a HighBit elsewhere would put the value elsewhere.
    if high != stored - 1:
        raise LosslessError(f"HighBit {high} is not BitsStored - 1")
    if representation not in (0, 1):
        raise LosslessError(f"PixelRepresentation {representation}")
    if samples not in (1, 3):
        raise LosslessError(f"SamplesPerPixel {samples} (only 1 and 3 are compressed)")
    # YBR_FULL_422 in native form is subsampled (two samples per pixel on average): no lossless codec takes it as
    # is; the retired and the compressed-only interpretations (YBR_RCT, YBR_ICT, …) have no native lossless profile.
    if (samples == 1 and photometric not in _MONO) or (samples == 3 and photometric not in _COLOUR):
        raise LosslessError(f"PhotometricInterpretation {photometric or '(none)'} with {samples} samples per pixel")
    planar = _int(ds, "PlanarConfiguration", 0) if samples == 3 else 0
    if planar not in (0, 1):
        raise LosslessError(f"PlanarConfiguration {planar}")
    if rows < 1 or columns < 1 or frames < 1:
        raise LosslessError(f"empty image ({rows} rows, {columns} columns, {frames} frames)")
    layout = FrameLayout(rows, columns, samples, allocated, stored, representation == 1, planar, photometric,
                         frames, sign_extended=False)
    expected = layout.frame_length * frames
    # An odd length is padded to even with one byte (PS3.5 8.1.1); anything else means the header lies.
    if len(data) not in (expected, expected + (expected & 1)):
        raise LosslessError(f"pixel data is {len(data)} bytes, the header says {expected}")
    # The codestreams do not carry the pad byte: rebuilding the original appends a zero, so only a zero comes back.
    if len(data) > expected and data[expected] != 0:
        raise LosslessError("the odd-length pixel data's pad byte is not zero")
    pixels = bytes(data[:expected])
    return _check_high_bits(layout, pixels), pixels


def _check_high_bits(layout: FrameLayout, pixels: bytes) -> FrameLayout:
    """Refuse samples whose bits above BitsStored carry anything a BitsStored-bit codec would drop; for signed
    data record which of the two lawful conventions (sign copies or zeros) the original used, all samples alike."""
    stored = layout.bits_stored
    if stored == layout.bits_allocated:
        return layout
    samples: np.ndarray[Any, np.dtype[np.unsignedinteger[Any]]] = np.frombuffer(
        pixels, dtype=np.uint8 if layout.bits_allocated == 8 else np.dtype("<u2"))
    if not layout.signed:
        if samples.size and int(samples.max()) >> stored:
            raise LosslessError(f"bits set above BitsStored ({stored}) in some samples: a lossless codec at that "
                                "precision would drop them")
        return layout
    # From the sign bit up: 0 for a non-negative sample; all ones (sign-extended) or 1 (zero-padded) if negative.
    top = np.right_shift(samples, stored - 1)
    ones = (1 << (layout.bits_allocated - stored + 1)) - 1
    if bool(np.all((top == 0) | (top == ones))):
        return _replace_sign(layout, True)
    if bool(np.all(top <= 1)):
        return _replace_sign(layout, False)
    raise LosslessError(f"bits above BitsStored ({stored}) are neither the sign extension nor zero in every "
                        "sample: a lossless codec at that precision would drop them")


def _replace_sign(layout: FrameLayout, sign_extended: bool) -> FrameLayout:
    return FrameLayout(**{**layout.as_dict(), "sign_extended": sign_extended})


def frame_layout(ds: Dataset) -> FrameLayout:
    """The layout to keep with the compressed object (``LosslessError`` if the object is not eligible)."""
    return _layout(ds)[0]


def _codec_reason(layout: FrameLayout, syntax: str) -> str | None:
    """Why ``syntax`` cannot take this layout: not a lossless syntax, no encoder, or outside its DICOM profile
    (PS3.5 Table 8.2.3-1 / 8.2.4-1 as pydicom lists them, e.g. JPEG-LS needs BitsStored >= 2)."""
    if syntax not in LOSSLESS_SYNTAXES:
        return f"{syntax} is not one of the lossless syntaxes {', '.join(LOSSLESS_SYNTAXES)}"
    if syntax == str(HTJ2KLossless):
        return ("no HTJ2K encoder on this installation (OpenJPEG only decodes HTJ2K; the ojph bindings need "
                "Python >= 3.12)")
    if not get_encoder(syntax).is_available:
        return f"no encoder installed for {UID(syntax).name}"
    # pyjpegls gives CharLS an output buffer twice the frame's size, too small for a tiny image's headers; and a
    # frame this small gains nothing from compression anyway.
    if layout.frame_length < MIN_FRAME_BYTES:
        return f"frame of {layout.frame_length} bytes: too small to compress (< {MIN_FRAME_BYTES})"
    # pylibjpeg-openjpeg always asks for 6 resolution levels (5 wavelet decompositions), which OpenJPEG refuses for
    # an image less than 2**5 pixels on a side.
    if syntax == str(JPEG2000Lossless) and min(layout.rows, layout.columns) < _J2K_MIN_SIDE:
        return (f"{layout.rows}x{layout.columns} image: pylibjpeg-openjpeg's fixed 6 resolution levels need at "
                f"least {_J2K_MIN_SIDE} pixels on each side")
    for photometric, samples, signs, allocated, stored in ENCODING_PROFILES[UID(syntax)]:
        if (photometric == layout.photometric_interpretation and samples == layout.samples_per_pixel
                and int(layout.signed) in signs and layout.bits_allocated in allocated
                and layout.bits_stored in stored):
            return None
    return (f"{UID(syntax).name} has no profile for {layout.photometric_interpretation}, {layout.samples_per_pixel} "
            f"samples, {'signed' if layout.signed else 'unsigned'}, {layout.bits_allocated}/{layout.bits_stored} "
            "bits allocated/stored")


def eligibility(ds: Dataset, syntax_uid: str | None = None) -> str | None:
    """None when the data set's native pixel data can be compressed losslessly and given back bit for bit (and,
    with ``syntax_uid``, when that codec is installed and its DICOM profile takes the layout), else the reason."""
    try:
        layout = frame_layout(ds)
    except LosslessError as e:
        return str(e)
    return _codec_reason(layout, syntax_uid) if syntax_uid is not None else None


def encode_frames(ds: Dataset, syntax_uid: str, *, verify: bool = True) -> list[bytes]:
    """One lossless codestream per frame of ``ds``'s native pixel data.

    ``verify`` (the default; an archive replaces originals with these) decodes every codestream and compares it
    with the original frame's bytes, raising ``LosslessError`` on any difference, so nothing unproven is stored.
    The compressed data set keeps every attribute of the original except Transfer Syntax UID, Pixel Data
    (encapsulated, one fragment per frame) and PlanarConfiguration (0, as PS3.5 requires for these syntaxes).
    """
    layout, pixels = _layout(ds)
    reason = _codec_reason(layout, syntax_uid)
    if reason:
        raise (CodecUnavailable if syntax_uid == str(HTJ2KLossless) else LosslessError)(reason)
    options: dict[str, Any] = {
        "rows": layout.rows, "columns": layout.columns, "samples_per_pixel": layout.samples_per_pixel,
        "bits_allocated": layout.bits_allocated, "bits_stored": layout.bits_stored,
        "pixel_representation": int(layout.signed), "number_of_frames": layout.number_of_frames,
        "photometric_interpretation": layout.photometric_interpretation,
        "planar_configuration": layout.planar_configuration,
    }
    source = pixels
    if syntax_uid in _J2K_FAMILY and layout.planar_configuration == 1:
        # pylibjpeg-openjpeg reads any buffer as colour-by-pixel (it ignores planar_configuration), so colour-by-
        # plane frames are interleaved first; JPEG-LS takes them as they are (interleave mode 0).
        native = np.frombuffer(pixels, dtype=np.uint8 if layout.bits_allocated == 8 else np.dtype("<u2"))
        shape = (layout.number_of_frames, 3, layout.rows, layout.columns)
        source = native.reshape(shape).transpose(0, 2, 3, 1).tobytes()
        options["planar_configuration"] = 0
    try:
        frames = [bytes(f) for f in get_encoder(syntax_uid).iter_encode(source, **options)]
    except (RuntimeError, ValueError) as e:  # pydicom wraps the codec's own failure in a RuntimeError
        raise LosslessError(f"{UID(syntax_uid).name} encoder failed: {str(e).strip().splitlines()[-1]}") from e
    if verify:
        size = layout.frame_length
        for i, frame in enumerate(frames):
            if decode_frame(frame, syntax_uid, layout) != pixels[i * size:(i + 1) * size]:
                raise LosslessError(f"frame {i} does not decode to the original bytes")
    return frames


def _decode_samples(data: bytes, syntax_uid: str, layout: FrameLayout) -> np.ndarray:
    """The codestream's samples as an array shaped (rows, columns, samples) (any integer dtype)."""
    shape = (layout.rows, layout.columns, layout.samples_per_pixel)
    if syntax_uid == str(JPEGLSLossless):
        import jpeg_ls

        buffer, info = jpeg_ls.decode_buffer(data)
        count = layout.rows * layout.columns * layout.samples_per_pixel
        width = len(buffer) // count if count else 0
        if width not in (1, 2) or width * count != len(buffer):
            raise LosslessError(f"JPEG-LS frame decodes to {len(buffer)} bytes, not {count} samples")
        arr = np.frombuffer(buffer, dtype=np.uint8 if width == 1 else np.dtype("<u2"))
        if layout.samples_per_pixel == 3 and info.get("interleave_mode", 0) == 0:  # colour-by-plane
            return arr.reshape(3, layout.rows, layout.columns).transpose(1, 2, 0)
        return arr.reshape(shape)
    if syntax_uid in _J2K_FAMILY:
        import openjpeg

        arr = np.asarray(openjpeg.decode(data))
        if arr.size != layout.rows * layout.columns * layout.samples_per_pixel:
            raise LosslessError(f"JPEG 2000 frame decodes to shape {arr.shape}, not {shape}")
        return arr.reshape(shape)
    raise LosslessError(f"{syntax_uid} is not one of the lossless syntaxes {', '.join(LOSSLESS_SYNTAXES)}")


def decode_frame(data: bytes, syntax_uid: str, layout: FrameLayout) -> bytes:
    """A frame's native bytes exactly as the original object held them.

    The decoders give sample values (JPEG 2000: signed values; JPEG-LS: the BitsStored-bit two's complement
    pattern, as JPEG-LS has no signed mode); both are cut to BitsStored bits, then the original's bits above are
    restored (sign copies or zeros, ``layout.sign_extended``), then laid out little endian in the original's
    planar configuration.
    """
    arr = _decode_samples(data, syntax_uid, layout)
    # Work in the original's container (uint8 / little-endian uint16): casting a signed value wraps to its two's
    # complement pattern, sign-extended; a mask then keeps the BitsStored bits.
    native: np.ndarray[Any, np.dtype[np.unsignedinteger[Any]]] = arr.astype(
        np.uint8 if layout.bits_allocated == 8 else np.dtype("<u2"))
    if layout.bits_stored < layout.bits_allocated:
        np.bitwise_and(native, (1 << layout.bits_stored) - 1, out=native)
        if layout.signed and layout.sign_extended:
            # (p ^ s) - s in the container's modular arithmetic copies the sign bit s into every bit above it.
            sign = native.dtype.type(1 << (layout.bits_stored - 1))
            np.bitwise_xor(native, sign, out=native)
            np.subtract(native, sign, out=native)
    if layout.planar_configuration == 1:
        native = native.transpose(2, 0, 1)
    return native.tobytes()


def decode_frames(frames: Iterable[bytes], syntax_uid: str, layout: FrameLayout) -> bytes:
    """All frames' native bytes, concatenated as in the original Pixel Data (without its odd-length pad byte, which
    ``eligibility`` requires to be zero: append ``b"\\0"`` when the length is odd)."""
    return b"".join(decode_frame(f, syntax_uid, layout) for f in frames)
