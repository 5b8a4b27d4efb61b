"""dicomweb-client's QIDO-RS calls (search_for_studies / _series / _instances) against
``dicomcloud serve``: filters, fuzzy matching, fields (includefield), paging, and
``get_remaining`` following the server's Warning header (PS3.18 8.3.4.4)."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from conftest import RealServer, running_server
from integration.support import new_dataset, part10

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]


def _datasets(patient_id: str, studies: int, per_series: int = 1) -> list[Dataset]:
    found = []
    for _ in range(studies):
        study, series = generate_uid(), generate_uid()
        for number in range(1, per_series + 1):
            ds = dcmread(io.BytesIO(part10(new_dataset(study=study, series=series))))
            ds.PatientID = patient_id
            ds.SpecificCharacterSet = "ISO_IR 192"
            ds.PatientName = "Müller^Jürgen"
            ds.Manufacturer = "ACME"
            ds.InstanceNumber = number
            found.append(ds)
    return found


def test_search_for_studies_series_and_instances(server: RealServer) -> None:
    client = DICOMwebClient(url=server.dicomweb_url)
    patient_id = f"DWC-{uuid.uuid4().hex[:8]}"
    datasets = _datasets(patient_id, studies=2, per_series=3)
    client.store_instances(datasets)
    study = datasets[0].StudyInstanceUID

    studies = client.search_for_studies(search_filters={"PatientID": patient_id})
    fuzzy = client.search_for_studies(
        fuzzymatching=True, search_filters={"PatientName": "MULLER^J*", "PatientID": patient_id}
    )
    exact = client.search_for_studies(
        search_filters={"PatientName": "MULLER^J*", "PatientID": patient_id}
    )
    series = client.search_for_series(study_instance_uid=study, fields=["Manufacturer"])
    instances = client.search_for_instances(
        study_instance_uid=study, series_instance_uid=datasets[0].SeriesInstanceUID
    )
    paged = client.search_for_instances(study_instance_uid=study, limit=1, offset=1)

    assert {Dataset.from_json(s).StudyInstanceUID for s in studies} == {
        ds.StudyInstanceUID for ds in datasets
    }
    assert all(Dataset.from_json(s).NumberOfStudyRelatedInstances == 3 for s in studies)
    assert len(fuzzy) == 2 and exact == []
    (one,) = series
    assert Dataset.from_json(one).Manufacturer == "ACME"
    assert [Dataset.from_json(i).InstanceNumber for i in instances] == [1, 2, 3]
    assert [Dataset.from_json(i).InstanceNumber for i in paged] == [2]


def test_get_remaining_follows_the_server_limit(tmp_path: Path) -> None:
    with running_server(tmp_path / "data", {"DICOMCLOUD_SEARCH__MAX_LIMIT": "2"}) as server:
        client = DICOMwebClient(url=server.dicomweb_url)
        datasets = _datasets("DWC-LIMIT", studies=5)
        client.store_instances(datasets)

        first_page = client.search_for_studies()
        everything = client.search_for_studies(get_remaining=True)

    assert len(first_page) == 2
    assert {Dataset.from_json(s).StudyInstanceUID for s in everything} == {
        ds.StudyInstanceUID for ds in datasets
    }
