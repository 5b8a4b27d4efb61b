"""``services.rendering.render_frame``, the function WADO-URI and the rendered routes
share, on pydicom's files; and the ``accept`` query parameter (PS3.18 8.3.3.1)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.pixels.utils import pixel_array

from conftest import LocalArchive
from dicomcloud.services.rendering import (
    FrameNotFound,
    NotRenderable,
    RenderParams,
    render_frame,
)
from integration.support import pydicom_file


def open_image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("CT_small.dcm", "L"),
        ("JPEG2000.dcm", "L"),  # J2K decoded by pydicom's plugins
        ("SC_rgb_dcmtk_+eb+cy+n1.dcm", "RGB"),  # JPEG baseline, YBR_FULL
        ("US1_UNCR.dcm", "RGB"),
        ("OBXXXX1A.dcm", "RGB"),  # PALETTE COLOR
        ("mlut_18.dcm", "L"),  # Modality LUT Sequence
        ("vlut_04.dcm", "L"),  # VOI LUT Sequence
    ],
)
def test_each_photometric_interpretation_renders(name: str, mode: str) -> None:
    data = pydicom_file(name).read_bytes()
    ds = dcmread(io.BytesIO(data))

    png = open_image(render_frame(data, 0, RenderParams("image/png")))
    jpeg = open_image(render_frame(data, 0, RenderParams("image/jpeg", quality=80)))

    assert (png.format, jpeg.format) == ("PNG", "JPEG")
    assert png.mode == jpeg.mode == mode
    assert png.size == jpeg.size == (ds.Columns, ds.Rows)


def test_voi_lut_sequence_is_applied() -> None:
    data = pydicom_file("vlut_04.dcm").read_bytes()
    ds = dcmread(io.BytesIO(data))

    image = np.asarray(open_image(render_frame(data, 0, RenderParams("image/png"))))

    item = ds.VOILUTSequence[0]
    entries, first_mapped, bits = item.LUTDescriptor
    table = np.asarray(item.LUTData, dtype=np.float64)
    stored = pixel_array(ds).astype(np.int64)
    looked_up = table[np.clip(stored - first_mapped, 0, (entries or 65536) - 1)]
    assert np.array_equal(image, np.rint(looked_up * 255.0 / (2**bits - 1)).astype(np.uint8))


def test_frame_beyond_the_last_and_no_pixels() -> None:
    multiframe = pydicom_file("emri_small.dcm").read_bytes()
    report = pydicom_file("reportsi.dcm").read_bytes()

    with pytest.raises(FrameNotFound):
        render_frame(multiframe, 10, RenderParams())
    with pytest.raises(NotRenderable):
        render_frame(report, 0, RenderParams())
    with pytest.raises(NotRenderable):
        render_frame(b"not dicom at all", 0, RenderParams())


def test_viewport_is_rows_then_columns() -> None:
    data = pydicom_file("US1_UNCR.dcm").read_bytes()  # 640 x 480

    image = open_image(render_frame(data, 0, RenderParams(viewport=(100, 400))))

    assert image.size == (133, 100)  # fitted into 100 rows, aspect ratio kept


async def test_accept_query_parameter_overrides_the_header(local: LocalArchive) -> None:
    data = pydicom_file("CT_small.dcm").read_bytes()
    assert (await local.stow([data])).status_code == 200
    ds = dcmread(io.BytesIO(data))
    path = (
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )

    rendered = await local.retrieve(f"{path}/rendered?accept=image/png", Accept="image/jpeg")
    metadata = await local.retrieve(f"{path}/metadata?accept=application/json")

    assert rendered.headers["content-type"] == "image/png"
    assert metadata.headers["content-type"] == "application/json"
