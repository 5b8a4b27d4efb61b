"""Transcoding Part-10 objects between transfer syntaxes (PS3.5 Annex A, PS3.18 8.7.3).

A registry keyed by transfer syntax: pydicom's pixel backends decode every source it
has a decoder for (pylibjpeg, pyjpegls, python-gdcm); the target is written by
pydicom's own encoders where it has one (RLE, JPEG-LS, JPEG 2000) and by imagecodecs
where it has none (JPEG baseline / extended / lossless, HTJ2K).  The SOP Instance UID is
kept: a transfer syntax is an encoding of the same instance (PS3.5 10).  A lossy
target sets Lossy Image Compression, its ratio and method (PS3.3 C.7.6.1.1.5).

Public interface (also used by C-GET / C-MOVE):

- ``can_transcode(source_syntax, target_syntax)``
- ``transcode_part10(data, target_syntax)``
- ``check_pixels(target_syntax, bits_stored, ...)``: whether the pixel format fits
- ``encode_frame(frame, target_syntax, ...)``: one decoded frame in a target syntax
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import imagecodecs
import numpy as np
import numpy.typing as npt
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.multival import MultiValue
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID

from dicomcloud.errors import NotAcceptable
from dicomcloud.services import syntaxes as ts

Pixels = npt.NDArray[Any]

#: Native targets: how pydicom writes each (PS3.5 A.1, A.2, A.5).
_NATIVE = {ts.EXPLICIT_VR_LE, ts.IMPLICIT_VR_LE, ts.DEFLATED_EXPLICIT_VR_LE}
#: Encapsulated targets pydicom encodes itself (pydicom.pixels.encoders).
_PYDICOM_ENCODED = {
    ts.RLE_LOSSLESS,
    ts.JPEG_LS_LOSSLESS,
    ts.JPEG_LS_NEAR_LOSSLESS,
    ts.JPEG_2000_LOSSLESS,
    ts.JPEG_2000,
}
#: Encapsulated targets encoded frame by frame with imagecodecs.
_IMAGECODECS_ENCODED = {
    ts.JPEG_BASELINE,
    ts.JPEG_EXTENDED,
    ts.JPEG_LOSSLESS,
    ts.JPEG_LOSSLESS_SV1,
    ts.HTJ2K_LOSSLESS,
    ts.HTJ2K_LOSSLESS_RPCL,
    ts.HTJ2K,
}
TARGETS = frozenset(_NATIVE | _PYDICOM_ENCODED | _IMAGECODECS_ENCODED)

#: pydicom decoding plugin per source where its default order is wrong: with
#: python-gdcm installed, signed JPEG-LS fails unless pyjpegls decodes it.  Elsewhere
#: pydicom tries every available plugin in turn.
_DECODING_PLUGIN = {
    ts.JPEG_LS_LOSSLESS: "pyjpegls",
    ts.JPEG_LS_NEAR_LOSSLESS: "pyjpegls",
}

#: Quality of lossy targets: JPEG quality, JPEG-LS NEAR, JPEG 2000 compression ratio.
JPEG_QUALITY = 90
JLS_NEAR = 2
J2K_RATIO = 10.0


def decoding_plugin(source: str) -> str:
    return _DECODING_PLUGIN.get(source, "")


def can_decode(source: str) -> bool:
    """Whether pixel data in ``source`` can be decoded here."""
    if source in (ts.EXPLICIT_VR_LE, ts.IMPLICIT_VR_LE, ts.DEFLATED_EXPLICIT_VR_LE):
        return True
    try:
        return bool(get_decoder(UID(source)).is_available)
    except (NotImplementedError, ValueError):
        return False


def can_transcode(source_syntax: str, target_syntax: str) -> bool:
    """Whether an object stored in ``source_syntax`` can be sent in ``target_syntax``.

    Identity always works.  Otherwise the source must be decodable and the target one of
    ``TARGETS``.  The pixel format may still rule a target out (8-bit JPEG baseline for
    16-bit data, say): see ``check_pixels``.
    """
    if source_syntax == target_syntax:
        return True
    return target_syntax in TARGETS and can_decode(source_syntax)


@dataclass(frozen=True, slots=True)
class PixelFormat:
    """The Image Pixel attributes a target syntax constrains (PS3.3 C.7.6.3)."""

    bits_allocated: int
    bits_stored: int
    samples_per_pixel: int
    pixel_representation: int


def pixel_problem(target: str, pixels: PixelFormat | None) -> str | None:
    """Why pixels of this format cannot be encoded in ``target`` (PS3.5 8.2), or None."""
    if pixels is None or target in _NATIVE:
        return None
    bits = pixels.bits_stored
    if pixels.bits_allocated not in (8, 16) and target != ts.RLE_LOSSLESS:
        return f"{pixels.bits_allocated}-bit allocated pixels cannot be compressed in {target}"
    if pixels.samples_per_pixel not in (1, 3):
        return f"{pixels.samples_per_pixel} samples per pixel cannot be encoded in {target}"
    if target == ts.JPEG_BASELINE and bits > 8:
        return f"JPEG baseline holds 8-bit samples only; these have {bits} bits (PS3.5 8.2.1)"
    if target == ts.JPEG_EXTENDED and bits > 12:
        return f"JPEG extended holds at most 12-bit samples; these have {bits} (PS3.5 8.2.1)"
    if target in (ts.JPEG_BASELINE, ts.JPEG_EXTENDED) and pixels.pixel_representation:
        return "signed pixel data is not encoded in the lossy JPEG processes here"
    lossy_jpeg = target in (ts.JPEG_BASELINE, ts.JPEG_EXTENDED)
    if lossy_jpeg and pixels.samples_per_pixel == 3 and bits != 8:
        return "colour JPEG lossy holds 8-bit samples only"
    return None


def check_transcode(source: str, target: str, pixels: PixelFormat | None) -> None:
    """Raise ``NotAcceptable`` with the reason unless the conversion is possible."""
    if not can_transcode(source, target):
        if target not in TARGETS:
            raise NotAcceptable(f"transcoding to transfer syntax {target} is not supported")
        raise NotAcceptable(f"pixel data in transfer syntax {source} cannot be decoded")
    if source != target and (problem := pixel_problem(target, pixels)):
        raise NotAcceptable(problem)


# --- frame encoders (imagecodecs) -------------------------------------------------------


def _unsigned_bits(frame: Pixels, bits_stored: int) -> Pixels:
    """Signed samples as the unsigned bit patterns the codestream holds (PS3.5 8.2)."""
    if frame.dtype.kind != "i":
        return frame
    unsigned = frame.view(frame.dtype.str.replace("i", "u"))
    mask = np.array((1 << bits_stored) - 1, unsigned.dtype)
    masked: Pixels = unsigned & mask
    return masked


def _jpeg_lossy(frame: Pixels, bits: int, colour: bool) -> bytes:
    if colour:
        return bytes(
            imagecodecs.jpeg8_encode(
                frame,
                level=JPEG_QUALITY,
                colorspace="RGB",
                outcolorspace="YCBCR",
                subsampling="422",
            )
        )
    return bytes(imagecodecs.jpeg8_encode(frame, level=JPEG_QUALITY, bitspersample=bits))


def _jpeg_lossless(frame: Pixels, bits: int, colour: bool) -> bytes:
    space = "RGB" if colour else None
    return bytes(
        imagecodecs.jpeg8_encode(
            frame,
            lossless=True,
            predictor=1,
            bitspersample=max(bits, 2),
            colorspace=space,
            outcolorspace=space,
        )
    )


def _htj2k(frame: Pixels, lossless: bool) -> bytes:
    if lossless:
        return bytes(imagecodecs.htj2k_encode(frame, reversible=True, rgb=False))
    # OpenJPH's default quantisation of the irreversible path: visually lossless.
    return bytes(imagecodecs.htj2k_encode(frame, reversible=False, rgb=False))


def j2k_lossless_frame(frame: Pixels) -> bytes:
    """JPEG 2000 lossless with as many resolution levels as the frame allows (OpenJPEG
    through pydicom refuses images smaller than its default 6 levels need)."""
    frame = np.ascontiguousarray(frame, dtype=frame.dtype.newbyteorder("="))
    levels = max(1, min(6, int(np.log2(max(1, min(frame.shape[:2])))) + 1))
    return bytes(
        imagecodecs.jpeg2k_encode(
            frame, level=0, codecformat="J2K", reversible=True, resolutions=levels, mct=False
        )
    )


def encode_frame(frame: Pixels, target: str, bits_stored: int) -> bytes:
    """One decoded frame (rows x columns [x samples], RGB or monochrome) as a
    codestream of ``target``, for the imagecodecs targets."""
    frame = np.ascontiguousarray(frame, dtype=frame.dtype.newbyteorder("="))
    colour = frame.ndim == 3
    if target in (ts.JPEG_BASELINE, ts.JPEG_EXTENDED):
        return _jpeg_lossy(frame, bits_stored, colour)
    if target in (ts.JPEG_LOSSLESS, ts.JPEG_LOSSLESS_SV1):
        return _jpeg_lossless(_unsigned_bits(frame, bits_stored), bits_stored, colour)
    if target in (ts.HTJ2K_LOSSLESS, ts.HTJ2K_LOSSLESS_RPCL):
        return _htj2k(frame, lossless=True)
    if target == ts.HTJ2K:
        return _htj2k(frame, lossless=False)
    if target == ts.JPEG_2000_LOSSLESS:
        return j2k_lossless_frame(frame)
    raise NotAcceptable(f"no frame encoder for transfer syntax {target}")


def _photometric_after(target: str, photometric: str) -> str:
    """The Photometric Interpretation of the encoded pixels (PS3.5 8.2.1, 8.2.4)."""
    if target in (ts.JPEG_BASELINE, ts.JPEG_EXTENDED) and photometric == "RGB":
        return "YBR_FULL_422"
    return photometric


# --- whole objects ----------------------------------------------------------------------


def _read(data: bytes) -> Dataset:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dcmread(io.BytesIO(data), force=True)
    except Exception as exc:  # pydicom raises many types for a damaged file
        raise NotAcceptable(f"the stored object cannot be parsed for transcoding: {exc}") from exc


def _write(ds: Dataset, target: str) -> bytes:
    ds.file_meta.TransferSyntaxUID = UID(target)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _decompress(ds: Dataset, source: str) -> None:
    """Native Explicit VR Little Endian pixel data, colour as RGB (PS3.5 A.2)."""
    if source == ts.EXPLICIT_VR_LE or "PixelData" not in ds:
        return
    if source in (ts.IMPLICIT_VR_LE, ts.DEFLATED_EXPLICIT_VR_LE):
        return
    if source == ts.EXPLICIT_VR_BE:
        _to_little_endian(ds)
        return
    ds.decompress(generate_instance_uid=False, decoding_plugin=decoding_plugin(source))
    if ts.is_lossy(source):
        ds.LossyImageCompression = "01"


def _to_little_endian(ds: Dataset) -> None:
    """Big endian (retired, PS3.5 A.3) to little endian: every value decoded, the
    native pixel words swapped."""
    for _ in ds.iterall():
        pass  # decodes each raw element in its original encoding
    if "PixelData" in ds and int(ds.get("BitsAllocated", 8)) > 8:
        arr = ds.pixel_array
        ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    ds.set_original_encoding(False, True)
    ds.file_meta.TransferSyntaxUID = UID(ts.EXPLICIT_VR_LE)


def _values(ds: Dataset, keyword: str) -> list[Any]:
    value = ds.get(keyword, None)
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, MultiValue) else [value]


def _mark_lossy(ds: Dataset, target: str, uncompressed: int, compressed: int) -> None:
    """PS3.3 C.7.6.1.1.5: once lossy, always marked so, with every ratio and method."""
    method = ts.SYNTAXES[target].lossy_method
    ratio = f"{uncompressed / max(compressed, 1):.4g}"[:16]
    ds.LossyImageCompression = "01"
    ratios = _values(ds, "LossyImageCompressionRatio")
    methods = _values(ds, "LossyImageCompressionMethod")
    ds.LossyImageCompressionRatio = [*ratios, ratio]
    ds.LossyImageCompressionMethod = [*methods, method]


def _frames(ds: Dataset) -> list[Pixels]:
    arr = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames == 1:
        return [arr]
    return [arr[i] for i in range(frames)]


def _compress_with_imagecodecs(ds: Dataset, target: str) -> int:
    bits = int(ds.BitsStored)
    frames = [encode_frame(f, target, bits) for f in _frames(ds)]
    ds.PixelData = encapsulate(frames, has_bot=True)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.PhotometricInterpretation = _photometric_after(target, str(ds.PhotometricInterpretation))
    if int(ds.SamplesPerPixel) > 1:
        ds.PlanarConfiguration = 0
    return sum(len(f) for f in frames)


def _compress_with_pydicom(ds: Dataset, target: str) -> int:
    options: dict[str, Any] = {}
    if target == ts.JPEG_LS_NEAR_LOSSLESS:
        options["jls_error"] = JLS_NEAR
    if target == ts.JPEG_2000:
        options["j2k_cr"] = [J2K_RATIO]
    if target == ts.RLE_LOSSLESS:
        options["encoding_plugin"] = "pydicom"
    try:
        ds.compress(UID(target), generate_instance_uid=False, **options)
    except RuntimeError:
        if target != ts.JPEG_2000_LOSSLESS:
            raise
        return _compress_with_imagecodecs(ds, target)
    return len(ds.PixelData)


_COMPRESSORS: dict[str, Callable[[Dataset, str], int]] = {
    **{uid: _compress_with_pydicom for uid in _PYDICOM_ENCODED},
    **{uid: _compress_with_imagecodecs for uid in _IMAGECODECS_ENCODED},
}


def pixel_format(ds: Dataset) -> PixelFormat | None:
    if "PixelData" not in ds:
        return None
    return PixelFormat(
        int(ds.get("BitsAllocated", 8)),
        int(ds.get("BitsStored", ds.get("BitsAllocated", 8))),
        int(ds.get("SamplesPerPixel", 1)),
        int(ds.get("PixelRepresentation", 0)),
    )


def transcode_part10(data: bytes, target_syntax: str) -> bytes:
    """A Part-10 object re-encoded in ``target_syntax`` (PS3.10 7, PS3.5 Annex A).

    The input is returned unchanged when it already is in the target syntax.  Raises
    ``NotAcceptable`` with the reason when the conversion is impossible (no decoder for
    the source, no encoder for the target, a pixel format the target cannot hold).
    """
    ds = _read(data)
    source = str(ds.file_meta.get("TransferSyntaxUID", ts.EXPLICIT_VR_LE))
    if source == target_syntax:
        return data
    check_transcode(source, target_syntax, pixel_format(ds))
    try:
        _decompress(ds, source)
        if "PixelData" in ds and target_syntax in _COMPRESSORS:
            uncompressed = len(ds.PixelData)
            compressed = _COMPRESSORS[target_syntax](ds, target_syntax)
            if ts.is_lossy(target_syntax):
                _mark_lossy(ds, target_syntax, uncompressed, compressed)
        return _write(ds, target_syntax)
    except NotAcceptable:
        raise
    except Exception as exc:  # codec libraries raise their own error types
        raise NotAcceptable(
            f"conversion from {source} to {target_syntax} failed: {type(exc).__name__}: {exc}"
        ) from exc
