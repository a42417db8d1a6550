"""Rendered images and thumbnails (PS3.18 8.3.5 rendered resources, WADO-URI image/jpeg|png).

Pipeline for one frame: decode only that frame (refused above ``max_decoded_bytes`` before decoding) → optional
crop → every n-th row and column when the output is much smaller → Modality LUT (rescale slope/intercept or LUT)
→ VOI (the request's ``window``, else the object's window or VOI LUT, else the frame's min/max) → MONOCHROME1
inversion → 8-bit grey (through a lookup table) or RGB, tile by tile → viewport scaling (aspect kept) → JPEG or
PNG via Pillow. Nothing per-pixel is held in float64 (measured for an 8192 × 8192 16-bit RLE frame: +1.6 GB and
4.6 s per ``/rendered`` before, see docs/benchmarks.md for after).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, convert_color_space

from dicomvault.domain.errors import InvalidQuery, Unsupported
from dicomvault.domain.records import InstanceRecord
from dicomvault.services.pixels import decode_frame, is_image, read_header
from dicomvault.services.retrieve import RetrieveService

JPEG = "image/jpeg"
PNG = "image/png"
MEDIA_TYPES = (JPEG, PNG)
THUMBNAIL_SIZE = 128
WINDOW_FUNCTIONS = ("linear", "linear_exact", "sigmoid")


@dataclass(frozen=True)
class Window:
    center: float
    width: float
    function: str = "linear"


@dataclass(frozen=True)
class Viewport:
    width: int
    height: int
    #: source region (sx, sy, sw, sh) in image pixels, or None for the whole image
    region: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class RenderOptions:
    media_type: str = JPEG
    quality: int = 90
    window: Window | None = None
    viewport: Viewport | None = None
    #: longest side when no viewport is given (thumbnails); None keeps the native size
    max_side: int | None = None


def parse_window(value: str | None) -> Window | None:
    """``center,width[,function]`` (PS3.18 8.3.5.1.4); raises ``InvalidQuery``."""
    if not value:
        return None
    parts = [p.strip() for p in value.split(",")]
    if len(parts) not in (2, 3):
        raise InvalidQuery("window must be center,width[,function]")
    try:
        center, width = float(parts[0]), float(parts[1])
    except ValueError:
        raise InvalidQuery("window center and width must be numbers") from None
    function = parts[2].lower() if len(parts) == 3 and parts[2] else "linear"
    if function not in WINDOW_FUNCTIONS:
        raise InvalidQuery(f"window function must be one of {', '.join(WINDOW_FUNCTIONS)}")
    if width <= 0 or (function == "linear" and width < 1) or not (math.isfinite(center) and math.isfinite(width)):
        raise InvalidQuery("window width must be positive (at least 1 for linear)")
    return Window(center, width, function)


def parse_viewport(value: str | None) -> Viewport | None:
    """``vw,vh[,sx,sy,sw,sh]``; raises ``InvalidQuery``."""
    if not value:
        return None
    parts = [p.strip() for p in value.split(",")]
    if len(parts) not in (2, 6):
        raise InvalidQuery("viewport must be vw,vh or vw,vh,sx,sy,sw,sh")
    try:
        nums = [int(float(p)) if p else 0 for p in parts]
    except ValueError:
        raise InvalidQuery("viewport values must be numbers") from None
    if nums[0] <= 0 or nums[1] <= 0 or nums[0] > 8192 or nums[1] > 8192:
        raise InvalidQuery("viewport width and height must be between 1 and 8192")
    region = None
    if len(nums) == 6:
        if nums[2] < 0 or nums[3] < 0:
            raise InvalidQuery("viewport source origin must not be negative")
        region = (nums[2], nums[3], nums[4], nums[5])
    return Viewport(nums[0], nums[1], region)


def parse_quality(value: str | None) -> int:
    if value is None or value == "":
        return 90
    try:
        q = int(value)
    except ValueError:
        raise InvalidQuery("quality must be an integer 1-100") from None
    if not 1 <= q <= 100:
        raise InvalidQuery("quality must be an integer 1-100")
    return q


def voi_window(arr: np.ndarray, window: Window) -> np.ndarray:
    """PS3.3 C.11.2.1.2 window functions, output 0..255 as float."""
    x = arr.astype(np.float64, copy=False)
    c, w = window.center, window.width
    if window.function == "sigmoid":
        return 255.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    if window.function == "linear_exact":
        return np.clip((x - c) / w + 0.5, 0.0, 1.0) * 255.0
    return np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0) * 255.0 if w > 1 else np.where(x > c - 0.5, 255.0, 0.0)


def _first_float(value: object) -> float | None:
    try:
        if hasattr(value, "__iter__") and not isinstance(value, str | bytes):
            value = next(iter(value))
        return float(value)  # type: ignore[arg-type]
    except (StopIteration, TypeError, ValueError):
        return None


def object_window(header: Dataset, frame: int) -> Window | None:
    """The object's own window: top-level WindowCenter/Width, else the frame's (or shared) Frame VOI LUT."""
    sources: list[Dataset] = [header]
    for seq_kw, idx in (("PerFrameFunctionalGroupsSequence", frame - 1), ("SharedFunctionalGroupsSequence", 0)):
        seq = header.get(seq_kw)
        if seq is not None and len(seq) > idx:
            voi = seq[idx].get("FrameVOILUTSequence")
            if voi:
                sources.append(voi[0])
    for src in sources:
        c = _first_float(src.get("WindowCenter"))
        w = _first_float(src.get("WindowWidth"))
        if c is not None and w is not None and w > 0:
            function = str(src.get("VOILUTFunction", "LINEAR") or "LINEAR").lower()
            return Window(c, max(w, 1.0) if function == "linear" else w,
                          function if function in WINDOW_FUNCTIONS else "linear")
    return None


def _rescale(arr: np.ndarray, header: Dataset, frame: int) -> np.ndarray:
    """Modality LUT; Enhanced objects carry slope/intercept in the functional groups."""
    if "RescaleSlope" in header or "ModalityLUTSequence" in header:
        return apply_modality_lut(arr, header)
    for seq_kw, idx in (("PerFrameFunctionalGroupsSequence", frame - 1), ("SharedFunctionalGroupsSequence", 0)):
        seq = header.get(seq_kw)
        if seq is not None and len(seq) > idx:
            pvt = seq[idx].get("PixelValueTransformationSequence")
            if pvt:
                slope = _first_float(pvt[0].get("RescaleSlope")) or 1.0
                intercept = _first_float(pvt[0].get("RescaleIntercept")) or 0.0
                return arr.astype(np.float64) * slope + intercept
    return arr


#: Pixels processed at a time by the tiled steps (temporaries stay at a few MB whatever the image size).
TILE_PIXELS = 1 << 20
#: Integer data spanning at most this many values is windowed through a lookup table.
LUT_ENTRIES = 1 << 16


def _tiles(arr: np.ndarray) -> Iterator[slice]:
    """Row ranges of about ``TILE_PIXELS`` values each."""
    per_row = arr.size // arr.shape[0] if arr.shape[0] else 1
    rows = max(1, TILE_PIXELS // max(1, per_row))
    for start in range(0, arr.shape[0], rows):
        yield slice(start, start + rows)


def _grey_values(values: np.ndarray, header: Dataset, frame: int, window: Window | None) -> tuple[np.ndarray, bool]:
    """Modality LUT then VOI (window, else the object's VOI LUT) applied element-wise to ``values``: the output
    levels (0..255 as float for a window), and whether they still need scaling from their min/max to 0..255."""
    values = _rescale(values, header, frame)
    chosen = window or object_window(header, frame)
    if chosen is not None:
        return voi_window(values, chosen), False
    if "VOILUTSequence" in header:
        try:
            return apply_voi_lut(values.astype(np.int64) if values.dtype.kind == "f" else values, header), True
        except Exception:
            pass
    return values, True


def _scaled(levels: np.ndarray, stretch: tuple[float, float] | None) -> np.ndarray:
    """Levels to uint8: clipped and rounded, or first stretched linearly from (lo, hi) to 0..255."""
    x = levels.astype(np.float64, copy=False)
    if stretch is not None:
        lo, hi = stretch
        if hi <= lo:
            return np.zeros(x.shape, dtype=np.uint8)
        x = (x - lo) * (255.0 / (hi - lo))
    return np.clip(x, 0, 255).round().astype(np.uint8)


def grey_image(arr: np.ndarray, header: Dataset, frame: int, window: Window | None,
               reference: np.ndarray | None = None) -> np.ndarray:
    """8-bit grey levels of a monochrome frame, without a float copy of it.

    Integer data (all but float pixel data and 32-bit data spanning more than 65,536 values) goes through a lookup
    table: the modality and VOI transforms run once per possible value (at most 65,536, ~1 ms), then each pixel is
    one table read, tile by tile. The previous float64 pipeline cost 8 bytes per pixel per step (+1.6 GB and 4.6 s
    for an 8192 × 8192 frame); its output is what the table holds (tests/services/test_services_render_lut.py
    compares both within one grey level). Other data (float pixel data, wide 32-bit ranges) is transformed in
    float64 one tile of ~1 Mpixel at a time, never the whole frame, in two passes when the output must be
    stretched to its min/max. That min/max is the whole frame's (``reference``, of which ``arr`` is
    a crop or a decimation), so a zoomed region is as bright as in the full image."""
    reference = arr if reference is None else reference
    monochrome1 = str(header.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1"
    out = np.empty(arr.shape, dtype=np.uint8)
    if arr.dtype.kind in "ui" and reference.size:
        lo, hi = int(reference.min()), int(reference.max())
        if hi - lo < LUT_ENTRIES:
            levels, stretch = _grey_values(np.arange(lo, hi + 1, dtype=np.int64), header, frame, window)
            present = np.zeros(hi - lo + 1, dtype=bool) if stretch else None
            if present is not None:
                for rows in _tiles(reference):
                    present[np.subtract(reference[rows], lo, dtype=np.int32)] = True
            bounds = None
            if present is not None:
                seen = np.asarray(levels, dtype=np.float64)[present]
                bounds = (float(seen.min()), float(seen.max()))
            lut = _scaled(levels, bounds)
            if monochrome1:
                lut = 255 - lut
            for rows in _tiles(arr):
                out[rows] = lut[np.subtract(arr[rows], lo, dtype=np.int32)]
            return out
    bounds = None
    if _grey_values(arr[:1], header, frame, window)[1]:  # stretch: min/max over the whole frame first
        lows, highs = [], []
        for rows in _tiles(reference):
            levels = np.asarray(_grey_values(reference[rows], header, frame, window)[0], dtype=np.float64)
            lows.append(float(levels.min()))
            highs.append(float(levels.max()))
        bounds = (min(lows), max(highs)) if lows else (0.0, 0.0)
    for rows in _tiles(arr):
        out[rows] = _scaled(_grey_values(arr[rows], header, frame, window)[0], bounds)
    return 255 - out if monochrome1 else out


def colour_image(arr: np.ndarray, described: Dataset, header: Dataset) -> np.ndarray:
    """8-bit RGB of a colour frame (palette applied, YBR converted), tile by tile."""
    photometric = str(described.get("PhotometricInterpretation", "RGB")).upper()
    palette = photometric == "PALETTE COLOR"
    convert = photometric.startswith("YBR") and photometric not in ("YBR_RCT", "YBR_ICT")
    if not palette and not convert and arr.dtype == np.uint8:
        return arr

    def rgb(tile: np.ndarray) -> np.ndarray:
        if palette:
            return np.asarray(apply_color_lut(tile, header))
        return np.asarray(convert_color_space(tile, photometric, "RGB")) if convert else tile

    shift = max(0, int(described.get("BitsStored", 8) or 8) - 8)
    if palette:  # 16-bit palettes are scaled down when any value used exceeds 8 bits
        peak = max((int(rgb(arr[rows]).max(initial=0)) for rows in _tiles(arr)), default=0)
        shift = 8 if peak > 255 else 0
    out = np.empty((*arr.shape[:2], 3), dtype=np.uint8)
    for rows in _tiles(arr):
        tile = rgb(arr[rows])
        out[rows] = tile if tile.dtype == np.uint8 else np.clip(tile.astype(np.uint32) >> shift, 0, 255)
    return out


def to_pillow(arr: np.ndarray, described: Dataset, header: Dataset, frame: int, window: Window | None,
              reference: np.ndarray | None = None) -> Image.Image:
    photometric = str(described.get("PhotometricInterpretation", "")).upper()
    if photometric.startswith("MONOCHROME") or (arr.ndim == 2 and photometric != "PALETTE COLOR"):
        return Image.fromarray(grey_image(arr, header, frame, window, reference), mode="L")
    return Image.fromarray(colour_image(arr, described, header), mode="RGB")


def crop(arr: np.ndarray, viewport: Viewport | None) -> np.ndarray:
    """The viewport's source region of ``arr`` (a view, no copy); raises ``InvalidQuery`` outside the image."""
    if viewport is None or viewport.region is None:
        return arr
    height, width = arr.shape[:2]
    sx, sy, sw, sh = viewport.region
    sw = sw or width - sx
    sh = sh or height - sy
    if sw <= 0 or sh <= 0 or sx >= width or sy >= height:
        raise InvalidQuery("viewport source region lies outside the image")
    return arr[sy : min(height, sy + sh), sx : min(width, sx + sw)]


def output_size(width: int, height: int, viewport: Viewport | None, max_side: int | None) -> tuple[int, int]:
    """The rendered size for a (cropped) source of ``width`` × ``height``: fitted in the viewport or the
    thumbnail box, aspect kept; the source size when neither is given."""
    if viewport is not None:
        box = (viewport.width, viewport.height)
    elif max_side is not None:
        box = (max_side, max_side)
    else:
        return width, height
    scale = min(box[0] / width, box[1] / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def decimate(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Every n-th row and column (a view) when the output is at least 4× smaller than the source on both axes,
    keeping at least twice the output size, so the final Lanczos resize still filters: an 8192 × 8192 frame
    thumbnailed at 128 is windowed at 256 × 256 instead of 64 Mpixels."""
    height, width = arr.shape[:2]
    step = min(width // (2 * size[0]), height // (2 * size[1]))
    return arr[::step, ::step] if step >= 2 else arr


def resize(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    if size == img.size:
        return img
    upscale = size[0] > img.width or size[1] > img.height
    return img.resize(size, Image.Resampling.BICUBIC if upscale else Image.Resampling.LANCZOS)


def encode(img: Image.Image, media_type: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if media_type == PNG:
        img.save(buf, format="PNG", compress_level=3)
    elif media_type == JPEG:
        img.save(buf, format="JPEG", quality=quality)
    else:
        raise Unsupported(f"cannot render as {media_type}")
    return buf.getvalue()


class RenderService:
    def __init__(self, retrieve: RetrieveService) -> None:
        self.retrieve = retrieve

    def render(self, record: InstanceRecord, frame: int, options: RenderOptions) -> bytes:
        """Frame ``frame`` (1-based) of ``record`` as an encoded image; raises ``NotFound``, ``Unsupported``
        (not an image, no decoder), ``InvalidQuery`` (bad viewport region), ``TooLarge`` (the frame decodes to
        more than ``max_decoded_bytes``), ``DamagedPixelData``.

        Order: decode → crop → decimate (when the output is much smaller) → window/colour to 8 bits → resize, so
        per-pixel work and memory follow the output, not the source, beyond the decoded frame itself."""
        header = read_header(self.retrieve, record)
        if not is_image(header):
            raise Unsupported("the object has no image pixel data to render")
        full, described = decode_frame(self.retrieve, record, frame, header)
        arr = crop(full, options.viewport)
        size = output_size(arr.shape[1], arr.shape[0], options.viewport, options.max_side)
        img = to_pillow(decimate(arr, size), described, header, frame, options.window, full)
        return encode(resize(img, size), options.media_type, options.quality)

    @staticmethod
    def middle_frame(record: InstanceRecord) -> int:
        return (max(1, record.number_of_frames or 1) + 1) // 2
