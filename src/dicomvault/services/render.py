"""Rendered images and thumbnails (PS3.18 8.3.5 rendered resources, WADO-URI image/jpeg|png).

Pipeline for one frame: decode only that frame → Modality LUT (rescale slope/intercept or LUT) → VOI (the
request's ``window``, else the object's window or VOI LUT, else the frame's min/max) → MONOCHROME1 inversion →
8-bit grey or RGB → optional crop and viewport scaling (aspect kept) → JPEG or PNG via Pillow.
"""

from __future__ import annotations

import io
import math
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


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    x = arr.astype(np.float64, copy=False)
    lo, hi = float(np.min(x)), float(np.max(x))
    if hi <= lo:
        return np.zeros(x.shape, dtype=np.uint8)
    return ((x - lo) * (255.0 / (hi - lo))).round().astype(np.uint8)


def grey_image(arr: np.ndarray, header: Dataset, frame: int, window: Window | None) -> np.ndarray:
    values = _rescale(arr, header, frame)
    chosen = window or object_window(header, frame)
    if chosen is not None:
        out = voi_window(values, chosen)
    elif "VOILUTSequence" in header:
        try:
            out = _to_uint8(apply_voi_lut(values.astype(np.int64) if values.dtype.kind == "f" else values, header))
        except Exception:
            out = _to_uint8(values)
    else:
        out = _to_uint8(values)
    img = np.clip(out, 0, 255).round().astype(np.uint8) if out.dtype != np.uint8 else out
    if str(header.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        img = 255 - img
    return img


def colour_image(arr: np.ndarray, described: Dataset, header: Dataset) -> np.ndarray:
    photometric = str(described.get("PhotometricInterpretation", "RGB")).upper()
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, header)
    elif photometric.startswith("YBR") and photometric not in ("YBR_RCT", "YBR_ICT"):
        arr = convert_color_space(arr, photometric, "RGB")
    if arr.dtype == np.uint8:
        return arr
    bits = int(described.get("BitsStored", 8) or 8)
    if photometric == "PALETTE COLOR":
        bits = 16 if arr.max(initial=0) > 255 else 8
    shift = max(0, bits - 8)
    return np.clip(arr.astype(np.uint32) >> shift, 0, 255).astype(np.uint8)


def to_pillow(arr: np.ndarray, described: Dataset, header: Dataset, frame: int, window: Window | None) -> Image.Image:
    photometric = str(described.get("PhotometricInterpretation", "")).upper()
    if photometric.startswith("MONOCHROME") or (arr.ndim == 2 and photometric != "PALETTE COLOR"):
        return Image.fromarray(grey_image(arr, header, frame, window), mode="L")
    return Image.fromarray(colour_image(arr, described, header), mode="RGB")


def fit(img: Image.Image, viewport: Viewport | None, max_side: int | None) -> Image.Image:
    if viewport is not None and viewport.region is not None:
        sx, sy, sw, sh = viewport.region
        sw = sw or img.width - sx
        sh = sh or img.height - sy
        if sw <= 0 or sh <= 0 or sx >= img.width or sy >= img.height:
            raise InvalidQuery("viewport source region lies outside the image")
        img = img.crop((sx, sy, min(img.width, sx + sw), min(img.height, sy + sh)))
    if viewport is not None:
        box = (viewport.width, viewport.height)
    elif max_side is not None:
        box = (max_side, max_side)
    else:
        return img
    scale = min(box[0] / img.width, box[1] / img.height)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    if size == img.size:
        return img
    return img.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)


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
        (not an image, no decoder), ``InvalidQuery`` (bad viewport region)."""
        header = read_header(self.retrieve, record)
        if not is_image(header):
            raise Unsupported("the object has no image pixel data to render")
        arr, described = decode_frame(self.retrieve, record, frame, header)
        img = to_pillow(arr, described, header, frame, options.window)
        img = fit(img, options.viewport, options.max_side)
        return encode(img, options.media_type, options.quality)

    @staticmethod
    def middle_frame(record: InstanceRecord) -> int:
        return (max(1, record.number_of_frames or 1) + 1) // 2
