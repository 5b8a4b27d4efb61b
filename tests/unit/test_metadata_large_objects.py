"""Metadata of a large stored file built from ranged reads (``RangeReader``) equals the
metadata built from the whole file, and reads only a small part of it."""

from __future__ import annotations

import io

import pytest
from pydicom.data import get_testdata_file

from dicomcloud.services.metadata_json import (
    RangeReader,
    build_instance_metadata,
    build_instance_metadata_from,
)

PREFIX = "/studies/1/series/2/instances/3/bulkdata/"


def _file(name: str) -> bytes:
    path = get_testdata_file(name)
    assert path is not None, name
    with open(path, "rb") as f:
        return f.read()


class _Counting:
    """``read_range`` over bytes, counting what was read."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.read = 0

    def __call__(self, offset: int, length: int) -> bytes:
        chunk = self.data[offset : offset + length]
        self.read += len(chunk)
        return chunk


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",  # native
        "emri_small.dcm",  # native multi-frame
        "SC_rgb_dcmtk_+eb+cy+n1.dcm",  # encapsulated JPEG (undefined length)
        "MR_small_RLE.dcm",  # encapsulated RLE
        "rtplan.dcm",  # nested sequences
        "waveform_ecg.dcm",  # waveform data in a sequence
        "MR_small_bigendian.dcm",  # explicit VR big endian
        "MR_small_implicit.dcm",  # implicit VR
    ],
)
@pytest.mark.parametrize("threshold", [64, 1024])
def test_ranged_build_equals_the_whole_file_build(name: str, threshold: int) -> None:
    data = _file(name)
    whole = build_instance_metadata(data, threshold=threshold, uri_prefix=PREFIX)
    reads = _Counting(data)
    reader = RangeReader(reads, len(data), block=4096)

    ranged = build_instance_metadata_from(reader, threshold=threshold, uri_prefix=PREFIX)

    assert ranged["dataset"] == whole["dataset"]
    assert ranged["bulk"] == whole["bulk"]


def test_a_large_native_value_is_not_read() -> None:
    data = _file("emri_small.dcm")  # 10 frames of 64x64x16 bit: 81,920 bytes of pixels
    reads = _Counting(data)
    reader = RangeReader(reads, len(data), block=4096)

    built = build_instance_metadata_from(reader, threshold=1024, uri_prefix=PREFIX)

    offset, length = built["bulk"]["7FE00010"]
    assert length == 81920
    assert data[offset : offset + length] == _pixels(data)
    assert reads.read < len(data) - 81920 + 2 * 4096  # the pixels stayed in the file


def _pixels(data: bytes) -> bytes:
    from pydicom import dcmread

    return bytes(dcmread(io.BytesIO(data)).PixelData)


def test_range_reader_seeks_and_reads_like_a_file() -> None:
    data = bytes(range(256)) * 10
    reader = RangeReader(_Counting(data), len(data))
    assert reader.seek(100) == 100
    assert reader.read(10) == data[100:110]
    assert reader.seek(-5, io.SEEK_END) == len(data) - 5
    assert reader.read(100) == data[-5:]
    assert reader.read(1) == b""
    reader.seek(3)
    assert reader.seek(2, io.SEEK_CUR) == 5
    assert reader.tell() == 5
