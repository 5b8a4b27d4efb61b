"""Transcoding between transfer syntaxes, checked against a reference table: every
lossless conversion keeps every pixel; lossy ones are marked lossy (PS3.3 C.7.6.1.1.5);
impossible ones say why."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from dicomcloud.errors import NotAcceptable
from dicomcloud.services import syntaxes as ts
from dicomcloud.services.transcode import TARGETS, can_transcode, transcode_part10

#: Reference files: native, lossless and lossy encapsulated, colour, signed, multi-frame.
SOURCES = {
    "CT_small.dcm": "16-bit signed CT, Explicit VR LE",
    "MR_small_bigendian.dcm": "16-bit, Explicit VR Big Endian (retired)",
    "emri_small.dcm": "12-bit, 10 frames",
    "emri_small_jpeg_2k_lossless.dcm": "JPEG 2000 lossless, 10 frames",
    "SC_rgb_rle_2frame.dcm": "RGB RLE, 2 frames",
    "SC_rgb_jpeg_gdcm.dcm": "RGB JPEG lossless SV1",
    "JPEGLSNearLossless_16.dcm": "JPEG-LS near-lossless, 16-bit",
}
LOSSLESS_TARGETS = sorted(t for t in TARGETS if not ts.is_lossy(t))
LOSSY_TARGETS = sorted(t for t in TARGETS if ts.is_lossy(t))


def _read(name: str) -> bytes:
    path = get_testdata_file(name)
    assert path is not None
    with open(path, "rb") as handle:
        return handle.read()


def _pixels(data: bytes) -> np.ndarray:
    ds = dcmread(io.BytesIO(data))
    if ds.file_meta.TransferSyntaxUID in (ts.JPEG_LS_LOSSLESS, ts.JPEG_LS_NEAR_LOSSLESS):
        ds.pixel_array_options(decoding_plugin="pyjpegls")
    return ds.pixel_array


@pytest.mark.parametrize("target", LOSSLESS_TARGETS)
@pytest.mark.parametrize("name", sorted(SOURCES))
def test_lossless_targets_keep_every_pixel(name: str, target: str) -> None:
    data = _read(name)

    out = transcode_part10(data, target)

    received = dcmread(io.BytesIO(out))
    original = dcmread(io.BytesIO(data))
    assert received.file_meta.TransferSyntaxUID == target
    assert received.SOPInstanceUID == original.SOPInstanceUID
    assert np.array_equal(_pixels(out), _pixels(data))


@pytest.mark.parametrize("target", LOSSY_TARGETS)
def test_lossy_targets_are_marked(target: str) -> None:
    data = _read("SC_rgb.dcm")  # 8-bit RGB fits every lossy target

    out = transcode_part10(data, target)

    received = dcmread(io.BytesIO(out))
    assert received.file_meta.TransferSyntaxUID == target
    assert received.LossyImageCompression == "01"
    assert received.LossyImageCompressionMethod == ts.SYNTAXES[target].lossy_method
    assert float(received.LossyImageCompressionRatio) > 1
    difference = np.abs(_pixels(out).astype(int) - _pixels(data).astype(int))
    assert difference.mean() < 4


def test_same_syntax_returns_the_bytes_unchanged() -> None:
    data = _read("CT_small.dcm")

    assert transcode_part10(data, ts.EXPLICIT_VR_LE) is data


@pytest.mark.parametrize(
    ("name", "target", "reason"),
    [
        ("CT_small.dcm", ts.JPEG_BASELINE, "8-bit"),
        ("CT_small.dcm", ts.JPEG_EXTENDED, "12-bit"),
        ("CT_small.dcm", ts.EXPLICIT_VR_BE, "not supported"),
        ("CT_small.dcm", "1.2.840.10008.1.2.4.100", "not supported"),
        ("JPEG-lossy.dcm", ts.EXPLICIT_VR_LE, "failed"),  # 12-bit JPEG no decoder reads
    ],
)
def test_impossible_conversions_say_why(name: str, target: str, reason: str) -> None:
    with pytest.raises(NotAcceptable) as refused:
        transcode_part10(_read(name), target)
    assert reason in refused.value.reason


def test_can_transcode_table() -> None:
    mpeg2 = "1.2.840.10008.1.2.4.100"
    assert can_transcode(ts.JPEG_2000_LOSSLESS, ts.EXPLICIT_VR_LE)
    assert can_transcode(ts.EXPLICIT_VR_LE, ts.HTJ2K_LOSSLESS)
    assert can_transcode(mpeg2, mpeg2)
    assert not can_transcode(mpeg2, ts.EXPLICIT_VR_LE)  # no video decoder
    assert not can_transcode(ts.EXPLICIT_VR_LE, mpeg2)
    assert not can_transcode(ts.EXPLICIT_VR_LE, "1.2.3.4")
