"""dicomweb-client (a third-party DICOMweb client) against ``dicomcloud serve``."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import httpx
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset

from conftest import RealServer
from integration.support import (
    AS_STORED,
    STATUS_CANNOT_UNDERSTAND,
    failure_reasons,
    multipart_related,
    new_instance,
    pydicom_file,
    split_multipart,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]


def as_sent_by_dicomweb_client(ds: Dataset) -> bytes:
    """dicomweb-client encodes each dataset with ``pydicom.dcmwrite`` before STOW."""
    out = io.BytesIO()
    dcmwrite(out, ds)
    return out.getvalue()


def raw_instance(server: RealServer, ds: Dataset) -> bytes:
    url = (
        f"{server.dicomweb_url}/studies/{ds.StudyInstanceUID}/series/"
        f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    )
    response = httpx.get(url, headers=AS_STORED, timeout=30)
    assert response.status_code == 200, response.text
    (part,) = split_multipart(response.content, response.headers["content-type"])
    return part.data


def test_store_instances_then_retrieve_instance(server: RealServer) -> None:
    client = DICOMwebClient(url=server.dicomweb_url)
    datasets = [
        dcmread(io.BytesIO(new_instance().data)),
        dcmread(io.BytesIO(new_instance().data)),
        dcmread(pydicom_file("reportsi.dcm")),  # no other test sends it to this server
    ]

    response = client.store_instances(datasets)

    # dicomweb-client decodes the Store Instances Response into a Dataset.
    stored = sorted(str(item.ReferencedSOPInstanceUID) for item in response.ReferencedSOPSequence)
    assert stored == sorted(str(ds.SOPInstanceUID) for ds in datasets)
    assert all("WarningReason" not in item for item in response.ReferencedSOPSequence)
    assert "FailedSOPSequence" not in response
    for ds in datasets:
        retrieved = client.retrieve_instance(
            study_instance_uid=ds.StudyInstanceUID,
            series_instance_uid=ds.SeriesInstanceUID,
            sop_instance_uid=ds.SOPInstanceUID,
        )
        assert retrieved == ds
        assert retrieved.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
        # Byte for byte what dicomweb-client put on the wire.
        assert raw_instance(server, ds) == as_sent_by_dicomweb_client(ds)


def test_store_instances_in_a_study(server: RealServer) -> None:
    client = DICOMwebClient(url=server.dicomweb_url)
    ds = dcmread(io.BytesIO(new_instance().data))

    response = client.store_instances([ds], study_instance_uid=ds.StudyInstanceUID)

    assert [item.ReferencedSOPInstanceUID for item in response.ReferencedSOPSequence] == [
        ds.SOPInstanceUID
    ]
    assert response.RetrieveURL.endswith(f"/studies/{ds.StudyInstanceUID}")


def test_dicomweb_client_sees_errors(server: RealServer) -> None:
    client = DICOMwebClient(url=server.dicomweb_url)
    ds = dcmread(io.BytesIO(new_instance().data))

    with pytest.raises(requests.HTTPError) as missing:
        client.retrieve_instance(
            study_instance_uid=ds.StudyInstanceUID,
            series_instance_uid=ds.SeriesInstanceUID,
            sop_instance_uid=ds.SOPInstanceUID,
        )
    assert missing.value.response.status_code == 404

    with pytest.raises(requests.HTTPError) as mismatch:  # 409: the study is not the URL's
        client.store_instances([ds], study_instance_uid="1.2.3.4.5")
    assert mismatch.value.response.status_code == 409


def test_truncated_part_over_real_http(server: RealServer) -> None:
    """A raw multipart with a cut-off file: 409 with a reason, the server keeps serving."""
    data = pydicom_file("rtplan_truncated.dcm").read_bytes()
    body, content_type = multipart_related([data])
    files_before = server.files()

    response = httpx.post(
        f"{server.dicomweb_url}/studies",
        content=body,
        headers={"Content-Type": content_type},
        timeout=30,
    )

    assert response.status_code == 409
    assert failure_reasons(response.json()) == [STATUS_CANNOT_UNDERSTAND]
    assert "truncated" in response.headers["warning"]
    assert server.files() == files_before
    assert httpx.get(f"{server.base_url}/readyz", timeout=10).status_code == 200


async def test_concurrent_stow_clients_all_land(server: RealServer, tmp_path: Path) -> None:
    """4 clients x 25 instances, each STOWed alone, concurrently: every one lands and
    is retrievable right after its acknowledgement (read-your-writes)."""
    clients, per_client = 4, 25
    files_before = len(server.files())
    instances = [[new_instance() for _ in range(per_client)] for _ in range(clients)]

    async def client(batch: list) -> list[tuple[int, int]]:  # type: ignore[type-arg]
        results = []
        async with httpx.AsyncClient(base_url=server.dicomweb_url, timeout=60) as http:
            for instance in batch:
                body, content_type = multipart_related([instance.data])
                stow = await http.post(
                    "/studies", content=body, headers={"Content-Type": content_type}
                )
                wado = await http.get(instance.path, headers=AS_STORED)
                parts = split_multipart(wado.content, wado.headers["content-type"])
                results.append((stow.status_code, wado.status_code))
                assert parts[0].data == instance.data
        return results

    results = await asyncio.gather(*(client(batch) for batch in instances))

    assert results == [[(200, 200)] * per_client] * clients
    assert len(server.files()) == files_before + clients * per_client
