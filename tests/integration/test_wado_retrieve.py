"""WADO-RS retrieve of studies, series and instances (PS3.18 10.4) with transfer syntax
negotiation (PS3.18 8.7.3, 8.7.5): what a DICOMweb client sees."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from conftest import LocalArchive
from integration.support import AS_STORED, new_instance, pydicom_file, split_multipart

pytestmark = pytest.mark.timeout(120)

DICOM_PARTS = 'multipart/related; type="application/dicom"'


def _pixels(data: bytes) -> np.ndarray:
    ds = dcmread(io.BytesIO(data))
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax in (JPEGLSLossless, "1.2.840.10008.1.2.4.81"):
        ds.pixel_array_options(decoding_plugin="pyjpegls")
    return ds.pixel_array


def _parts(response: object) -> list[tuple[str, bytes]]:
    assert response.status_code == 200, response.text  # type: ignore[attr-defined]
    content_type = response.headers["content-type"]  # type: ignore[attr-defined]
    assert content_type.startswith(f"{DICOM_PARTS}; boundary=")
    parts = split_multipart(response.content, content_type)  # type: ignore[attr-defined]
    for part in parts:
        assert int(part.headers["content-length"]) == len(part.data)
    return [(p.headers["content-type"], p.data) for p in parts]


async def _study(local: LocalArchive) -> tuple[str, str, str, dict[str, bytes]]:
    """Three instances in two series of one study, in three transfer syntaxes."""
    first = new_instance()
    study, series_a = first.study, first.series
    second = new_instance(study=study, series=series_a)
    third = new_instance(study=study)
    sent = {i.sop: i.data for i in (first, second, third)}
    response = await local.stow(list(sent.values()))
    assert response.status_code == 200, response.text
    return study, series_a, third.series, sent


async def test_study_as_stored_is_byte_identical(local: LocalArchive) -> None:
    study, _, _, sent = await _study(local)

    parts = _parts(await local.retrieve(f"/studies/{study}", **AS_STORED))

    received = {str(dcmread(io.BytesIO(data)).SOPInstanceUID): data for _, data in parts}
    assert received == sent
    assert {ct for ct, _ in parts} == {
        f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
    }


async def test_series_holds_only_its_instances(local: LocalArchive) -> None:
    study, series_a, series_b, sent = await _study(local)

    in_a = _parts(await local.retrieve(f"/studies/{study}/series/{series_a}", **AS_STORED))
    in_b = _parts(await local.retrieve(f"/studies/{study}/series/{series_b}", **AS_STORED))

    assert len(in_a) == 2 and len(in_b) == 1
    assert sorted(d for _, d in in_a + in_b) == sorted(sent.values())
    assert all(dcmread(io.BytesIO(d)).SeriesInstanceUID == series_a for _, d in in_a)


async def test_default_is_explicit_vr_little_endian_with_the_same_pixels(
    local: LocalArchive,
) -> None:
    stored = pydicom_file("emri_small_jpeg_2k_lossless.dcm").read_bytes()  # 10 frames
    await local.stow([stored])
    ds = dcmread(io.BytesIO(stored))
    path = f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"

    ((content_type, data),) = _parts(await local.retrieve(path, accept=DICOM_PARTS))

    assert content_type == f"application/dicom; transfer-syntax={ExplicitVRLittleEndian}"
    assert dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(_pixels(data), _pixels(stored))
    assert dcmread(io.BytesIO(data)).SOPInstanceUID == ds.SOPInstanceUID


async def test_default_keeps_lossy_pixel_data_as_stored(local: LocalArchive) -> None:
    stored = pydicom_file("JPEG2000.dcm").read_bytes()  # JPEG 2000 (lossy allowed)
    await local.stow([stored])
    ds = dcmread(io.BytesIO(stored))

    ((content_type, data),) = _parts(await local.retrieve(f"/studies/{ds.StudyInstanceUID}"))

    assert content_type == f"application/dicom; transfer-syntax={JPEG2000}"
    assert data == stored


@pytest.mark.parametrize("target", [JPEG2000Lossless, JPEGLSLossless, RLELossless])
async def test_lossless_transcoding_keeps_every_pixel(local: LocalArchive, target: str) -> None:
    stored = pydicom_file("CT_small.dcm").read_bytes()
    await local.stow([stored])
    ds = dcmread(io.BytesIO(stored))
    series = f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    path = f"{series}/instances/{ds.SOPInstanceUID}"

    response = await local.retrieve(path, accept=f"{DICOM_PARTS}; transfer-syntax={target}")

    ((content_type, data),) = _parts(response)
    assert content_type == f"application/dicom; transfer-syntax={target}"
    received = dcmread(io.BytesIO(data))
    assert received.file_meta.TransferSyntaxUID == target
    assert np.array_equal(_pixels(data), _pixels(stored))
    assert "LossyImageCompression" not in received or received.LossyImageCompression == "00"


async def test_first_possible_syntax_of_several_is_chosen(local: LocalArchive) -> None:
    stored = pydicom_file("CT_small.dcm").read_bytes()  # 16-bit: no JPEG baseline
    await local.stow([stored])
    ds = dcmread(io.BytesIO(stored))
    accept = (
        f"{DICOM_PARTS}; transfer-syntax={JPEGBaseline8Bit}, "
        f"{DICOM_PARTS}; transfer-syntax={JPEG2000Lossless}; q=0.9, application/zip; q=0.5"
    )

    ((content_type, _),) = _parts(
        await local.retrieve(f"/studies/{ds.StudyInstanceUID}", accept=accept)
    )

    assert content_type == f"application/dicom; transfer-syntax={JPEG2000Lossless}"


async def test_impossible_conversion_is_406_with_the_reason(local: LocalArchive) -> None:
    stored = pydicom_file("CT_small.dcm").read_bytes()
    await local.stow([stored])
    ds = dcmread(io.BytesIO(stored))

    response = await local.retrieve(
        f"/studies/{ds.StudyInstanceUID}",
        accept=f"{DICOM_PARTS}; transfer-syntax={JPEGBaseline8Bit}",
    )

    assert response.status_code == 406
    assert "8-bit" in response.json()["error"]


async def test_lossy_target_marks_the_instance_lossy(local: LocalArchive) -> None:
    stored = pydicom_file("SC_rgb.dcm").read_bytes()
    await local.stow([stored])
    ds = dcmread(io.BytesIO(stored))

    response = await local.retrieve(
        f"/studies/{ds.StudyInstanceUID}",
        accept=f"{DICOM_PARTS}; transfer-syntax={JPEGBaseline8Bit}",
    )

    ((_, data),) = _parts(response)
    received = dcmread(io.BytesIO(data))
    assert received.LossyImageCompression == "01"
    assert received.LossyImageCompressionMethod == "ISO_10918_1"
    assert received.PhotometricInterpretation == "YBR_FULL_422"
    difference = np.abs(_pixels(data).astype(int) - ds.pixel_array.astype(int))
    assert difference.mean() < 3  # close, not equal: lossy


async def test_zip_of_a_study(local: LocalArchive) -> None:
    study, _, _, sent = await _study(local)

    response = await local.retrieve(f"/studies/{study}", accept="application/zip")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.testzip() is None
        files = {name: archive.read(name) for name in archive.namelist()}
    assert len(files) == 3
    for name, data in files.items():
        ds: Dataset = dcmread(io.BytesIO(data))
        assert name == f"{study}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
        assert data == sent[str(ds.SOPInstanceUID)]


async def test_single_part_application_dicom_for_an_instance(local: LocalArchive) -> None:
    instance = new_instance()
    await local.stow([instance.data])

    response = await local.retrieve(instance.path, accept="application/dicom; transfer-syntax=*")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/dicom")
    assert response.content == instance.data


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/studies/1.2.3.999", 404),
        ("/studies/1.2.3.999/series/1.2.3.998", 404),
        ("/studies/1.2.x", 400),
        ("/studies/1.2.3/series/01.2", 400),
    ],
)
async def test_unknown_or_malformed_uids(local: LocalArchive, path: str, status: int) -> None:
    await _study(local)

    response = await local.retrieve(path)

    assert response.status_code == status, response.text


async def test_series_of_another_study_is_404(local: LocalArchive) -> None:
    study, series_a, _, _ = await _study(local)
    other = new_instance()
    await local.stow([other.data])

    response = await local.retrieve(f"/studies/{other.study}/series/{series_a}")

    assert response.status_code == 404
    assert (await local.retrieve(f"/studies/{study}", accept="text/html")).status_code == 406


async def test_objects_above_the_single_read_size_stream_unchanged(local: LocalArchive) -> None:
    big = new_instance(pixels=9 * 1024 * 1024)  # streamed in chunks, not read whole
    small = new_instance(study=big.study, series=big.series)
    await local.stow([big.data, small.data])

    parts = _parts(await local.retrieve(f"/studies/{big.study}", **AS_STORED))
    archive = await local.retrieve(f"/studies/{big.study}", accept="application/zip")

    assert sorted(data for _, data in parts) == sorted([big.data, small.data])
    with zipfile.ZipFile(io.BytesIO(archive.content)) as unzipped:
        assert sorted(unzipped.read(n) for n in unzipped.namelist()) == sorted(
            [big.data, small.data]
        )
