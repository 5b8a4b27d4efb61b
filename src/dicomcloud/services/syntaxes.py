"""Transfer syntaxes as data (PS3.5 Annex A, PS3.6 Annex A) and the media types that
carry their pixel data (PS3.18 8.7.3, tables 8.7.3-2 and 8.7.3-4)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TransferSyntax:
    uid: str
    name: str
    #: Pixel data is encapsulated (PS3.5 A.4) rather than native.
    encapsulated: bool
    #: The compression discards information (PS3.5 8.2).
    lossy: bool
    #: Media type of one frame in this syntax (PS3.18 table 8.7.3-4); "" if none.
    frame_media_type: str = ""
    #: PS3.3 C.7.6.1.1.5.1 Lossy Image Compression Method, for lossy syntaxes.
    lossy_method: str = ""


IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.57"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR_LOSSLESS = "1.2.840.10008.1.2.4.81"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG_2000 = "1.2.840.10008.1.2.4.91"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
HTJ2K_LOSSLESS_RPCL = "1.2.840.10008.1.2.4.202"
HTJ2K = "1.2.840.10008.1.2.4.203"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"

#: The Default Transfer Syntax of DICOMweb payloads (PS3.18 8.7.3.4): Explicit VR
#: Little Endian, not PS3.5's Implicit VR Little Endian.
DICOMWEB_DEFAULT = EXPLICIT_VR_LE

OCTET_STREAM = "application/octet-stream"

_TABLE = (
    TransferSyntax(IMPLICIT_VR_LE, "Implicit VR Little Endian", False, False, OCTET_STREAM),
    TransferSyntax(EXPLICIT_VR_LE, "Explicit VR Little Endian", False, False, OCTET_STREAM),
    TransferSyntax(DEFLATED_EXPLICIT_VR_LE, "Deflated Explicit VR Little Endian", False, False),
    TransferSyntax(EXPLICIT_VR_BE, "Explicit VR Big Endian", False, False),
    TransferSyntax(JPEG_BASELINE, "JPEG Baseline", True, True, "image/jpeg", "ISO_10918_1"),
    TransferSyntax(JPEG_EXTENDED, "JPEG Extended", True, True, "image/jpeg", "ISO_10918_1"),
    TransferSyntax(JPEG_LOSSLESS, "JPEG Lossless", True, False, "image/jpeg"),
    TransferSyntax(JPEG_LOSSLESS_SV1, "JPEG Lossless SV1", True, False, "image/jpeg"),
    TransferSyntax(JPEG_LS_LOSSLESS, "JPEG-LS Lossless", True, False, "image/jls"),
    TransferSyntax(
        JPEG_LS_NEAR_LOSSLESS, "JPEG-LS Near-Lossless", True, True, "image/jls", "ISO_14495_1"
    ),
    TransferSyntax(JPEG_2000_LOSSLESS, "JPEG 2000 Lossless", True, False, "image/jp2"),
    TransferSyntax(JPEG_2000, "JPEG 2000", True, True, "image/jp2", "ISO_15444_1"),
    TransferSyntax(HTJ2K_LOSSLESS, "HTJ2K Lossless", True, False, "image/jphc"),
    TransferSyntax(HTJ2K_LOSSLESS_RPCL, "HTJ2K Lossless RPCL", True, False, "image/jphc"),
    TransferSyntax(HTJ2K, "HTJ2K", True, True, "image/jphc", "ISO_15444_15"),
    TransferSyntax(RLE_LOSSLESS, "RLE Lossless", True, False, "image/dicom-rle"),
    TransferSyntax("1.2.840.10008.1.2.4.92", "JPEG 2000 Part 2 Lossless", True, False, "image/jpx"),
    TransferSyntax("1.2.840.10008.1.2.4.93", "JPEG 2000 Part 2", True, True, "image/jpx"),
    TransferSyntax("1.2.840.10008.1.2.4.100", "MPEG2 MP@ML", True, True, "video/mpeg"),
    TransferSyntax("1.2.840.10008.1.2.4.100.1", "MPEG2 MP@ML F", True, True, "video/mpeg"),
    TransferSyntax("1.2.840.10008.1.2.4.101", "MPEG2 MP@HL", True, True, "video/mpeg"),
    TransferSyntax("1.2.840.10008.1.2.4.101.1", "MPEG2 MP@HL F", True, True, "video/mpeg"),
    TransferSyntax("1.2.840.10008.1.2.4.102", "H.264 HP@4.1", True, True, "video/mp4"),
    TransferSyntax("1.2.840.10008.1.2.4.102.1", "H.264 HP@4.1 F", True, True, "video/mp4"),
    TransferSyntax("1.2.840.10008.1.2.4.103", "H.264 BD", True, True, "video/mp4"),
    TransferSyntax("1.2.840.10008.1.2.4.103.1", "H.264 BD F", True, True, "video/mp4"),
    TransferSyntax("1.2.840.10008.1.2.4.104", "H.264 2D", True, True, "video/mp4"),
    TransferSyntax("1.2.840.10008.1.2.4.104.1", "H.264 2D F", True, True, "video/mp4"),
    TransferSyntax("1.2.840.10008.1.2.4.105", "H.264 3D", True, True, "video/mp4"),
    TransferSyntax("1.2.840.10008.1.2.4.105.1", "H.264 3D F", True, True, "video/mp4"),
    TransferSyntax("1.2.840.10008.1.2.4.106", "H.264 Stereo", True, True, "video/mp4"),
    TransferSyntax("1.2.840.10008.1.2.4.106.1", "H.264 Stereo F", True, True, "video/mp4"),
    TransferSyntax("1.2.840.10008.1.2.4.107", "HEVC Main", True, True, "video/H265"),
    TransferSyntax("1.2.840.10008.1.2.4.108", "HEVC Main 10", True, True, "video/H265"),
    TransferSyntax("1.2.840.10008.1.2.4.110", "JPEG XL Lossless", True, False, "image/jxl"),
    TransferSyntax("1.2.840.10008.1.2.4.111", "JPEG XL Recompression", True, True, "image/jxl"),
    TransferSyntax("1.2.840.10008.1.2.4.112", "JPEG XL", True, True, "image/jxl"),
)

SYNTAXES: dict[str, TransferSyntax] = {ts.uid: ts for ts in _TABLE}

#: PS3.18 table 8.7.3-4: the default transfer syntax of each frame media type.
FRAME_MEDIA_DEFAULTS: dict[str, str] = {
    OCTET_STREAM: EXPLICIT_VR_LE,
    "image/jpeg": JPEG_BASELINE,
    "image/dicom-rle": RLE_LOSSLESS,
    "image/x-dicom-rle": RLE_LOSSLESS,
    "image/jls": JPEG_LS_LOSSLESS,
    "image/x-jls": JPEG_LS_LOSSLESS,
    "image/jp2": JPEG_2000_LOSSLESS,
    "image/jpx": "1.2.840.10008.1.2.4.92",
    "image/jphc": HTJ2K_LOSSLESS,
    "image/jxl": "1.2.840.10008.1.2.4.110",
    "video/mpeg": "1.2.840.10008.1.2.4.100",
    "video/mp4": "1.2.840.10008.1.2.4.102",
    "video/H265": "1.2.840.10008.1.2.4.107",
}


def is_lossy(uid: str) -> bool:
    known = SYNTAXES.get(uid)
    return known is not None and known.lossy


def is_encapsulated(uid: str) -> bool:
    known = SYNTAXES.get(uid)
    return known is not None and known.encapsulated


def frame_media_type(uid: str) -> str:
    """The media type of one frame stored in ``uid`` (PS3.18 table 8.7.3-4)."""
    known = SYNTAXES.get(uid)
    return known.frame_media_type if known and known.frame_media_type else OCTET_STREAM


def frame_media_matches(media_type: str, uid: str) -> bool:
    """Whether ``media_type`` may carry a frame in ``uid`` (x- aliases included)."""
    expected = frame_media_type(uid)
    return media_type.lower() in (expected.lower(), expected.lower().replace("/", "/x-"))
