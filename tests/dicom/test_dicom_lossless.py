"""Lossless re-encoding (issue #11, 4): every eligible object comes back bit for bit, the others are refused with a
reason.

"Bit for bit" is checked on bytes, not on values: the decoded frames, concatenated, must equal the original Pixel
Data (less its odd-length pad byte), including the bits above Bits Stored of signed samples.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
)

from dicomvault.dicom.lossless import (
    CodecUnavailable,
    LosslessError,
    decode_frames,
    eligibility,
    encode_frames,
    frame_layout,
)
from tests.conftest import corpus_dir

#: The codecs that can encode on this installation (HTJ2K has no encoder on Python 3.11: see the module).
CODECS = [str(JPEGLSLossless), str(JPEG2000Lossless)]


def make_image(bits_allocated: int, bits_stored: int, signed: bool, samples: int = 1, planar: int = 0,
               frames: int = 1, rows: int = 40, columns: int = 36, *, sign_extended: bool = True,
               seed: int = 0) -> Dataset:
    """A native image whose every frame holds the extremes of its range (min, max, and -1 / 0 / 1 when signed)
    beside a smooth gradient with noise, stored with the bits above Bits Stored as ``sign_extended`` says."""
    rng = np.random.default_rng(seed)
    low, high = (-(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1) if signed else (0, (1 << bits_stored) - 1)
    shape = (frames, rows, columns, samples)
    ramp = np.linspace(low, high, rows * columns).reshape(1, rows, columns, 1)
    values = np.clip(ramp + rng.normal(0, (high - low) / 50 + 1, shape), low, high).astype(np.int64)
    extremes = [low, high, -1, 0, 1] if signed else [low, high, 1]
    values[:, 0, : len(extremes), :] = np.array(extremes)[None, :, None]
    mask = (1 << bits_stored) - 1
    patterns = values & ((1 << bits_allocated) - 1) if sign_extended else values & mask
    native = patterns.astype(np.uint8 if bits_allocated == 8 else "<u2")
    if planar:
        native = native.transpose(0, 3, 1, 2)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, samples
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_allocated, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    ds.PhotometricInterpretation = "RGB" if samples == 3 else "MONOCHROME2"
    if samples == 3:
        ds.PlanarConfiguration = planar
    if frames > 1:
        ds.NumberOfFrames = frames
    data = native.tobytes()
    ds.add_new("PixelData", "OB" if bits_allocated == 8 else "OW", data + b"\0" * (len(data) & 1))
    return ds


def assert_round_trip(ds: Dataset, syntax: str) -> list[bytes]:
    """Encode (the encoder verifies too), decode independently, compare with the original bytes."""
    layout = frame_layout(ds)
    frames = encode_frames(ds, syntax)
    assert len(frames) == layout.number_of_frames
    size = layout.frame_length * layout.number_of_frames
    assert decode_frames(frames, syntax, layout) == bytes(ds.PixelData[:size])
    assert_pydicom_reads_the_same_image(ds, frames, syntax)
    return frames


def assert_pydicom_reads_the_same_image(ds: Dataset, frames: list[bytes], syntax: str) -> None:
    """The compressed object as the next session will store it (encapsulated, one fragment per frame, Planar
    Configuration 0), read by pydicom's own decoders: the same pixel values as the original. This checks the
    codestreams mean the right image to any standard reader, not only to ``decode_frame``."""
    compressed = copy.deepcopy(ds)
    compressed.file_meta.TransferSyntaxUID = syntax
    compressed.PixelData = encapsulate(frames)
    compressed["PixelData"].VR = "OB"
    if "PlanarConfiguration" in compressed:
        compressed.PlanarConfiguration = 0
    original = ds.pixel_array
    assert np.array_equal(compressed.pixel_array, original)


LAYOUTS = [  # bits allocated, bits stored, signed, samples, planar
    (8, 8, False, 1, 0), (8, 8, True, 1, 0), (8, 8, False, 3, 0), (8, 8, False, 3, 1),
    (16, 12, False, 1, 0), (16, 12, True, 1, 0), (16, 12, False, 3, 0), (16, 12, False, 3, 1),
    (16, 16, False, 1, 0), (16, 16, True, 1, 0), (16, 16, False, 3, 0), (16, 16, False, 3, 1),
]


@pytest.mark.parametrize("syntax", CODECS)
@pytest.mark.parametrize("frames", [1, 3])
@pytest.mark.parametrize(("allocated", "stored", "signed", "samples", "planar"), LAYOUTS)
def test_generated_images_round_trip(syntax: str, frames: int, allocated: int, stored: int, signed: bool,
                                     samples: int, planar: int) -> None:
    ds = make_image(allocated, stored, signed, samples, planar, frames, seed=frames)
    assert eligibility(ds) is None
    assert eligibility(ds, syntax) is None
    assert_round_trip(ds, syntax)


@pytest.mark.parametrize("syntax", CODECS)
@pytest.mark.parametrize(("allocated", "stored"), [(16, 12), (16, 10), (16, 8), (16, 2), (8, 6)])
def test_signed_data_keeps_its_high_bits_convention(syntax: str, allocated: int, stored: int) -> None:
    """Negative samples padded with zeros above Bits Stored come back zero-padded, sign-extended ones come back
    sign-extended: the same values, different bytes, and the original's bytes are what must come back."""
    padded = make_image(allocated, stored, True, sign_extended=False)
    extended = make_image(allocated, stored, True, sign_extended=True)
    assert padded.PixelData != extended.PixelData
    assert frame_layout(padded).sign_extended is False
    assert frame_layout(extended).sign_extended is True
    assert_round_trip(padded, syntax)
    assert_round_trip(extended, syntax)


@pytest.mark.parametrize("syntax", CODECS)
def test_odd_length_pixel_data_with_pad_byte(syntax: str) -> None:
    ds = make_image(8, 8, False, rows=33, columns=33)
    assert len(ds.PixelData) == 33 * 33 + 1
    assert_round_trip(ds, syntax)
    ds.PixelData = ds.PixelData[:-1] + b"\x01"
    assert "pad byte" in (eligibility(ds) or "")


def _set_pattern(ds: Dataset, index: int, pattern: int) -> None:
    arr = np.frombuffer(ds.PixelData, dtype="<u2").copy()
    arr[index] = pattern
    ds.PixelData = arr.tobytes()


def test_garbage_above_bits_stored_is_refused() -> None:
    """A 12-bit image with one sample using bit 12: a 12-bit codec would silently drop it."""
    ds = make_image(16, 12, False)
    assert eligibility(ds) is None
    _set_pattern(ds, 100, 0x1000 | 5)
    reason = eligibility(ds)
    assert reason is not None and "above BitsStored" in reason
    with pytest.raises(LosslessError, match="above BitsStored"):
        encode_frames(ds, str(JPEGLSLossless))


def test_signed_mixed_high_bits_are_refused() -> None:
    """Signed 12-bit data whose high bits are sign copies in one sample and zeros in another: no single
    convention rebuilds both, so the object is refused; high bits that are neither are refused too."""
    ds = make_image(16, 12, True, sign_extended=True)
    _set_pattern(ds, 100, 0x0FFB)  # -5, zero-padded, among sign-extended negatives
    assert "neither the sign extension nor zero" in (eligibility(ds) or "")
    ds = make_image(16, 12, True, sign_extended=False)
    _set_pattern(ds, 100, 0x2005)  # 5 with a stray bit 13
    assert "neither the sign extension nor zero" in (eligibility(ds) or "")


def _with(ds: Dataset, **attrs: object) -> Dataset:
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


@pytest.mark.parametrize(("build", "expected"), [
    (lambda: _with(make_image(16, 12, False), BitsAllocated=32), "BitsAllocated 32"),
    (lambda: _with(make_image(8, 8, False), BitsAllocated=1, BitsStored=1, HighBit=0), "BitsAllocated 1"),
    (lambda: _with(make_image(16, 16, False), BitsStored=17), "does not fit"),
    (lambda: _with(make_image(16, 12, False), HighBit=15), "HighBit 15"),
    (lambda: _with(make_image(8, 8, False), SamplesPerPixel=4), "SamplesPerPixel 4"),
    (lambda: _with(make_image(8, 8, False, 3), PhotometricInterpretation="YBR_FULL_422"), "YBR_FULL_422"),
    (lambda: _with(make_image(8, 8, False), PhotometricInterpretation="RGB"), "RGB with 1 samples"),
    (lambda: _with(make_image(16, 12, False), Rows=41), "the header says"),
    (lambda: _with(make_image(16, 12, False, frames=2), NumberOfFrames=3), "the header says"),
    (lambda: _with(make_image(16, 12, False), PixelRepresentation=2), "PixelRepresentation 2"),
], ids=["32-bit", "1-bit", "stored>16", "highbit", "4-samples", "ybr422", "photometric", "short", "frames",
        "pixelrep"])
def test_odd_layouts_are_refused(build: object, expected: str) -> None:
    ds = build()  # type: ignore[operator]
    reason = eligibility(ds)
    assert reason is not None and expected in reason, reason
    with pytest.raises(LosslessError, match=expected):
        encode_frames(ds, str(JPEG2000Lossless))


@pytest.mark.parametrize(("syntax", "expected"), [
    (JPEGBaseline8Bit, "already compressed"),
    (ExplicitVRBigEndian, "big endian"),
    (DeflatedExplicitVRLittleEndian, "deflated"),
])
def test_syntaxes_that_are_refused(syntax: str, expected: str) -> None:
    ds = make_image(8, 8, False)
    ds.file_meta.TransferSyntaxUID = syntax
    assert expected in (eligibility(ds) or "")


def test_float_pixel_data_is_refused() -> None:
    ds = make_image(16, 16, False)
    del ds.PixelData
    ds.add_new("FloatPixelData", "OF", np.zeros(40 * 36, dtype="<f4").tobytes())
    assert "float" in (eligibility(ds) or "")


def test_codec_profiles_and_sizes() -> None:
    """Per codec: its DICOM profile (JPEG-LS needs at least 2 bits stored; colour is unsigned), the smallest frame
    worth compressing, and JPEG 2000's minimum image side with pylibjpeg-openjpeg."""
    one_bit_stored = make_image(8, 1, False)
    assert eligibility(one_bit_stored) is None
    assert "no profile" in (eligibility(one_bit_stored, str(JPEGLSLossless)) or "")
    assert_round_trip(one_bit_stored, str(JPEG2000Lossless))
    signed_rgb = make_image(8, 8, True, 3)
    assert "no profile" in (eligibility(signed_rgb, str(JPEG2000Lossless)) or "")
    tiny = make_image(8, 8, False, rows=10, columns=10)
    assert "too small" in (eligibility(tiny, str(JPEGLSLossless)) or "")
    narrow = make_image(16, 12, False, rows=64, columns=16)
    assert "32 pixels" in (eligibility(narrow, str(JPEG2000Lossless)) or "")
    assert_round_trip(narrow, str(JPEGLSLossless))
    assert "not one of the lossless" in (eligibility(narrow, str(JPEGBaseline8Bit)) or "")


def test_htj2k_has_no_encoder_here() -> None:
    ds = make_image(16, 12, False)
    assert "HTJ2K" in (eligibility(ds, str(HTJ2KLossless)) or "")
    with pytest.raises(CodecUnavailable):
        encode_frames(ds, str(HTJ2KLossless))


@pytest.mark.skipif(not shutil.which("ojph_compress"), reason="OpenJPH's ojph_compress (Debian openjph-tools)")
@pytest.mark.parametrize(("allocated", "stored", "signed"), [
    (8, 8, False), (16, 12, False), (16, 16, False),
    # Found here: OpenJPEG (pylibjpeg-openjpeg 2.6) decodes the negative samples of OpenJPH 0.9's signed HTJ2K
    # codestreams as 32767 while OpenJPH's own ojph_expand gives them back, and ojph_compress 0.9 misreads signed
    # raw input below 16 bits. Whichever is wrong, encode_frames' verification (decoding with OpenJPEG) is what
    # would catch it for an HTJ2K encoder: signed HTJ2K stays unproven until these pass.
    pytest.param(16, 16, True, marks=pytest.mark.xfail(reason="signed HTJ2K: OpenJPH 0.9 vs OpenJPEG")),
    pytest.param(16, 12, True, marks=pytest.mark.xfail(reason="signed HTJ2K: OpenJPH 0.9 vs OpenJPEG")),
])
def test_htj2k_frames_written_by_openjph_decode_bit_exact(tmp_path: Path, allocated: int, stored: int,
                                                          signed: bool) -> None:
    """The HTJ2K decode path (OpenJPEG) on codestreams of the reference HTJ2K encoder, OpenJPH: when an HTJ2K
    encoder comes (ojph on Python >= 3.12), what it writes is read back bit for bit."""
    ds = make_image(allocated, stored, signed, rows=48, columns=40)
    layout = frame_layout(ds)
    (tmp_path / "f.yuv").write_bytes(ds.PixelData)
    subprocess.run(["ojph_compress", "-i", str(tmp_path / "f.yuv"), "-o", str(tmp_path / "f.j2c"), "-reversible",
                    "true", "-dims", "{40,48}", "-num_comps", "1", "-signed", str(signed).lower(), "-bit_depth",
                    str(stored), "-downsamp", "{1,1}"], check=True, capture_output=True)
    frame = (tmp_path / "f.j2c").read_bytes()
    assert decode_frames([frame], str(HTJ2KLossless), layout) == ds.PixelData
    assert_pydicom_reads_the_same_image(ds, [frame], str(HTJ2KLossless))


def test_frames_are_independent_codestreams() -> None:
    """One codestream per frame, each decodable alone (frame retrieval stays one read)."""
    ds = make_image(16, 12, True, frames=4, seed=3)
    layout = frame_layout(ds)
    size = layout.frame_length
    for syntax in CODECS:
        frames = encode_frames(ds, syntax)
        assert frames[2].startswith(b"\xff\xd8" if syntax == str(JPEGLSLossless) else b"\xff\x4f")
        assert decode_frames([frames[2]], syntax, layout) == ds.PixelData[2 * size:3 * size]


def test_layout_survives_a_round_trip_through_a_dict() -> None:
    layout = frame_layout(make_image(16, 12, True, 3, 1, 2))
    assert type(layout).from_dict(layout.as_dict()) == layout


#: Native files of pydicom's corpus that must be eligible, and why some others are not.
ELIGIBLE = ["CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "examples_overlay.dcm",
            "examples_palette.dcm", "examples_rgb_color.dcm", "SC_rgb_jpeg_dcmd.dcm"]
REFUSED = {
    "MR_small_bigendian.dcm": "big endian", "image_dfl.dcm": "deflated", "liver_1frame.dcm": "BitsAllocated 1",
    "rtdose.dcm": "BitsAllocated 32", "MR_small_padded.dcm": "the header says",
    "SC_ybr_full_422_uncompressed.dcm": "YBR_FULL_422", "JPEG2000.dcm": "already compressed",
    "SC_rgb_rle.dcm": "already compressed",
}


def test_whole_corpus_round_trips_or_is_refused(corpus: list[Path]) -> None:
    """Every storable corpus file, plus the native ones named above: eligible ones round-trip through every codec
    whose profile takes them, refused ones say why."""
    names = {p.name for p in corpus}
    extra = [p for p in corpus_dir().rglob("*") if p.name in set(ELIGIBLE) | set(REFUSED) and p.name not in names]
    reasons: dict[str, str] = {}
    round_trips = 0
    for path in [*corpus, *extra]:
        ds = pydicom.dcmread(path)
        reason = eligibility(ds)
        if reason is not None:
            reasons[path.name] = reason
            continue
        for syntax in CODECS:
            if eligibility(ds, syntax) is None:
                assert_round_trip(ds, syntax)
                round_trips += 1
    for name in ELIGIBLE:
        assert name not in reasons, (name, reasons.get(name))
    for name, expected in REFUSED.items():
        assert expected in reasons[name], (name, reasons[name])
    assert round_trips >= 2 * len(ELIGIBLE)


@settings(max_examples=30, deadline=None)
@given(
    stored=st.integers(2, 16), signed=st.booleans(), colour=st.booleans(), planar=st.integers(0, 1),
    frames=st.integers(1, 2), rows=st.integers(32, 48), columns=st.integers(32, 48), sign_extended=st.booleans(),
    seed=st.integers(0, 2**16), syntax=st.sampled_from(CODECS),
)
def test_property_any_native_layout_round_trips(stored: int, signed: bool, colour: bool, planar: int, frames: int,
                                                rows: int, columns: int, sign_extended: bool, seed: int,
                                                syntax: str) -> None:
    signed = signed and not colour  # colour profiles are unsigned
    allocated = 8 if stored <= 8 else 16
    ds = make_image(allocated, stored, signed, 3 if colour else 1, planar if colour else 0, frames, rows, columns,
                    sign_extended=sign_extended, seed=seed)
    assert eligibility(ds, syntax) is None
    assert_round_trip(ds, syntax)
