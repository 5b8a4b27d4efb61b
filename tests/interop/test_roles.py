"""``dicomcloud serve --role``: a node does only what its roles say (issue 5 point 5).
Two nodes on one index and storage, a DIMSE-only node and a web-only node, are real
``dicomcloud serve`` processes: an instance stored through one is found and retrieved
through the other; the health probes answer on every node."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from conftest import RealServer, running_server
from integration.support import new_instance

pytestmark = [pytest.mark.interop, pytest.mark.timeout(240)]


@contextlib.contextmanager
def node(data_dir: Path, roles: str) -> Iterator[RealServer]:
    with running_server(data_dir, {"DICOMCLOUD_SERVER__ROLES": f'["{roles}"]'}) as server:
        yield server


def association_accepted(server: RealServer) -> bool:
    ae = AE(ae_title="ROLESCU")
    ae.acse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="DICOMCLOUD")
    try:
        return bool(assoc.is_established) and assoc.send_c_echo().Status == 0
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def test_dimse_node_and_web_node_share_the_archive(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    instance = new_instance()
    with node(data_dir, "dimse") as dimse, node(data_dir, "web") as web:
        # What each node answers.
        assert httpx.get(f"{dimse.base_url}/readyz", timeout=30).status_code == 200
        assert httpx.get(f"{dimse.dicomweb_url}/studies", timeout=30).status_code == 404
        assert association_accepted(dimse)
        assert httpx.get(f"{web.dicomweb_url}/studies", timeout=30).status_code == 200
        assert not association_accepted(web)

        # Stored through the DIMSE node (C-STORE), read through the web node.
        dataset = dcmread(BytesIO(instance.data))
        ae = AE(ae_title="ROLESCU")
        ae.add_requested_context(instance.sop_class, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", dimse.dicom_port, ae_title="DICOMCLOUD")
        assert assoc.is_established
        try:
            status = assoc.send_c_store(dataset)
        finally:
            assoc.release()
            ae.shutdown()
        assert status.Status == 0x0000
        found = httpx.get(
            f"{web.dicomweb_url}/studies",
            params={"StudyInstanceUID": instance.study},
            headers={"Accept": "application/dicom+json"},
            timeout=30,
        )
        assert [s["0020000D"]["Value"] for s in found.json()] == [[instance.study]]
        retrieved = httpx.get(
            f"{web.dicomweb_url}/studies/{instance.study}/series/{instance.series}"
            f"/instances/{instance.sop}/metadata",
            timeout=30,
        )
        assert retrieved.status_code == 200, retrieved.text
        assert retrieved.json()[0]["00080018"]["Value"] == [instance.sop]
