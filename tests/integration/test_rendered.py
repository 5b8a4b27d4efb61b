"""Rendered and thumbnail resources (PS3.18 10.4.1.1.x, 8.3.5.1) checked against a
reference rendering computed here with numpy from pydicom's decoded pixels (PS3.3
C.11.1 rescale, C.11.2.1.2 windowing, C.7.6.3.1.2 YBR, C.7.6.3.1.5 palette)."""

from __future__ import annotations

import io
from typing import Any

import httpx
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.utils import pixel_array
from pydicom.uid import generate_uid

from conftest import LocalArchive
from integration.support import new_dataset, part10, pydicom_file, split_multipart


def linear_window(values: NDArray[np.float64], center: float, width: float) -> NDArray[np.uint8]:
    """PS3.3 C.11.2.1.2.1 with an output range of 0..255."""
    low = center - 0.5 - (width - 1) / 2
    high = center - 0.5 + (width - 1) / 2
    out = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    out = np.where(values <= low, 0.0, np.where(values > high, 255.0, out))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def modality(ds: Dataset, frame: int = 0) -> NDArray[np.float64]:
    stored = pixel_array(ds, index=frame).astype(np.float64)
    return stored * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))


def first(value: Any) -> float:
    """The first of a DS value's values (Window Center/Width may have several)."""
    return float(value[0]) if isinstance(value, MultiValue) else float(value)


def min_max(values: NDArray[np.float64]) -> NDArray[np.uint8]:
    low, high = values.min(), values.max()
    return np.rint((values - low) / (high - low) * 255.0).astype(np.uint8)


def decoded(response: httpx.Response) -> NDArray[np.uint8]:
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)))


async def stored(local: LocalArchive, name: str) -> tuple[Dataset, str]:
    data = pydicom_file(name).read_bytes()
    response = await local.stow([data])
    assert response.status_code == 200, response.text
    ds = dcmread(io.BytesIO(data))
    series = f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    path = f"{series}/instances/{ds.SOPInstanceUID}"
    return ds, path


async def test_explicit_window_png_is_exact(local: LocalArchive) -> None:
    ds, path = await stored(local, "CT_small.dcm")

    image = decoded(
        await local.retrieve(f"{path}/rendered?window=40,400,linear", Accept="image/png")
    )

    assert image.dtype == np.uint8
    assert np.array_equal(image, linear_window(modality(ds), 40, 400))


@pytest.mark.parametrize("name", ["MR_small.dcm", "MR2_UNCR.dcm"])
async def test_window_of_the_data_set_is_used_by_default(local: LocalArchive, name: str) -> None:
    ds, path = await stored(local, name)

    image = decoded(await local.retrieve(f"{path}/rendered", Accept="image/png"))

    expected = linear_window(modality(ds), first(ds.WindowCenter), first(ds.WindowWidth))
    assert np.array_equal(image, expected)


async def test_monochrome1_is_inverted(local: LocalArchive) -> None:
    ds, path = await stored(local, "RG3_UNCI.dcm")

    image = decoded(await local.retrieve(f"{path}/rendered", Accept="image/png"))

    expected = 255 - linear_window(modality(ds), first(ds.WindowCenter), first(ds.WindowWidth))
    assert np.array_equal(image, expected)


async def test_rgb_is_rendered_as_stored(local: LocalArchive) -> None:
    ds, path = await stored(local, "SC_rgb.dcm")

    image = decoded(await local.retrieve(f"{path}/rendered", Accept="image/png"))

    assert np.array_equal(image, pixel_array(ds))


async def test_ybr_full_is_converted_to_rgb(local: LocalArchive) -> None:
    ds, path = await stored(local, "SC_ybr_full_uncompressed.dcm")

    image = decoded(await local.retrieve(f"{path}/rendered", Accept="image/png"))

    ybr = pixel_array(ds, raw=True).astype(np.float64)
    y, cb, cr = ybr[..., 0], ybr[..., 1] - 128, ybr[..., 2] - 128
    rgb = np.stack(  # PS3.3 C.7.6.3.1.2
        [y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1
    )
    expected = np.clip(np.rint(rgb), 0, 255)
    assert np.abs(image.astype(np.int16) - expected).max() <= 1


async def test_palette_colour_goes_through_its_lookup_tables(local: LocalArchive) -> None:
    ds, path = await stored(local, "OBXXXX1A.dcm")

    image = decoded(await local.retrieve(f"{path}/rendered", Accept="image/png"))

    indices = pixel_array(ds).astype(np.int64)
    channels = []
    for colour in ("Red", "Green", "Blue"):
        entries, first_mapped, bits = getattr(ds, f"{colour}PaletteColorLookupTableDescriptor")
        table = np.frombuffer(getattr(ds, f"{colour}PaletteColorLookupTableData"), "<u2")
        looked_up = table[np.clip(indices - first_mapped, 0, (entries or 65536) - 1)]
        channels.append(np.rint(looked_up * 255.0 / (2**bits - 1)))
    assert bits == 16
    assert np.array_equal(image, np.stack(channels, axis=-1).astype(np.uint8))


async def test_jpeg_is_close_to_the_reference(local: LocalArchive) -> None:
    ds, path = await stored(local, "CT_small.dcm")

    response = await local.retrieve(f"{path}/rendered?window=40,400&quality=95")

    assert response.headers["content-type"] == "image/jpeg"
    image = decoded(response).astype(np.int16)
    expected = linear_window(modality(ds), 40, 400).astype(np.int16)
    assert np.abs(image - expected).mean() < 2.0


async def test_quality_and_viewport(local: LocalArchive) -> None:
    _, path = await stored(local, "CT_small.dcm")  # 128 x 128

    low = await local.retrieve(f"{path}/rendered?quality=5")
    high = await local.retrieve(f"{path}/rendered?quality=95")
    small = decoded(await local.retrieve(f"{path}/rendered?viewport=64,32"))
    wide = decoded(await local.retrieve(f"{path}/rendered?viewport=300,200"))

    assert len(low.content) < len(high.content)
    assert small.shape == (32, 32)
    assert wide.shape == (200, 200)


async def test_viewport_source_region(local: LocalArchive) -> None:
    """``viewport=vw,vh,sx,sy,sw,sh`` (PS3.18 8.3.5.1.3): the region is cut out before
    it is fitted into the viewport; empty values default to the image's edges, and a
    negative width or height flips the region."""
    ds, path = await stored(local, "CT_small.dcm")  # 128 x 128
    reference = linear_window(modality(ds), 40, 400)

    async def fetch(url: str) -> NDArray[np.uint8]:
        return decoded(await local.retrieve(url, Accept="image/png"))

    cut = await fetch(f"{path}/rendered?window=40,400&viewport=32,32,10,20,32,32")
    corner = await fetch(f"{path}/rendered?window=40,400&viewport=64,64,64,64,,")
    flipped = await fetch(f"{path}/rendered?window=40,400&viewport=32,32,41,20,-32,32")
    upside_down = await fetch(f"{path}/rendered?window=40,400&viewport=32,32,10,52,32,-32")
    halved = await fetch(f"{path}/rendered?window=40,400&viewport=16,16,0,0,32,32")

    assert np.array_equal(cut, reference[20:52, 10:42])
    assert np.array_equal(corner, reference[64:, 64:])
    assert np.array_equal(flipped, reference[20:52, 9:41][:, ::-1])
    assert np.array_equal(upside_down, reference[20:52, 10:42][::-1, :])
    assert halved.shape == (16, 16)  # the 32 x 32 region scaled into the viewport


async def test_frames_of_a_multiframe_instance(local: LocalArchive) -> None:
    ds, path = await stored(local, "emri_small.dcm")  # 10 frames, no window

    one = decoded(await local.retrieve(f"{path}/frames/3/rendered", Accept="image/png"))
    several = await local.retrieve(
        f"{path}/frames/2,10/rendered", Accept='multipart/related; type="image/png"'
    )

    assert np.array_equal(one, min_max(modality(ds, 2)))
    parts = split_multipart(several.content, several.headers["content-type"])
    assert [p.headers["content-type"] for p in parts] == ["image/png", "image/png"]
    for part, frame in zip(parts, (1, 9), strict=True):
        image = np.asarray(Image.open(io.BytesIO(part.data)))
        assert np.array_equal(image, min_max(modality(ds, frame)))
    assert (await local.retrieve(f"{path}/frames/11/rendered")).status_code == 404
    assert (await local.retrieve(f"{path}/frames/0/rendered")).status_code == 400
    assert (await local.retrieve(f"{path}/frames/1,x/rendered")).status_code == 400


async def test_series_and_study_rendered_are_multipart_of_instances(local: LocalArchive) -> None:
    study, series = generate_uid(), generate_uid()
    files = []
    for number in (1, 2, 3):
        ds = new_dataset(study=study, series=series, pixels=64)
        ds.InstanceNumber = number
        files.append(part10(ds))
    lone = new_dataset(study=study, pixels=64)
    assert (await local.stow([*files, part10(lone)])).status_code == 200

    series_response = await local.retrieve(f"/studies/{study}/series/{series}/rendered")
    study_response = await local.retrieve(
        f"/studies/{study}/rendered", Accept='multipart/related; type="image/png"'
    )
    refused = await local.retrieve(f"/studies/{study}/series/{series}/rendered", Accept="image/png")
    single = await local.retrieve(
        f"/studies/{study}/series/{lone.SeriesInstanceUID}/rendered", Accept="image/png"
    )

    parts = split_multipart(series_response.content, series_response.headers["content-type"])
    assert len(parts) == 3
    assert all(p.headers["content-type"] == "image/jpeg" for p in parts)
    assert len(split_multipart(study_response.content, study_response.headers["content-type"])) == 4
    assert refused.status_code == 406
    assert single.headers["content-type"] == "image/png"
    assert decoded(single).shape == (1, 64)


async def test_thumbnails_at_every_level(local: LocalArchive) -> None:
    ds, path = await stored(local, "emri_small.dcm")
    _, big_path = await stored(local, "MR-SIEMENS-DICOM-WithOverlays.dcm")  # 484 x 484
    series_path = path.rsplit("/instances/", 1)[0]
    study_path = series_path.rsplit("/series/", 1)[0]

    for resource in (study_path, series_path, path, f"{path}/frames/4"):
        response = await local.retrieve(f"{resource}/thumbnail")
        assert response.headers["content-type"] == "image/jpeg", resource
        assert decoded(response).shape == (64, 64)
    middle = decoded(await local.retrieve(f"{path}/thumbnail", Accept="image/png"))
    large = decoded(await local.retrieve(f"{big_path}/thumbnail"))
    sized = decoded(await local.retrieve(f"{big_path}/thumbnail?viewport=50,50"))

    assert np.array_equal(middle, min_max(modality(ds, 5)))
    assert large.shape == (128, 128)
    assert sized.shape == (50, 50)


@pytest.mark.parametrize(
    "query",
    [
        "window=abc,400",
        "window=40",
        "window=40,0",
        "window=40,400,CUBIC",
        "window=nan,400",
        "viewport=0,10",
        "viewport=10",
        "viewport=a,b",
        "viewport=10,10,1,2,3",  # five values
        "viewport=10,10,-1,0,5,5",  # sx negative
        "viewport=10,10,0,0,0,5",  # sw 0
        "viewport=10,10,x,0,5,5",
        "viewport=10,10,200,0,,",  # starts outside the 128 x 128 image
        "viewport=10,10,100,0,50,50",  # ends outside it
        "viewport=10,10,10,0,-20,5",  # extends left of column 0
        "quality=0",
        "quality=101",
        "quality=high",
        "quality=5&quality=6",
    ],
)
async def test_malformed_parameters_are_400(local: LocalArchive, query: str) -> None:
    _, path = await stored(local, "CT_small.dcm")

    response = await local.retrieve(f"{path}/rendered?{query}")

    assert response.status_code == 400, response.text
    assert response.json()["error"]


async def test_missing_and_unrenderable(local: LocalArchive) -> None:
    _, report = await stored(local, "reportsi.dcm")  # a structured report: no pixels
    _, image = await stored(local, "CT_small.dcm")

    assert (await local.retrieve(f"{report}/rendered")).status_code == 406
    assert (await local.retrieve(f"{report}/thumbnail")).status_code == 406
    assert (await local.retrieve(f"{image}/rendered", Accept="application/pdf")).status_code == 406
    assert (await local.retrieve("/studies/1.2.3/rendered")).status_code == 404
    assert (await local.retrieve("/studies/1.2.3/series/4.5/thumbnail")).status_code == 404
    assert (
        await local.retrieve("/studies/1.2.3/series/4.5/instances/6.7/rendered")
    ).status_code == 404
    assert (await local.retrieve("/studies/1.2.3x/rendered")).status_code == 400
