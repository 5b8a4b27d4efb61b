"""Cross-tenant matrix over the DIMSE services: associations calling ALPHA_PACS act on
tenant alpha, BETA_PACS on beta (``[[dimse.tenants]]``); C-STORE, C-FIND, C-GET and
C-MOVE see only their tenant's instances, the same UIDs in the other tenant included,
and guessed UIDs only the other tenant holds match nothing.  Associations no entry
admits are rejected with the reason PS3.8 9.3.4 names."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from conftest import ArchiveFactory, LocalArchive, dimse_for, free_port
from dicomcloud.dimse.find import STUDY_ROOT_FIND
from integration.retrieve_support import (
    MOVE_DESTINATION_UNKNOWN,
    SUCCESS,
    StoreSCP,
    c_get,
    c_move,
)
from integration.retrieve_support import identifier as retrieve_identifier
from integration.support import (
    AS_STORED,
    SECONDARY_CAPTURE_STORAGE,
    StoreSCU,
    dataset_bytes,
    new_dataset,
    part10,
    split_multipart,
)
from integration.tenancy_support import (
    ALPHA,
    BETA,
    BETA_SERIES,
    BETA_SOP,
    BETA_STUDY,
    SERIES,
    SOP,
    STUDY,
    TENANCY,
    TenantData,
    load_both,
    service,
)

pytestmark = pytest.mark.timeout(180)

PENDING = 0xFF00
EXPLICIT = [ExplicitVRLittleEndian]
CALLED = {"alpha": "ALPHA_PACS", "beta": "BETA_PACS"}
#: Calling AE titles beta admits (the pynetdicom helpers' own titles).
BETA_CALLERS = ["GETSCU", "MOVESCU", "FINDSCU", "TESTSCU"]


@dataclass
class Tenants:
    local: LocalArchive
    port: int
    alpha_destination: StoreSCP
    beta_destination: StoreSCP


@pytest.fixture
async def tenants(make_archive: ArchiveFactory) -> AsyncIterator[Tenants]:
    """Both tenants loaded, the DIMSE server with four entries, and one Move
    Destination each: ALPHA_DEST in the global table (alpha has none of its own),
    BETA_DEST in beta's own table."""
    alpha_scp = StoreSCP({SECONDARY_CAPTURE_STORAGE: EXPLICIT}, ae_title="ALPHA_DEST")
    beta_scp = StoreSCP({SECONDARY_CAPTURE_STORAGE: EXPLICIT}, ae_title="BETA_DEST")
    alpha_port, beta_port = free_port(), free_port()
    local = await make_archive(
        **TENANCY,
        server__host="127.0.0.1",
        server__dicom_port=0,
        dimse__destinations={"ALPHA_DEST": f"127.0.0.1:{alpha_port}"},
        dimse__tenants=[
            {"called_ae_title": "ALPHA_PACS", "tenant": "alpha"},
            {
                "called_ae_title": "BETA_PACS",
                "tenant": "beta",
                "calling_ae_titles": BETA_CALLERS,
                "destinations": {"BETA_DEST": f"127.0.0.1:{beta_port}"},
            },
            {"called_ae_title": "LOCKED", "tenant": "beta", "peers": ["10.0.0.0/8"]},
            {"called_ae_title": "LOOPBACK", "tenant": "beta", "peers": ["127.0.0.0/8", "::1"]},
        ],
    )
    await load_both(local.client)
    with alpha_scp.running(alpha_port), beta_scp.running(beta_port):
        async with dimse_for(local) as running:
            yield Tenants(local, running.port, alpha_scp, beta_scp)


def c_find(port: int, called: str, query: Dataset) -> tuple[list[Dataset], int]:
    """The matches of one C-FIND and its final status."""
    ae = AE(ae_title="FINDSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(STUDY_ROOT_FIND, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established
    try:
        responses = list(assoc.send_c_find(query, STUDY_ROOT_FIND))
    finally:
        assoc.release()
    *pending, (final, _) = responses
    assert all(int(status.Status) == PENDING for status, _ in pending)
    return [found for _, found in pending if found is not None], int(final.Status)


def find_query(level: str, **keys: Any) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword in ("StudyInstanceUID", "PatientID", "RetrieveAETitle"):
        setattr(ds, keyword, "")
    if level != "STUDY":
        ds.SeriesInstanceUID = ""
    if level == "IMAGE":
        ds.SOPInstanceUID = ""
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def studies_of(data: TenantData) -> set[str]:
    return {STUDY, BETA_STUDY} if data is BETA else {STUDY}


# --- C-FIND -------------------------------------------------------------------------------


async def test_c_find_matches_only_the_called_tenants_instances(tenants: Tenants) -> None:
    for data in (ALPHA, BETA):
        called = CALLED[data.name]
        found, status = await asyncio.to_thread(c_find, tenants.port, called, find_query("STUDY"))
        assert status == SUCCESS
        assert {str(f.StudyInstanceUID) for f in found} == studies_of(data)
        assert {str(f.PatientID) for f in found} == {data.patient_id}
        assert {str(f.RetrieveAETitle) for f in found} == {called}
        query = find_query("IMAGE", StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES)
        images, _ = await asyncio.to_thread(c_find, tenants.port, called, query)
        assert {str(f.SOPInstanceUID) for f in images} == data.in_series()


async def test_c_find_of_uids_only_the_other_tenant_holds_matches_nothing(
    tenants: Tenants,
) -> None:
    guesses = [
        find_query("STUDY", StudyInstanceUID=BETA_STUDY),
        find_query("SERIES", StudyInstanceUID=BETA_STUDY, SeriesInstanceUID=BETA_SERIES),
        find_query(
            "IMAGE", StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES, SOPInstanceUID=BETA_SOP
        ),
        find_query("STUDY", PatientID=BETA.patient_id),
    ]
    for query in guesses:
        found, status = await asyncio.to_thread(c_find, tenants.port, "ALPHA_PACS", query)
        assert (found, status) == ([], SUCCESS), query
        # ... while beta holds them.
        found, status = await asyncio.to_thread(c_find, tenants.port, "BETA_PACS", query)
        assert status == SUCCESS and len(found) >= 1, query


# --- C-GET --------------------------------------------------------------------------------


async def test_c_get_sends_only_the_called_tenants_instances(tenants: Tenants) -> None:
    storage = {SECONDARY_CAPTURE_STORAGE: EXPLICIT}
    for data in (ALPHA, BETA):
        query = retrieve_identifier("STUDY", StudyInstanceUID=STUDY)
        responses, received = await asyncio.to_thread(
            c_get, tenants.port, query, storage, called=CALLED[data.name]
        )
        assert responses[-1].status == SUCCESS
        assert {r.data for r in received} == data.datasets(data.in_series())


async def test_c_get_of_uids_only_the_other_tenant_holds_sends_nothing(tenants: Tenants) -> None:
    storage = {SECONDARY_CAPTURE_STORAGE: EXPLICIT}
    guesses = [
        retrieve_identifier("STUDY", StudyInstanceUID=BETA_STUDY),
        retrieve_identifier("SERIES", StudyInstanceUID=BETA_STUDY, SeriesInstanceUID=BETA_SERIES),
        retrieve_identifier(
            "IMAGE", StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES, SOPInstanceUID=BETA_SOP
        ),
        retrieve_identifier("IMAGE", SOPInstanceUID=BETA_SOP),
    ]
    for query in guesses:
        responses, received = await asyncio.to_thread(
            c_get, tenants.port, query, storage, called="ALPHA_PACS"
        )
        assert received == []
        assert responses[-1].status == SUCCESS
        assert responses[-1].completed in (0, None)


# --- C-MOVE -------------------------------------------------------------------------------


async def test_c_move_sends_only_the_called_tenants_instances(tenants: Tenants) -> None:
    query = retrieve_identifier("STUDY", StudyInstanceUID=STUDY)
    responses = await asyncio.to_thread(
        c_move, tenants.port, query, "ALPHA_DEST", called="ALPHA_PACS"
    )
    assert responses[-1].status == SUCCESS
    assert {r.data for r in tenants.alpha_destination.received} == ALPHA.datasets({SOP})

    responses = await asyncio.to_thread(
        c_move, tenants.port, query, "BETA_DEST", called="BETA_PACS"
    )
    assert responses[-1].status == SUCCESS
    assert {r.data for r in tenants.beta_destination.received} == BETA.datasets(BETA.in_series())


async def test_c_move_destinations_are_the_tenants_own(tenants: Tenants) -> None:
    """Beta has its own table (no ALPHA_DEST in it); alpha uses the global one (no
    BETA_DEST in it): a destination of the other tenant is unknown (0xA801)."""
    query = retrieve_identifier("STUDY", StudyInstanceUID=STUDY)
    for called, destination in (("ALPHA_PACS", "BETA_DEST"), ("BETA_PACS", "ALPHA_DEST")):
        responses = await asyncio.to_thread(c_move, tenants.port, query, destination, called=called)
        assert [r.status for r in responses] == [MOVE_DESTINATION_UNKNOWN], (called, destination)
    assert tenants.alpha_destination.received == []
    assert tenants.beta_destination.received == []


async def test_c_move_of_uids_only_the_other_tenant_holds_sends_nothing(tenants: Tenants) -> None:
    for query in (
        retrieve_identifier("STUDY", StudyInstanceUID=BETA_STUDY),
        retrieve_identifier(
            "IMAGE", StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES, SOPInstanceUID=BETA_SOP
        ),
    ):
        responses = await asyncio.to_thread(
            c_move, tenants.port, query, "ALPHA_DEST", called="ALPHA_PACS"
        )
        assert responses[-1].status == SUCCESS
    assert tenants.alpha_destination.received == []


# --- C-STORE ------------------------------------------------------------------------------


def store_file(port: int, called: str, path: Path) -> int:
    with StoreSCU(
        port, [(SECONDARY_CAPTURE_STORAGE, ExplicitVRLittleEndian)], called_ae=called
    ) as scu:
        return scu.store(path).status


async def test_c_store_stores_into_the_called_tenant(tenants: Tenants, tmp_path: Path) -> None:
    """The same new SOP Instance UID stored into both tenants, with different bytes:
    each tenant keeps and returns its own."""
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    files = {}
    for tenant in ("alpha", "beta"):
        data = part10(new_dataset(study=study, series=series, sop=sop, patient_id=f"NEW-{tenant}"))
        path = tmp_path / f"{tenant}.dcm"
        path.write_bytes(data)
        files[tenant] = data
        assert await asyncio.to_thread(store_file, tenants.port, CALLED[tenant], path) == SUCCESS
    client = tenants.local.client
    instance = f"/studies/{study}/series/{series}/instances/{sop}"
    for tenant, data in files.items():
        response = await client.get(f"{service(tenant)}{instance}", headers=AS_STORED)
        assert response.status_code == 200, response.text
        (part,) = split_multipart(response.content, response.headers["content-type"])
        assert dataset_bytes(part.data) == dataset_bytes(data)
        assert dcmread(io.BytesIO(part.data)).PatientID == f"NEW-{tenant}"
    # The default tenant's service (alpha) returns alpha's.
    response = await client.get(f"/dicom-web{instance}", headers=AS_STORED)
    (part,) = split_multipart(response.content, response.headers["content-type"])
    assert dataset_bytes(part.data) == dataset_bytes(files["alpha"])


# --- association negotiation --------------------------------------------------------------


def associate(port: int, called: str, calling: str) -> tuple[bool, tuple[int, int, int] | None]:
    """(established, (result, source, reason) of an A-ASSOCIATE-RJ or None)."""
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if assoc.is_established:
        assoc.release()
        return True, None
    assert assoc.is_rejected, "neither accepted nor rejected"
    rj = assoc.acceptor.primitive
    return False, (int(rj.result), int(rj.result_source), int(rj.diagnostic))


@pytest.mark.parametrize(
    ("called", "calling", "outcome"),
    [
        ("ALPHA_PACS", "ANYONE", (True, None)),
        ("BETA_PACS", "FINDSCU", (True, None)),
        ("LOOPBACK", "ANYONE", (True, None)),  # the peer's address is checked
        # PS3.8 9.3.4: rejected-permanent (1), DICOM UL service-user (1), reason 7 / 3.
        ("NO_SUCH_AE", "FINDSCU", (False, (1, 1, 7))),
        ("DICOMCLOUD", "FINDSCU", (False, (1, 1, 7))),
        ("BETA_PACS", "INTRUDER", (False, (1, 1, 3))),
        ("LOCKED", "FINDSCU", (False, (1, 1, 3))),  # 127.0.0.1 is not in 10.0.0.0/8
    ],
)
async def test_associations_no_entry_admits_are_rejected(
    tenants: Tenants, called: str, calling: str, outcome: tuple[bool, Any]
) -> None:
    assert await asyncio.to_thread(associate, tenants.port, called, calling) == outcome


async def test_without_entries_every_called_ae_title_reaches_the_default_tenant(
    make_archive: ArchiveFactory,
) -> None:
    local = await make_archive(**TENANCY, server__host="127.0.0.1", server__dicom_port=0)
    await load_both(local.client)
    async with dimse_for(local) as running:
        for called in ("DICOMCLOUD", "WHATEVER"):
            found, status = await asyncio.to_thread(
                c_find, running.port, called, find_query("STUDY")
            )
            assert status == SUCCESS
            assert {str(f.PatientID) for f in found} == {ALPHA.patient_id}
