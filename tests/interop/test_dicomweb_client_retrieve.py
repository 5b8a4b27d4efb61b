"""dicomweb-client's retrieve calls, with their default Accept headers, against
``dicomcloud serve`` (PS3.18 10.4)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

from conftest import RealServer
from integration.support import new_instance, pydicom_file

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]


def _stored(client: DICOMwebClient, *names: str) -> list[Dataset]:
    """Pydicom's files under one fresh study (so that tests do not share a study)."""
    study = generate_uid()
    datasets = []
    for name in names:
        ds = dcmread(pydicom_file(name))
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        datasets.append(ds)
    client.store_instances(datasets)
    return datasets


def test_retrieve_study_series_and_instance(server: RealServer) -> None:
    client = DICOMwebClient(url=server.dicomweb_url)
    ct, j2k = _stored(client, "CT_small.dcm", "emri_small_jpeg_2k_lossless.dcm")

    study = client.retrieve_study(ct.StudyInstanceUID)
    series = client.retrieve_series(j2k.StudyInstanceUID, j2k.SeriesInstanceUID)
    instance = client.retrieve_instance(
        ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID
    )

    assert sorted(str(ds.SOPInstanceUID) for ds in study) == sorted(
        [str(ct.SOPInstanceUID), str(j2k.SOPInstanceUID)]
    )
    # No transfer-syntax asked: Explicit VR Little Endian (PS3.18 8.7.3.4), same pixels.
    (received,) = series
    assert received.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(received.pixel_array, j2k.pixel_array)
    assert instance.PatientName == ct.PatientName
    assert np.array_equal(instance.pixel_array, ct.pixel_array)


def test_retrieve_as_stored_and_in_a_named_syntax(server: RealServer) -> None:
    client = DICOMwebClient(url=server.dicomweb_url)
    (ct,) = _stored(client, "CT_small.dcm")
    uids = (ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)

    j2k = client.retrieve_instance(*uids, media_types=(("application/dicom", JPEG2000Lossless),))
    stored = client.retrieve_instance(*uids, media_types=(("application/dicom", "*"),))

    assert j2k.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert np.array_equal(j2k.pixel_array, ct.pixel_array)
    assert stored == ct


def test_retrieve_instance_frames_with_the_default_accept(server: RealServer) -> None:
    client = DICOMwebClient(url=server.dicomweb_url)
    native, j2k = _stored(client, "emri_small.dcm", "emri_small_jpeg_2k_lossless.dcm")

    raw = client.retrieve_instance_frames(
        native.StudyInstanceUID, native.SeriesInstanceUID, native.SOPInstanceUID, [2, 9]
    )
    codestreams = client.retrieve_instance_frames(
        j2k.StudyInstanceUID, j2k.SeriesInstanceUID, j2k.SOPInstanceUID, [10, 1]
    )

    pixels = native.pixel_array
    assert raw == [pixels[1].astype("<u2").tobytes(), pixels[8].astype("<u2").tobytes()]
    stored = list(generate_frames(j2k.PixelData, number_of_frames=10))
    assert codestreams == [stored[9], stored[0]]


def test_errors_reach_the_client(server: RealServer) -> None:
    client = DICOMwebClient(url=server.dicomweb_url)
    ds = dcmread(io.BytesIO(new_instance().data))
    client.store_instances([ds])

    with pytest.raises(requests.HTTPError) as missing:
        client.retrieve_study(generate_uid())
    with pytest.raises(requests.HTTPError) as no_frame:
        client.retrieve_instance_frames(
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, [2]
        )

    assert missing.value.response.status_code == 404
    assert no_frame.value.response.status_code == 404
