"""dcmtk's findscu with the Patient Root model (``-P``) at the PATIENT and STUDY levels,
as a PACS workstation browses patients first (PS3.4 C.6.1)."""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from conftest import RealServer, require_tool
from integration.support import multipart_related, new_dataset, part10

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]


def _findscu(server: RealServer, cwd: Path, *keys: str) -> list[Dataset]:
    findscu = require_tool("findscu")
    args = [findscu, "-P", "-X", "-aec", server.ae_title]
    for key in keys:
        args += ["-k", key]
    result = subprocess.run(
        [*args, "127.0.0.1", str(server.dicom_port)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [dcmread(path) for path in sorted(cwd.glob("rsp*.dcm"))]


def test_findscu_patient_level_counts_the_patients_studies(
    server: RealServer, tmp_path: Path
) -> None:
    patient_id = f"FINDP-{tmp_path.name[-8:]}"
    parts = []
    for _ in range(2):  # two studies, one instance each
        ds = new_dataset(patient_id=patient_id)
        ds.PatientName = "Patient^Root"
        ds.PatientBirthDate = "19600229"
        parts.append(part10(ds))
    body, content_type = multipart_related(parts)
    with httpx.Client(base_url=server.dicomweb_url, timeout=30) as http:
        stored = http.post("/studies", content=body, headers={"Content-Type": content_type})
    assert stored.status_code == 200, stored.text

    (patient,) = _findscu(
        server,
        tmp_path,
        "QueryRetrieveLevel=PATIENT",
        f"PatientID={patient_id}",
        "PatientName",
        "PatientBirthDate",
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedInstances",
    )

    assert patient.QueryRetrieveLevel == "PATIENT"
    assert patient.PatientID == patient_id
    assert str(patient.PatientName) == "Patient^Root"
    assert patient.PatientBirthDate == "19600229"
    assert patient.NumberOfPatientRelatedStudies == 2
    assert patient.NumberOfPatientRelatedInstances == 2

    studies_dir = tmp_path / "studies"
    studies_dir.mkdir()
    studies = _findscu(
        server,
        studies_dir,
        "QueryRetrieveLevel=STUDY",
        f"PatientID={patient_id}",
        "StudyInstanceUID",
    )
    assert len(studies) == 2
