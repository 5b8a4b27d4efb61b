"""dicomweb-client's retrieve_*_metadata, retrieve_*_rendered and retrieve_bulkdata
against ``dicomcloud serve``."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels.utils import pixel_array

from conftest import RealServer, running_server
from integration.support import pydicom_file

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]


def linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 to 0..255."""
    out = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    out = np.where(values <= center - 0.5 - (width - 1) / 2, 0.0, out)
    out = np.where(values > center - 0.5 + (width - 1) / 2, 255.0, out)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    """A server of its own: the files stored here are stored nowhere else."""
    with running_server(tmp_path_factory.mktemp("retrieve") / "data") as running:
        yield running


@pytest.fixture(scope="module")
def stored(server: RealServer) -> dict[str, Dataset]:
    client = DICOMwebClient(url=server.dicomweb_url)
    files = {name: dcmread(pydicom_file(name)) for name in ("CT_small.dcm", "emri_small.dcm")}
    client.store_instances(list(files.values()))
    return files


def client_for(server: RealServer) -> DICOMwebClient:
    client = DICOMwebClient(url=server.dicomweb_url)
    # dicomweb-client sends "Host: 127.0.0.1" without the port, which RFC 9110 7.2
    # requires for a non-default one; the archive builds BulkDataURIs from Host (or
    # from server.base_url when configured).
    client.host = f"127.0.0.1:{server.http_port}"
    return client


def test_retrieve_metadata_at_three_levels(server: RealServer, stored: dict[str, Dataset]) -> None:
    client = client_for(server)
    ct = stored["CT_small.dcm"]
    study, series, sop = ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID

    in_series = client.retrieve_series_metadata(study, series)
    in_study = client.retrieve_study_metadata(study)
    one = client.retrieve_instance_metadata(study, series, sop)

    assert in_series == in_study == [one]
    # Every BulkDataURI (pixel data, long private values) is fetched back by the client.
    back = Dataset.from_json(
        one, bulk_data_uri_handler=lambda u: bytes(client.retrieve_bulkdata(u)[0])
    )
    assert back.PatientName == ct.PatientName
    assert back.SOPInstanceUID == sop
    assert back.ImagePositionPatient == ct.ImagePositionPatient
    assert back[0x00431029].value == ct[0x00431029].value
    assert back.PixelData == ct.PixelData
    uri = one["7FE00010"]["BulkDataURI"]
    assert uri.startswith(server.dicomweb_url)
    assert client.retrieve_bulkdata(uri) == [ct.PixelData]
    assert client.retrieve_bulkdata(uri, byte_range=(10, 19)) == [ct.PixelData[10:20]]


def test_retrieve_rendered_instance_and_frames(
    server: RealServer, stored: dict[str, Dataset]
) -> None:
    client = client_for(server)
    ct = stored["CT_small.dcm"]
    mr = stored["emri_small.dcm"]

    png = client.retrieve_instance_rendered(
        ct.StudyInstanceUID,
        ct.SeriesInstanceUID,
        ct.SOPInstanceUID,
        media_types=("image/png",),
        params={"window": "40,400,LINEAR"},
    )
    frame = client.retrieve_instance_frames_rendered(
        mr.StudyInstanceUID,
        mr.SeriesInstanceUID,
        mr.SOPInstanceUID,
        frame_numbers=[4],
        media_types=("image/jpeg",),
    )
    series = client.retrieve_series_rendered(
        ct.StudyInstanceUID, ct.SeriesInstanceUID, media_types=("image/png",)
    )

    values = pixel_array(ct).astype(np.float64) * float(ct.RescaleSlope) + float(
        ct.RescaleIntercept
    )
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), linear_window(values, 40, 400))
    assert Image.open(io.BytesIO(frame)).format == "JPEG"
    assert Image.open(io.BytesIO(frame)).size == (64, 64)
    assert series == client.retrieve_instance_rendered(
        ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID, media_types=("image/png",)
    )
