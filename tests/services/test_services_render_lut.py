"""The lookup-table rendering path against the float64 pipeline it replaced (issue #9 defect 4): on corpus images
and synthetic ones covering every transform (rescale, Modality LUT, VOI LUT, windows of each function,
MONOCHROME1, min/max stretch, 32-bit data beyond the table's reach), the 8-bit output differs by at most one grey
level."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from dicomvault.services import render
from dicomvault.services.render import Window, grey_image, object_window, voi_window
from tests.conftest import corpus_dir
from tests.helpers import make_ct

# -- the float64 pipeline as it was (services/render.py before the lookup tables), kept here as the reference ---


def _old_rescale(arr: np.ndarray, header: Dataset, frame: int) -> np.ndarray:
    if "RescaleSlope" in header or "ModalityLUTSequence" in header:
        return apply_modality_lut(arr, header)
    return arr


def _old_to_uint8(arr: np.ndarray) -> np.ndarray:
    x = arr.astype(np.float64, copy=False)
    lo, hi = float(np.min(x)), float(np.max(x))
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.uint8)
    return ((x - lo) * (255.0 / (hi - lo))).round().astype(np.uint8)


def old_grey_image(arr: np.ndarray, header: Dataset, frame: int, window: Window | None) -> np.ndarray:
    values = _old_rescale(arr, header, frame)
    chosen = window or object_window(header, frame)
    if chosen is not None:
        out = voi_window(values, chosen)
    elif "VOILUTSequence" in header:
        try:
            out = _old_to_uint8(apply_voi_lut(values.astype(np.int64) if values.dtype.kind == "f" else values,
                                              header))
        except Exception:
            out = _old_to_uint8(values)
    else:
        out = _old_to_uint8(values)
    img = np.clip(out, 0, 255).round().astype(np.uint8) if out.dtype != np.uint8 else out
    if str(header.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        img = 255 - img
    return img


# -- images -------------------------------------------------------------------------------------------------------


def _corpus(name: str) -> tuple[np.ndarray, Dataset]:
    ds = pydicom.dcmread(corpus_dir() / name)
    arr = ds.pixel_array
    return (arr[0] if int(ds.get("NumberOfFrames", 1) or 1) > 1 else arr), ds


def _synthetic(**attrs: object) -> tuple[np.ndarray, Dataset]:
    ds = pydicom.dcmread(io.BytesIO(make_ct(rows=64, columns=48, seed=7)))
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds.pixel_array, ds


def _modality_lut() -> tuple[np.ndarray, Dataset]:
    arr, ds = _synthetic()
    item = Dataset()
    item.LUTDescriptor = [2048, 0, 16]
    item.LUTData = [int(v) for v in (np.sqrt(np.arange(2048)) * 900).astype(np.uint16)]
    item.ModalityLUTType = "US"
    ds.ModalityLUTSequence = [item]
    return arr, ds


def _voi_lut() -> tuple[np.ndarray, Dataset]:
    arr, ds = _synthetic()
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 12]
    item.LUTData = [int(v) for v in (4095 - np.arange(4096) ** 2 // 4096)]
    ds.VOILUTSequence = [item]
    return arr, ds


def _wide_32bit() -> tuple[np.ndarray, Dataset]:
    """32-bit values spanning far more than a table holds: the tiled float path."""
    arr, ds = _synthetic()
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
    return arr.astype(np.uint32) * 4000 + 7, ds


IMAGES = {
    "CT_small": lambda: _corpus("CT_small.dcm"),
    "MR_small": lambda: _corpus("MR_small.dcm"),
    "liver": lambda: _corpus("liver_1frame.dcm"),
    "rtdose": lambda: _corpus("rtdose_1frame.dcm"),
    "image_dfl": lambda: _corpus("image_dfl.dcm"),
    "JPEG2000": lambda: _corpus("JPEG2000.dcm"),
    "rescaled": lambda: _synthetic(RescaleSlope=0.37, RescaleIntercept=-1024),
    "negative slope": lambda: _synthetic(RescaleSlope=-2, RescaleIntercept=100),
    "monochrome1": lambda: _synthetic(PhotometricInterpretation="MONOCHROME1", WindowCenter=1500, WindowWidth=900),
    "modality LUT": _modality_lut,
    "VOI LUT": _voi_lut,
    "32-bit wide": _wide_32bit,
}
WINDOWS = [None, Window(40, 400), Window(1200, 1, "linear"), Window(-200, 3000, "linear_exact"),
           Window(1000, 500, "sigmoid")]


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_lut_path_matches_the_float64_path(name: str) -> None:
    arr, header = IMAGES[name]()
    for window in WINDOWS:
        new = grey_image(arr, header, 1, window).astype(np.int16)
        old = old_grey_image(arr, header, 1, window).astype(np.int16)
        assert new.shape == old.shape
        assert np.abs(new - old).max() <= 1, (name, window)


def test_tiles_cover_the_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small tiles (a few rows each) give the same output as one tile."""
    arr, header = _corpus("CT_small.dcm")
    whole = grey_image(arr, header, 1, None)
    monkeypatch.setattr(render, "TILE_PIXELS", 3 * arr.shape[1] + 5)
    assert np.array_equal(grey_image(arr, header, 1, None), whole)
    wide, wide_header = _wide_32bit()
    assert np.array_equal(grey_image(wide, wide_header, 1, None), old_grey_image(wide, wide_header, 1, None))
