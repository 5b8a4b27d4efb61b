"""Rendering one frame of a stored instance as a consumer image (PS3.18 8.3.5.1, 10.4.1.1.x
rendered and thumbnail resources; the grayscale pipeline of PS3.3 C.11 and PS3.4 N.2).

Grayscale (MONOCHROME1/2): stored values -> Modality LUT or rescale (PS3.3 C.11.1) ->
VOI: the requested window, else the VOI LUT Sequence, else the first Window
Center/Width of the data set (PS3.3 C.11.2, LINEAR / LINEAR_EXACT / SIGMOID), else the
frame's own minimum..maximum -> 8-bit display values; MONOCHROME1 is inverted.
Colour: YBR is converted to RGB by pydicom, PALETTE COLOR goes through its lookup tables
(PS3.3 C.7.6.3.1.5), values are scaled to 8 bits.  Then the image is fitted into the
viewport (aspect ratio kept) and encoded as JPEG (at ``quality``) or PNG.

Decoding and encoding are CPU work: call :func:`render_frame` off the event loop.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels.processing import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi_lut,
    apply_windowing,
)
from pydicom.pixels.utils import pixel_array

from dicomcloud.errors import BadRequest, NotAcceptable, NotFound

JPEG: Final = "image/jpeg"
PNG: Final = "image/png"
RENDERED_MEDIA_TYPES: Final = (JPEG, PNG)
#: VOI LUT Functions of PS3.3 C.11.2.1.3 (the ``window`` parameter, PS3.18 8.3.5.1.4).
VOI_FUNCTIONS: Final = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
DEFAULT_JPEG_QUALITY: Final = 90

MediaType = Literal["image/jpeg", "image/png"]


@dataclass(frozen=True, slots=True)
class RenderParams:
    """How to render (PS3.18 8.3.5.1): ``window`` is (center, width, VOI LUT Function),
    ``viewport`` (rows, columns) the box the image is fitted into, ``quality`` 1-100 for
    JPEG; ``region`` the source image region (sx, sy, sw, sh) of the viewport's long
    form, each None where the request left it empty (PS3.18 8.3.5.1.3);
    ``relative_region`` WADO-URI's ``region`` (left, top, right, bottom as fractions
    of the image's width and height, PS3.18 9.1.2.4)."""

    media_type: MediaType = JPEG
    window: tuple[float, float, str] | None = None
    viewport: tuple[int, int] | None = None
    quality: int | None = None
    region: tuple[int | None, int | None, int | None, int | None] | None = None
    relative_region: tuple[float, float, float, float] | None = None


class NotRenderable(NotAcceptable):
    """The instance has no image this server can render (no pixel data, an unknown
    photometric interpretation, no codec for its transfer syntax)."""


class FrameNotFound(NotFound):
    """The frame number is beyond the instance's Number of Frames."""


class RegionOutsideImage(BadRequest):
    """The viewport's source image region does not lie within the image (HTTP 400)."""


def number_of_frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def render_frame(part10: bytes, frame_index: int, params: RenderParams) -> bytes:
    """Frame ``frame_index`` (0-based) of a Part-10 object as ``params.media_type``."""
    try:
        ds = dcmread(io.BytesIO(part10), force=True)
    except (InvalidDicomError, EOFError, ValueError, OSError) as exc:
        raise NotRenderable(f"the stored object cannot be parsed: {exc}") from exc
    return render_dataset(ds, frame_index, params)


def render_dataset(ds: Dataset, frame_index: int, params: RenderParams) -> bytes:
    """As :func:`render_frame`, for a parsed data set."""
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise NotRenderable("the instance has no pixel data to render")
    frames = number_of_frames(ds)
    if not 0 <= frame_index < frames:
        raise FrameNotFound(f"frame {frame_index + 1} does not exist; the instance has {frames}")
    try:
        stored = pixel_array(ds, index=frame_index)
    except Exception as exc:  # codec missing or pixel data inconsistent with its header
        raise NotRenderable(f"the pixel data cannot be decoded: {exc}") from exc
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        display = grayscale_display(stored, ds, params.window)
        if photometric == "MONOCHROME1":
            display = 255 - display
        image = Image.fromarray(display)
    elif photometric == "PALETTE COLOR":
        image = Image.fromarray(_to_8bit(apply_color_lut(stored, ds), _lut_bits(ds)))
    elif stored.ndim == 3 and stored.shape[-1] == 3:
        # RGB, and YBR_* which pixel_array converted to RGB.
        image = Image.fromarray(_to_8bit(stored, int(ds.get("BitsStored", 8) or 8)))
    else:
        raise NotRenderable(f"photometric interpretation {photometric!r} cannot be rendered")
    if params.region is not None:
        image = source_region(image, params.region)
    if params.relative_region is not None:
        image = relative_region(image, params.relative_region)
    return _encode(_fit(image, params.viewport), params)


def relative_region(image: Image.Image, region: tuple[float, float, float, float]) -> Image.Image:
    """WADO-URI's ``region=left,top,right,bottom`` in fractions 0.0-1.0 of the image
    (PS3.18 9.1.2.4); ``RegionOutsideImage`` if it holds no whole pixel."""
    width, height = image.size
    left, top, right, bottom = region
    box = (round(left * width), round(top * height), round(right * width), round(bottom * height))
    if box[0] >= box[2] or box[1] >= box[3]:
        raise RegionOutsideImage(
            f"region: {','.join(map(str, region))} holds no pixel of the {width}x{height} image"
        )
    return image.crop(box)


def source_region(
    image: Image.Image, region: tuple[int | None, int | None, int | None, int | None]
) -> Image.Image:
    """The source image region of ``viewport=vw,vh,sx,sy,sw,sh`` (PS3.18 8.3.5.1.3),
    applied before the viewport: (sx, sy) is its top left corner (default 0, 0); sw and
    sh its width and height (default: to the right and bottom edges).  A negative sw
    (sh) takes the region to the left of (above) sx (sy) and flips the image
    horizontally (vertically).  Raises ``RegionOutsideImage`` unless the region lies
    within the image."""
    width, height = image.size
    sx, sy, sw, sh = region
    sx, sy = sx or 0, sy or 0
    if not (0 <= sx < width and 0 <= sy < height):
        raise RegionOutsideImage(
            f"viewport: the region starts at ({sx},{sy}), outside the {width}x{height} image"
        )
    sw = width - sx if sw is None else sw
    sh = height - sy if sh is None else sh
    left, right = (sx, sx + sw) if sw > 0 else (sx + sw, sx)
    top, bottom = (sy, sy + sh) if sh > 0 else (sy + sh, sy)
    if sw == 0 or sh == 0 or left < 0 or top < 0 or right > width or bottom > height:
        raise RegionOutsideImage(
            f"viewport: the region {sx},{sy},{sw},{sh} does not lie within the "
            f"{width}x{height} image"
        )
    cropped = image.crop((left, top, right, bottom))
    if sw < 0:
        cropped = cropped.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if sh < 0:
        cropped = cropped.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return cropped


def grayscale_display(
    stored: NDArray[np.generic], ds: Dataset, window: tuple[float, float, str] | None
) -> NDArray[np.uint8]:
    """8-bit display values of a grayscale frame (PS3.3 C.11.1 then C.11.2)."""
    values = apply_modality_lut(stored, ds).astype(np.float64)
    if window is not None:
        return _windowed(values, *window)
    voi_lut = ds.get("VOILUTSequence")
    if voi_lut and voi_lut[0].get("LUTDescriptor") and voi_lut[0].get("LUTData"):
        out = apply_voi_lut(np.rint(values).astype(np.int64), ds, prefer_lut=True)
        bits = int(voi_lut[0].LUTDescriptor[2])
        return _to_8bit(out, bits)
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None and width > 0:
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        if function not in VOI_FUNCTIONS:
            function = "LINEAR"
        if function == "LINEAR" and width < 1:
            function = "LINEAR_EXACT"
        return _windowed(values, center, width, function)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    return np.rint((values - low) / (high - low) * 255.0).astype(np.uint8)


def _windowed(
    values: NDArray[np.float64], center: float, width: float, function: str
) -> NDArray[np.uint8]:
    """PS3.3 C.11.2.1.2 / C.11.2.1.3 to the output range 0..255 (pydicom's windowing on
    a data set that states just that range)."""
    voi = Dataset()
    voi.PhotometricInterpretation = "MONOCHROME2"
    voi.BitsStored = 8
    voi.PixelRepresentation = 0
    voi.WindowCenter = center
    voi.WindowWidth = width
    voi.VOILUTFunction = function
    out: NDArray[np.float64] = np.asarray(apply_windowing(values, voi), dtype=np.float64)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _first(value: object) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        if not value:
            return None
        value = value[0]
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _lut_bits(ds: Dataset) -> int:
    descriptor = ds.get("RedPaletteColorLookupTableDescriptor")
    try:
        return 16 if int(descriptor[2]) > 8 else 8
    except (TypeError, IndexError, ValueError):
        return 16


def _to_8bit(values: NDArray[np.generic], bits: int) -> NDArray[np.uint8]:
    if bits <= 8 and values.dtype == np.uint8:
        return values.astype(np.uint8, copy=False)
    top = float(2**bits - 1)
    scaled = np.clip(values.astype(np.float64), 0, top) * (255.0 / top)
    return np.rint(scaled).astype(np.uint8)


def _fit(image: Image.Image, viewport: tuple[int, int] | None) -> Image.Image:
    """Scale to fit into (rows, columns), keeping the aspect ratio (PS3.18 8.3.5.1.3)."""
    if viewport is None:
        return image
    rows, columns = viewport
    scale = min(rows / image.height, columns / image.width)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


def _encode(image: Image.Image, params: RenderParams) -> bytes:
    out = io.BytesIO()
    if params.media_type == PNG:
        image.save(out, format="PNG")
    else:
        quality = params.quality if params.quality is not None else DEFAULT_JPEG_QUALITY
        image.save(out, format="JPEG", quality=quality)
    return out.getvalue()
