"""WADO-URI (PS3.18 9): one instance as application/dicom through query parameters."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

from conftest import LocalArchive
from integration.support import new_instance, pydicom_file

pytestmark = pytest.mark.timeout(60)


def _query(study: str, series: str, sop: str, **extra: str) -> dict[str, str]:
    return {"requestType": "WADO", "studyUID": study, "seriesUID": series, "objectUID": sop,
            **extra}  # fmt: skip


async def test_application_dicom_defaults_to_explicit_vr_little_endian(
    local: LocalArchive,
) -> None:
    stored = pydicom_file("emri_small_jpeg_2k_lossless.dcm").read_bytes()
    await local.stow([stored])
    ds = dcmread(io.BytesIO(stored))
    params = _query(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                    contentType="application/dicom")  # fmt: skip

    response = await local.client.get("/wado", params=params)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom"
    received = dcmread(io.BytesIO(response.content))
    assert received.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(received.pixel_array, ds.pixel_array)


async def test_transfer_syntax_parameter(local: LocalArchive) -> None:
    instance = new_instance()
    await local.stow([instance.data])
    base = _query(instance.study, instance.series, instance.sop, contentType="application/dicom")

    as_stored = await local.client.get("/dicom-web/wado", params={**base, "transferSyntax": "*"})
    j2k = await local.client.get("/wado", params={**base, "transferSyntax": JPEG2000Lossless})

    assert as_stored.status_code == 200 and as_stored.content == instance.data
    assert j2k.status_code == 200, j2k.text
    assert dcmread(io.BytesIO(j2k.content)).file_meta.TransferSyntaxUID == JPEG2000Lossless


async def test_rendered_jpeg_and_png_match_the_wado_rs_rendered_resource(
    local: LocalArchive,
) -> None:
    stored = pydicom_file("emri_small.dcm").read_bytes()  # 10 frames, MONOCHROME2
    await local.stow([stored])
    ds = dcmread(io.BytesIO(stored))
    base = _query(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    rs = (
        f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )

    default = await local.client.get("/wado", params=base)  # image/jpeg (PS3.18 9.3)
    png = await local.client.get(
        "/wado",
        params={**base, "contentType": "image/png", "frameNumber": "5",
                "windowCenter": "300", "windowWidth": "600"},
    )  # fmt: skip
    reference = await local.client.get(
        f"{rs}/frames/5/rendered", params={"window": "300,600,linear"},
        headers={"accept": "image/png"},
    )  # fmt: skip
    small = await local.client.get(
        "/wado", params={**base, "contentType": "image/png", "rows": "32"}
    )

    assert default.status_code == 200, default.text
    assert default.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(default.content)).size == (ds.Columns, ds.Rows)
    assert png.status_code == 200, png.text
    assert png.headers["content-type"] == "image/png"
    assert reference.status_code == 200, reference.text
    assert np.array_equal(
        np.asarray(Image.open(io.BytesIO(png.content))),
        np.asarray(Image.open(io.BytesIO(reference.content))),
    )
    assert Image.open(io.BytesIO(small.content)).size[1] == 32


async def test_region_cuts_out_a_fraction_of_the_image(local: LocalArchive) -> None:
    """``region=left,top,right,bottom`` in fractions of the image (PS3.18 9.1.2.4):
    the same pixels as the WADO-RS source image region of that box."""
    stored = pydicom_file("CT_small.dcm").read_bytes()  # 128 x 128
    await local.stow([stored])
    ds = dcmread(io.BytesIO(stored))
    base = {
        **_query(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID),
        "contentType": "image/png", "windowCenter": "40", "windowWidth": "400",
    }  # fmt: skip
    rs = (
        f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}/rendered"
    )

    quarter = await local.client.get("/wado", params={**base, "region": "0.25,0.5,0.75,1.0"})
    reference = await local.client.get(
        rs, params={"window": "40,400,linear", "viewport": "64,64,32,64,64,64"},
        headers={"accept": "image/png"},
    )  # fmt: skip
    bad = [
        await local.client.get("/wado", params={**base, "region": region})
        for region in ("0.5,0.5,0.5,1", "0,0,1", "0,0,1.5,1", "a,0,1,1", "0.9,0,0.1,1")
    ]

    assert quarter.status_code == 200, quarter.text
    assert reference.status_code == 200, reference.text
    image = np.asarray(Image.open(io.BytesIO(quarter.content)))
    assert image.shape == (64, 64)
    assert np.array_equal(image, np.asarray(Image.open(io.BytesIO(reference.content))))
    for response in bad:
        assert response.status_code == 400, response.text
        assert "region" in response.json()["error"]


async def test_rendered_parameter_errors(local: LocalArchive) -> None:
    instance = new_instance()
    await local.stow([instance.data])
    base = _query(instance.study, instance.series, instance.sop)

    gif = await local.client.get("/wado", params={**base, "contentType": "image/gif"})
    lone = await local.client.get("/wado", params={**base, "windowCenter": "40"})
    frame = await local.client.get("/wado", params={**base, "frameNumber": "0"})
    beyond = await local.client.get("/wado", params={**base, "frameNumber": "7"})

    assert gif.status_code == 406
    assert lone.status_code == 400 and "windowWidth" in lone.json()["error"]
    assert frame.status_code == 400 and "frameNumber" in frame.json()["error"]
    assert beyond.status_code == 404


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"requestType": "WADO-RS"}, 400),
        ({"requestType": ""}, 400),
        ({"objectUID": ""}, 400),
        ({"studyUID": "1.2.x"}, 400),
        ({"transferSyntax": "not-a-uid"}, 400),
        ({"objectUID": "1.2.3.4.5.6"}, 404),
        ({"seriesUID": "1.2.3.4.5.7"}, 404),
        ({"contentType": "text/html"}, 406),
    ],
)
async def test_bad_parameters(local: LocalArchive, change: dict[str, str], status: int) -> None:
    instance = new_instance()
    await local.stow([instance.data])
    params = _query(instance.study, instance.series, instance.sop, contentType="application/dicom")
    params.update(change)

    response = await local.client.get("/wado", params=params)

    assert response.status_code == status, response.text


async def test_unknown_instance_is_404(local: LocalArchive) -> None:
    params = _query(generate_uid(), generate_uid(), generate_uid(), contentType="application/dicom")

    assert (await local.client.get("/wado", params=params)).status_code == 404
