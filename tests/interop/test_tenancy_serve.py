"""Two tenants on ``dicomcloud serve`` configured from the environment, used as a site
would: dcmtk's storescu, findscu and getscu call each tenant's AE title, DICOMweb reads
each tenant's service, and echoscu is rejected for an AE title no tenant has."""

from __future__ import annotations

import json
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from conftest import RealServer, require_tool, running_server
from integration.support import AS_STORED, split_multipart
from integration.tenancy_support import ALPHA, BETA, SERIES, SOP, STUDY, TenantData
from interop.test_dcmtk import dcmtk_env

pytestmark = [pytest.mark.interop, pytest.mark.timeout(240)]

ENTRIES = [
    {"called_ae_title": "ALPHA_PACS", "tenant": "alpha"},
    {"called_ae_title": "BETA_PACS", "tenant": "beta", "calling_ae_titles": ["CT_BETA"]},
]
ENV = {
    "DICOMCLOUD_TENANCY__TENANTS": '["alpha", "beta"]',
    "DICOMCLOUD_DIMSE__TENANTS": json.dumps(ENTRIES),
}
CALLING = {"alpha": "CT_ALPHA", "beta": "CT_BETA"}
CALLED = {"alpha": "ALPHA_PACS", "beta": "BETA_PACS"}


@pytest.fixture(scope="module")
def tenant_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    with running_server(tmp_path_factory.mktemp("tenancy") / "data", ENV) as server:
        yield server


def dcmtk(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        timeout=90,
        env=dcmtk_env(),
        cwd=cwd,
        check=False,
    )


def read(path: Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(path)


def same_image(ds: Dataset, data: TenantData) -> bool:
    return str(ds.PatientID) == data.patient_id and ds.PixelData == data.pixels


def test_each_tenants_ae_title_stores_finds_and_gets_its_own_data(
    tenant_server: RealServer, tmp_path: Path
) -> None:
    storescu, findscu, getscu = (require_tool(t) for t in ("storescu", "findscu", "getscu"))
    port = str(tenant_server.dicom_port)
    for data in (ALPHA, BETA):
        path = tmp_path / f"{data.name}.dcm"
        path.write_bytes(data.files[SOP])  # the same UIDs in both tenants
        name = data.name
        result = dcmtk(
            storescu, "-aet", CALLING[name], "-aec", CALLED[name], "127.0.0.1", port, str(path)
        )
        assert result.returncode == 0, result.stdout + result.stderr

    instance = f"/studies/{STUDY}/series/{SERIES}/instances/{SOP}"
    with httpx.Client(base_url=tenant_server.base_url, timeout=60) as http:
        for data in (ALPHA, BETA):
            response = http.get(f"/tenants/{data.name}/dicom-web{instance}", headers=AS_STORED)
            assert response.status_code == 200, response.text
            (part,) = split_multipart(response.content, response.headers["content-type"])
            (tmp_path / "got.dcm").write_bytes(part.data)
            assert same_image(read(tmp_path / "got.dcm"), data)
        # The default tenant holds none of it.
        assert http.get(f"/dicom-web{instance}", headers=AS_STORED).status_code == 404

    for data in (ALPHA, BETA):
        work = tmp_path / f"find-{data.name}"
        work.mkdir()
        result = dcmtk(
            findscu, "-S", "-X", "-aet", CALLING[data.name], "-aec", CALLED[data.name],
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY}",
            "-k", "PatientID", "-k", "RetrieveAETitle", "127.0.0.1", port, cwd=work,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        (found,) = [read(p) for p in sorted(work.glob("rsp*.dcm"))]
        assert (found.PatientID, found.RetrieveAETitle) == (data.patient_id, CALLED[data.name])

        fetched = tmp_path / f"get-{data.name}"
        fetched.mkdir()
        result = dcmtk(
            getscu, "-S", "-aet", CALLING[data.name], "-aec", CALLED[data.name],
            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={STUDY}",
            "-od", str(fetched), "127.0.0.1", port,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        (got,) = [read(p) for p in fetched.iterdir()]
        assert same_image(got, data)


@pytest.mark.parametrize(
    ("calling", "called", "reason"),
    [
        ("CT_ALPHA", "NO_SUCH_PACS", "called ae title not recognized"),
        ("INTRUDER", "BETA_PACS", "calling ae title not recognized"),
    ],
)
def test_echoscu_is_rejected_with_the_reason(
    tenant_server: RealServer, calling: str, called: str, reason: str
) -> None:
    echoscu = require_tool("echoscu")
    result = dcmtk(
        echoscu, "-aet", calling, "-aec", called, "127.0.0.1", str(tenant_server.dicom_port)
    )
    assert result.returncode != 0
    assert reason in (result.stdout + result.stderr).lower(), result.stdout + result.stderr
    ok = dcmtk(
        echoscu, "-aet", "CT_BETA", "-aec", "BETA_PACS", "127.0.0.1", str(tenant_server.dicom_port)
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
