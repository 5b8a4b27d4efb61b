"""Frames of a stored instance without reading or decoding the whole object
(PS3.18 10.4.1.1.4 Frame resources, PS3.5 A.4 encapsulation, PS3.5 8.1.1 native).

The header is parsed up to Pixel Data through a file object whose reads are range
reads of the blob store; then a native frame is one range read at a computed offset,
and an encapsulated frame is found through the Basic or Extended Offset Table (or the
fragment items) by pydicom's ``get_frame``, reading only item headers and the frame's
own fragments.  Only a frame that must change syntax is decoded, and only that frame.
"""

from __future__ import annotations

import asyncio
import io
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import (
    encapsulate,
    generate_fragments,
    get_frame,
    parse_basic_offsets,
    parse_fragments,
)
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import UID

from dicomcloud.errors import BadRequest, DicomCloudError, NotAcceptable, NotFound
from dicomcloud.ports import BlobStore
from dicomcloud.services import syntaxes as ts
from dicomcloud.services.transcode import (
    J2K_RATIO,
    JLS_NEAR,
    PixelFormat,
    check_transcode,
    decoding_plugin,
    encode_frame,
)

_BUFFER = 16 * 1024  # header reads; frames are read at their own length
_PIXEL_DATA = 0x7FE00010
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"}


def parse_frame_list(text: str) -> list[int]:
    """``1,3,5`` -> [1, 3, 5] (PS3.18 8.3.4: one-based, comma-separated); 400 otherwise."""
    numbers: list[int] = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit() or int(item) < 1:
            raise BadRequest(
                f"frame list {text!r} is malformed: frame numbers are positive integers "
                "separated by commas (PS3.18 8.3.4)"
            )
        numbers.append(int(item))
    return numbers


class _RangeFile(io.RawIOBase):
    """A read-only, seekable file over one blob, each read a ``read_range`` run on the
    event loop (used from a worker thread)."""

    def __init__(self, blobs: BlobStore, key: str, size: int, loop: asyncio.AbstractEventLoop):
        self._blobs, self._key, self._size, self._loop = blobs, key, size, loop
        self._pos = 0
        self.reads = 0

    @property
    def name(self) -> str:
        return f"blob:{self._key}"

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        future = asyncio.run_coroutine_threadsafe(
            self._blobs.read_range(self._key, self._pos, want), self._loop
        )
        data = future.result()
        self.reads += 1
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame as sent: its bytes, media type and transfer syntax (PS3.18 8.7.3.5)."""

    data: bytes
    media_type: str
    transfer_syntax: str


@dataclass(slots=True)
class FrameLayout:
    """Where an object's frames are: parsed once per object, then cached."""

    header: Dataset
    syntax: str
    value_offset: int
    frames: int
    encapsulated: bool
    #: Encapsulated frames: absolute (offset, length, itemised) of each frame's bytes;
    #: itemised ranges hold fragment items to unwrap (PS3.5 A.4).  None: use get_frame.
    frame_ranges: list[tuple[int, int, bool]] | None = None


def _layout(fp: io.BufferedReader[Any], syntax: str, size: int) -> FrameLayout:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header = dcmread(fp, stop_before_pixels=True, force=True)
    position = fp.tell()
    element = fp.read(12)
    little = syntax != ts.EXPLICIT_VR_BE
    if len(element) < 8:
        raise NotFound("the instance has no pixel data, so no frames")
    group, elem = struct.unpack("<HH" if little else ">HH", element[:4])
    if (group << 16 | elem) != _PIXEL_DATA:
        raise NotFound("the instance has no pixel data, so no frames")
    explicit = syntax != ts.IMPLICIT_VR_LE
    header_length = 12 if explicit and element[4:6] in _LONG_VRS else 8
    frames = int(header.get("NumberOfFrames", 1) or 1)
    layout = FrameLayout(
        header, syntax, position + header_length, frames, ts.is_encapsulated(syntax)
    )
    if layout.encapsulated:
        layout.frame_ranges = _frame_ranges(fp, layout, size)
    return layout


def _frame_ranges(
    fp: io.BufferedReader[Any], layout: FrameLayout, end: int
) -> list[tuple[int, int, bool]] | None:
    """Byte ranges of every frame from the Extended or Basic Offset Table, or from the
    fragment items when there is one fragment per frame (PS3.5 A.4, Table A.4-1/2)."""
    h, n = layout.header, layout.frames
    fp.seek(layout.value_offset)
    bot = parse_basic_offsets(fp)
    first_item = fp.tell()  # offsets count from the first fragment's item tag
    if "ExtendedOffsetTable" in h and "ExtendedOffsetTableLengths" in h:
        offsets = struct.unpack(f"<{n}Q", bytes(h.ExtendedOffsetTable)[: 8 * n])
        lengths = struct.unpack(f"<{n}Q", bytes(h.ExtendedOffsetTableLengths)[: 8 * n])
        return [(first_item + o + 8, ln, False) for o, ln in zip(offsets, lengths, strict=True)]
    if len(bot) == n:
        starts = [first_item + o for o in bot] + [end]
        return [(starts[i], starts[i + 1] - starts[i], True) for i in range(n)]
    if not bot and n == 1:
        return [(first_item, end - first_item, True)]
    if not bot:
        count, items = parse_fragments(fp)
        if count == n:
            starts = [*items, end]
            return [(starts[i], starts[i + 1] - starts[i], True) for i in range(n)]
    return None  # several fragments per frame and no table: pydicom's get_frame decides


def _pixel_format(header: Dataset) -> PixelFormat:
    return PixelFormat(
        int(header.get("BitsAllocated", 8)),
        int(header.get("BitsStored", header.get("BitsAllocated", 8))),
        int(header.get("SamplesPerPixel", 1)),
        int(header.get("PixelRepresentation", 0)),
    )


def _encapsulated_frame(fp: io.BufferedReader[Any], layout: FrameLayout, index: int) -> bytes:
    h = layout.header
    extended = None
    if "ExtendedOffsetTable" in h and "ExtendedOffsetTableLengths" in h:
        extended = (bytes(h.ExtendedOffsetTable), bytes(h.ExtendedOffsetTableLengths))
    fp.seek(layout.value_offset)
    return get_frame(fp, index, number_of_frames=layout.frames, extended_offsets=extended)


def _decode(layout: FrameLayout, codestream: bytes) -> np.ndarray[Any, Any]:
    """One encapsulated frame decoded (colour as RGB), the other frames untouched."""
    ds = Dataset()
    ds.file_meta = layout.header.file_meta
    ds.update(layout.header)
    ds.NumberOfFrames = 1
    ds.PixelData = encapsulate([codestream])
    ds["PixelData"].VR = "OB"
    ds.pixel_array_options(decoding_plugin=decoding_plugin(layout.syntax))
    return ds.pixel_array


def _as_native(arr: np.ndarray[Any, Any], header: Dataset) -> bytes:
    width = int(header.BitsAllocated) // 8
    kind = "i" if int(header.get("PixelRepresentation", 0)) else "u"
    return np.ascontiguousarray(arr, dtype=f"<{kind}{max(width, 1)}").tobytes()


def _encode(arr: np.ndarray[Any, Any], target: str, header: Dataset) -> bytes:
    if target in (ts.RLE_LOSSLESS, ts.JPEG_LS_LOSSLESS, ts.JPEG_LS_NEAR_LOSSLESS,
                  ts.JPEG_2000_LOSSLESS, ts.JPEG_2000):  # fmt: skip
        options: dict[str, Any] = {}
        if target == ts.JPEG_LS_NEAR_LOSSLESS:
            options["jls_error"] = JLS_NEAR
        if target == ts.JPEG_2000:
            options["j2k_cr"] = [J2K_RATIO]
        samples = int(header.get("SamplesPerPixel", 1))
        photometric = "RGB" if samples == 3 else str(header.PhotometricInterpretation)
        try:
            return _encode_with_pydicom(arr, target, header, photometric, samples, options)
        except RuntimeError:
            if target != ts.JPEG_2000_LOSSLESS:
                raise
    return encode_frame(arr, target, int(header.BitsStored))


def _encode_with_pydicom(
    arr: np.ndarray[Any, Any],
    target: str,
    header: Dataset,
    photometric: str,
    samples: int,
    options: dict[str, Any],
) -> bytes:
    return get_encoder(UID(target)).encode(
        arr,
        rows=int(header.Rows),
        columns=int(header.Columns),
        samples_per_pixel=samples,
        bits_allocated=int(header.BitsAllocated),
        bits_stored=int(header.BitsStored),
        pixel_representation=int(header.get("PixelRepresentation", 0)),
        photometric_interpretation=photometric,
        number_of_frames=1,
        planar_configuration=0,
        **options,
    )


def _native_array(data: bytes, header: Dataset) -> np.ndarray[Any, Any]:
    width = int(header.BitsAllocated) // 8
    kind = "i" if int(header.get("PixelRepresentation", 0)) else "u"
    samples = int(header.get("SamplesPerPixel", 1))
    arr = np.frombuffer(data, f"<{kind}{width}")
    shape: tuple[int, ...] = (int(header.Rows), int(header.Columns))
    if samples > 1:
        if int(header.get("PlanarConfiguration", 0)):
            return arr.reshape((samples, *shape)).transpose(1, 2, 0)
        shape = (*shape, samples)
    return arr.reshape(shape)


def _convert_or_refuse(raw: bytes, layout: FrameLayout, target: str) -> bytes:
    try:
        return _convert(raw, layout, target)
    except DicomCloudError:
        raise
    except Exception as exc:  # codec libraries raise their own error types
        raise NotAcceptable(
            f"a frame in {layout.syntax} could not be converted to {target}: {exc}"
        ) from exc


def _convert(raw: bytes, layout: FrameLayout, target: str) -> bytes:
    """A frame as stored -> the same frame in ``target``."""
    if layout.encapsulated:
        arr = _decode(layout, raw)
    else:
        if int(layout.header.BitsAllocated) % 8:
            raise NotAcceptable("1-bit frames are served only as stored")
        arr = _native_array(raw, layout.header)
    if target == ts.EXPLICIT_VR_LE:
        return _as_native(arr, layout.header)
    return _encode(arr, target, layout.header)


def load_layout(
    blobs: BlobStore, key: str, size: int, syntax: str, loop: asyncio.AbstractEventLoop
) -> FrameLayout:
    """Parse an object up to its pixel data and locate its frames (in a worker thread:
    range reads go back to ``loop``).  Damaged pixel data is a server-side failure,
    reported with its reason."""
    try:
        fp: io.BufferedReader[Any] = io.BufferedReader(_RangeFile(blobs, key, size, loop), _BUFFER)
        if syntax == ts.DEFLATED_EXPLICIT_VR_LE:
            return _inflated_layout(fp.read())
        return _layout(fp, syntax, size)
    except DicomCloudError:
        raise
    except Exception as exc:  # pydicom raises many types on damaged data
        raise DicomCloudError(
            f"the pixel data of the stored object {key} cannot be parsed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def check_frames(
    layout: FrameLayout, stored_syntax: str, numbers: Sequence[int], target: str
) -> None:
    """404 for a frame beyond NumberOfFrames, 406 for an impossible conversion."""
    missing = [n for n in numbers if n > layout.frames]
    if missing:
        raise NotFound(
            f"frame {missing[0]} does not exist: the instance has {layout.frames} frame(s)"
        )
    if target != stored_form(layout):
        check_transcode(stored_syntax, target, _pixel_format(layout.header))


def stored_form(layout: FrameLayout) -> str:
    return layout.syntax if layout.encapsulated else ts.EXPLICIT_VR_LE


async def raw_frame(
    blobs: BlobStore,
    key: str,
    size: int,
    layout: FrameLayout,
    index: int,
    loop: asyncio.AbstractEventLoop,
) -> bytes:
    """Frame ``index`` (zero-based) as stored: one range read when its place is known."""
    if isinstance(layout, _InflatedFrameLayout):
        return layout.frame(index)
    if layout.encapsulated and layout.frame_ranges is not None:
        offset, length, itemised = layout.frame_ranges[index]
        data = await blobs.read_range(key, offset, length)
        if not itemised:
            return data
        return b"".join(generate_fragments(data))
    if not layout.encapsulated:
        return await _native_range(blobs, key, layout, index)

    def locate() -> bytes:
        fp = io.BufferedReader(_RangeFile(blobs, key, size, loop), _BUFFER)
        return _encapsulated_frame(fp, layout, index)

    return await asyncio.to_thread(locate)


async def _native_range(blobs: BlobStore, key: str, layout: FrameLayout, index: int) -> bytes:
    h = layout.header
    bits = int(h.Rows) * int(h.Columns) * int(h.get("SamplesPerPixel", 1))
    bits *= int(h.BitsAllocated)
    start_bit = layout.value_offset * 8 + index * bits
    data = await blobs.read_range(key, start_bit // 8, (start_bit % 8 + bits + 7) // 8)
    if bits % 8 or start_bit % 8:  # 1-bit pixels: frames need not start on a byte
        unpacked = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
        shifted = unpacked[start_bit % 8 : start_bit % 8 + bits]
        return np.packbits(shifted, bitorder="little").tobytes()
    if layout.syntax == ts.EXPLICIT_VR_BE and int(h.BitsAllocated) > 8:
        width = int(h.BitsAllocated) // 8
        return np.frombuffer(data, f">u{width}").astype(f"<u{width}").tobytes()
    return data


def convert_frame(raw: bytes, layout: FrameLayout, target: str) -> Frame:
    """A frame as stored -> a Frame in ``target`` (CPU work: call from a worker)."""
    data = raw if target == stored_form(layout) else _convert_or_refuse(raw, layout, target)
    return Frame(data, ts.frame_media_type(target), target)


class _InflatedFrameLayout(FrameLayout):
    """Deflated objects (PS3.5 A.5) cannot be read by range: inflate once."""

    def frame(self, index: int) -> bytes:
        h = self.header
        length = int(h.Rows) * int(h.Columns) * int(h.get("SamplesPerPixel", 1))
        length = length * int(h.BitsAllocated) // 8
        return bytes(h.PixelData[index * length : (index + 1) * length])


def _inflated_layout(data: bytes) -> _InflatedFrameLayout:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(io.BytesIO(data), force=True)
    if "PixelData" not in ds:
        raise NotFound("the instance has no pixel data, so no frames")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return _InflatedFrameLayout(ds, ts.DEFLATED_EXPLICIT_VR_LE, 0, frames, False)
