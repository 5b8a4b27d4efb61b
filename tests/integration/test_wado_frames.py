"""WADO-RS frames (PS3.18 10.4.1.1.4, 8.7.3.3.2): single- and multi-frame instances,
native and encapsulated, as stored or converted, read without the whole object."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from conftest import LocalArchive
from dicomcloud.services.transcode import transcode_part10
from integration.support import pydicom_file, split_multipart

pytestmark = pytest.mark.timeout(120)

DICOMWEB_CLIENT_DEFAULT = 'multipart/related; type="*/*"'
OHIF_DEFAULT = "multipart/related; type=application/octet-stream; transfer-syntax=*"
OCTET = 'multipart/related; type="application/octet-stream"'


async def _stored(local: LocalArchive, name: str) -> tuple[Dataset, str]:
    data = pydicom_file(name).read_bytes()
    response = await local.stow([data])
    assert response.status_code in (200, 202), response.text  # 202: a clipped value
    ds = dcmread(io.BytesIO(data))
    path = (
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/frames"
    )
    return ds, path


def _frames(response: Any) -> list[tuple[str, bytes]]:
    assert response.status_code == 200, response.text
    parts = split_multipart(response.content, response.headers["content-type"])
    return [(p.headers["content-type"], p.data) for p in parts]


def _native(ds: Dataset, index: int) -> bytes:
    arr = ds.pixel_array
    frame = arr[index] if int(ds.get("NumberOfFrames", 1)) > 1 else arr
    return frame.astype(frame.dtype.newbyteorder("<")).tobytes()


async def test_native_multiframe_frames_with_dicomweb_client_default(local: LocalArchive) -> None:
    ds, path = await _stored(local, "emri_small.dcm")  # 10 frames, 16 bits, native

    response = await local.retrieve(f"{path}/1,3,5", accept=DICOMWEB_CLIENT_DEFAULT)

    frames = _frames(response)
    assert response.headers["content-type"].startswith(
        'multipart/related; type="application/octet-stream"'
    )
    assert [ct for ct, _ in frames] == [
        f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
    ] * 3
    assert [data for _, data in frames] == [_native(ds, i) for i in (0, 2, 4)]


async def test_single_frame_instance(local: LocalArchive) -> None:
    ds, path = await _stored(local, "CT_small.dcm")

    frames = _frames(await local.retrieve(f"{path}/1", accept=OCTET))

    assert [data for _, data in frames] == [_native(ds, 0)]
    assert (await local.retrieve(f"{path}/2", accept=OCTET)).status_code == 404


async def test_compressed_frame_as_stored_is_the_stored_codestream(local: LocalArchive) -> None:
    ds, path = await _stored(local, "emri_small_jpeg_2k_lossless.dcm")
    stored = list(generate_frames(ds.PixelData, number_of_frames=10))

    for accept in (DICOMWEB_CLIENT_DEFAULT, OHIF_DEFAULT, 'multipart/related; type="image/jp2"'):
        frames = _frames(await local.retrieve(f"{path}/7,2", accept=accept))
        assert [ct for ct, _ in frames] == [f"image/jp2; transfer-syntax={JPEG2000Lossless}"] * 2
        assert [data for _, data in frames] == [stored[6], stored[1]]


async def test_compressed_frame_decoded_to_octet_stream(local: LocalArchive) -> None:
    ds, path = await _stored(local, "emri_small_jpeg_2k_lossless.dcm")

    frames = _frames(await local.retrieve(f"{path}/4", accept=OCTET))

    ((content_type, data),) = frames
    assert content_type == f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}"
    assert data == _native(ds, 3)


async def test_rle_colour_frames(local: LocalArchive) -> None:
    ds, path = await _stored(local, "SC_rgb_rle_2frame.dcm")

    as_stored = _frames(await local.retrieve(f"{path}/2", accept=DICOMWEB_CLIENT_DEFAULT))
    decoded = _frames(await local.retrieve(f"{path}/2", accept=OCTET))

    assert as_stored == [
        (
            f"image/dicom-rle; transfer-syntax={RLELossless}",
            list(generate_frames(ds.PixelData, number_of_frames=2))[1],
        )
    ]
    assert decoded[0][1] == _native(ds, 1)


async def test_native_frame_converted_to_jpeg_ls_keeps_its_pixels(local: LocalArchive) -> None:
    ds, path = await _stored(local, "emri_small.dcm")

    frames = _frames(
        await local.retrieve(f"{path}/5", accept='multipart/related; type="image/jls"')
    )

    ((content_type, codestream),) = frames
    assert content_type == f"image/jls; transfer-syntax={JPEGLSLossless}"
    single = Dataset()
    single.file_meta = ds.file_meta.__class__()
    single.file_meta.TransferSyntaxUID = JPEGLSLossless
    for keyword in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored",
                    "HighBit", "PixelRepresentation", "PhotometricInterpretation"):  # fmt: skip
        setattr(single, keyword, ds[keyword].value)
    single.PixelData = encapsulate([codestream])
    single.pixel_array_options(decoding_plugin="pyjpegls")
    assert np.array_equal(single.pixel_array, ds.pixel_array[4])


async def test_impossible_frame_conversion_is_406(local: LocalArchive) -> None:
    _, path = await _stored(local, "emri_small.dcm")  # 12-bit: no JPEG baseline

    response = await local.retrieve(f"{path}/1", accept='multipart/related; type="image/jpeg"')

    assert response.status_code == 406
    assert "8-bit" in response.json()["error"]


@pytest.mark.parametrize("frames", ["0", "a", "1,,2", "-1", "1.5", "1;2"])
async def test_malformed_frame_lists_are_400(local: LocalArchive, frames: str) -> None:
    _, path = await _stored(local, "emri_small.dcm")

    response = await local.retrieve(f"{path}/{frames}")

    assert response.status_code == 400, response.text
    assert "frame list" in response.json()["error"]


async def test_missing_frame_is_404(local: LocalArchive) -> None:
    _, path = await _stored(local, "emri_small.dcm")

    response = await local.retrieve(f"{path}/3,11")

    assert response.status_code == 404
    assert "11" in response.json()["error"]


async def test_no_pixel_data_is_404(local: LocalArchive) -> None:
    ds, _ = await _stored(local, "rtplan.dcm")
    path = (
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/frames/1"
    )

    assert (await local.retrieve(path)).status_code == 404


async def test_middle_frame_of_a_100_frame_instance_reads_a_small_part(
    local: LocalArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = dcmread(pydicom_file("emri_small_jpeg_2k_lossless.dcm"))
    codestreams = list(generate_frames(source.PixelData, number_of_frames=10))
    frames = [codestreams[i % 10] for i in range(100)]
    source.NumberOfFrames = 100
    source.PixelData = encapsulate(frames, has_bot=True)
    out = io.BytesIO()
    source.save_as(out, enforce_file_format=True)
    data = out.getvalue()
    await local.stow([data])
    path = (
        f"/studies/{source.StudyInstanceUID}/series/{source.SeriesInstanceUID}"
        f"/instances/{source.SOPInstanceUID}/frames/50"
    )
    blobs = local.archive.blobs
    read = 0
    original = blobs.read_range

    async def counting(key: str, offset: int, length: int) -> bytes:
        nonlocal read
        chunk = await original(key, offset, length)
        read += len(chunk)
        return chunk

    monkeypatch.setattr(blobs, "read_range", counting)

    ((_, frame),) = _frames(await local.retrieve(path, accept=DICOMWEB_CLIENT_DEFAULT))

    assert frame == codestreams[49 % 10]
    assert read < len(data) / 4, (read, len(data))


@pytest.mark.parametrize("source", ["deflated", "big endian"])
async def test_frames_of_deflated_and_big_endian_objects(local: LocalArchive, source: str) -> None:
    if source == "deflated":
        original = pydicom_file("CT_small.dcm").read_bytes()
        data = transcode_part10(original, DeflatedExplicitVRLittleEndian)
    else:
        data = pydicom_file("MR_small_bigendian.dcm").read_bytes()
    response = await local.stow([data])
    assert response.status_code in (200, 202), response.text
    ds = dcmread(io.BytesIO(data))
    path = (
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/frames/1"
    )

    frames = _frames(await local.retrieve(path, accept=DICOMWEB_CLIENT_DEFAULT))

    assert frames == [
        (f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}", _native(ds, 0))
    ]
