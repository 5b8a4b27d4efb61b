"""The access log end to end: DICOMweb requests and DIMSE associations each leave the
expected record in the index database (SQLite, PostgreSQL, MariaDB) and on the event
bus, credentials never; ``/admin/access-log`` filters them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

import backends
from conftest import ArchiveFactory, LocalArchive, LocalDimse, dimse_for
from dicomcloud.dicomweb.access_log import PRINCIPAL_KEY, TENANT_KEY
from dicomcloud.dicomweb.app import create_app
from dicomcloud.dimse.find import STUDY_ROOT_FIND
from dicomcloud.domain.access import ACCESS_TOPIC, AccessQuery, AccessRecord
from dicomcloud.events.memory import MemoryEventBus, Message
from dicomcloud.index import schema
from dicomcloud.index.engine import create_engine_for
from integration.retrieve_support import c_get, c_move, identifier
from integration.support import (
    SECONDARY_CAPTURE_STORAGE,
    StoreSCU,
    dataset_bytes,
    new_instance,
)

pytestmark = pytest.mark.timeout(180)

SECRET = "Bearer eyJhbGciOi.SECRET-TOKEN-4711"
URL_SECRET = "URLSECRET0815"


@pytest.fixture(params=backends.params(backends.SQL_BACKENDS))
async def on_backend(
    request: pytest.FixtureRequest, make_archive: ArchiveFactory, tmp_path: Path
) -> AsyncIterator[LocalArchive]:
    (tmp_path / "db").mkdir()
    async with backends.database_url(request.param, tmp_path / "db") as url:
        local = await make_archive(index__url=url, server__host="127.0.0.1", server__dicom_port=0)
        try:
            yield local
        finally:
            await local.close()  # before the database is dropped


async def records_of(local: LocalArchive, count: int = 0, **filters: Any) -> list[AccessRecord]:
    """The archive's records, oldest first (by start time); with ``count``, once there
    are that many: a DIMSE association's record is queued when its connection closes,
    shortly after the SCU's release returned.  (An HTTP request's record is queued
    before the ASGI call returns, so a flush suffices.)"""
    sink = local.archive.access
    assert sink is not None
    query = AccessQuery(newest_first=False, limit=1000, **filters)
    deadline = time.monotonic() + 60
    while True:
        await sink.flush()
        found = await local.archive.access_store.search(query)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


def drain(queue: asyncio.Queue[Message]) -> list[AccessRecord]:
    messages = []
    while not queue.empty():
        messages.append(queue.get_nowait())
    assert all(m.topic == ACCESS_TOPIC for m in messages)
    return [AccessRecord.from_json(m.payload) for m in messages]


async def database_dump(local: LocalArchive) -> str:
    """Every value of every table of the index database, as text."""
    engine = create_engine_for(local.archive.settings.index_url)
    try:
        async with engine.connect() as conn:
            rows = []
            for table in schema.metadata.sorted_tables:
                rows += [repr(tuple(row)) for row in await conn.execute(sa.select(table))]
    finally:
        await engine.dispose()
    return "\n".join(rows)


async def test_qido_wado_stow_leave_one_record_each_without_credentials(
    on_backend: LocalArchive,
) -> None:
    local = on_backend
    assert isinstance(local.archive.bus, MemoryEventBus)
    published = local.archive.bus.subscribe(ACCESS_TOPIC)
    first, second = new_instance(), new_instance()
    secret = {"Authorization": SECRET, "Cookie": f"session={SECRET}", "User-Agent": "pacs/1.0"}

    stow = await local.stow([first.data, second.data], headers=secret)
    qido = await local.client.get(
        f"/dicom-web/studies?StudyInstanceUID={first.study}", headers=secret
    )
    wado = await local.client.get(
        "/dicom-web" + first.path,
        headers={
            **secret,
            "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*',
        },
    )
    refused = await local.client.get(
        f"/dicom-web/studies?PatientID=X&access_token={URL_SECRET}", headers=secret
    )
    health = await local.client.get("/healthz")

    assert (stow.status_code, qido.status_code, wado.status_code) == (200, 200, 200)
    assert (refused.status_code, health.status_code) == (400, 200)
    # four records, none of /healthz
    stored, searched, retrieved, failed = await records_of(local)
    common = {
        "protocol": "DICOMweb",
        "tenant_id": "default",
        "principal": "anonymous",
        "user_agent": "pacs/1.0",
        "outcome": "success",
        "status": 200,
    }
    for record in (stored, searched, retrieved):
        assert {k: getattr(record, k) for k in common} == common
        assert record.duration_ms >= 0
        assert record.peer is not None
    assert stored.action == "STOW-RS store"
    assert (stored.method, stored.path) == ("POST", "/dicom-web/studies")
    assert sorted(stored.sop_instance_uids) == sorted([first.sop, second.sop])
    assert set(stored.study_uids) == {first.study, second.study}
    assert stored.instances == 2
    assert stored.bytes_in == len(stow.request.content) > len(first.data) + len(second.data)
    assert stored.bytes_out == len(stow.content) > 0
    assert searched.action == "QIDO-RS search"
    assert searched.bytes_out == len(qido.content) > 0
    assert searched.query == f"StudyInstanceUID={first.study}"
    assert (failed.action, failed.status, failed.outcome) == ("QIDO-RS search", 400, "failure")
    assert failed.query == "PatientID=X&access_token=***"  # the token is not kept
    assert retrieved.action == "WADO-RS retrieve"
    assert (retrieved.study_uids, retrieved.series_uids, retrieved.sop_instance_uids) == (
        (first.study,),
        (first.series,),
        (first.sop,),
    )
    assert retrieved.bytes_out == len(wado.content) > len(first.data)
    # ... and the same records on the bus
    assert {r.event_id: r for r in drain(published)} == {
        r.event_id: r for r in (stored, searched, retrieved, failed)
    }
    # no credential anywhere in the database
    dump = await database_dump(local)
    assert first.sop in dump and "STOW-RS store" in dump
    for secret_text in ("SECRET-TOKEN-4711", "eyJhbGciOi", URL_SECRET, "session="):
        assert secret_text not in dump


def _find(port: int, study: str) -> list[int]:
    ae = AE(ae_title="FINDSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(STUDY_ROOT_FIND, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMCLOUD")
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study
    query.PatientName = ""
    try:
        return [int(status.Status) for status, _ in assoc.send_c_find(query, STUDY_ROOT_FIND)]
    finally:
        assoc.release()


def _store(port: int, datasets: list[Dataset]) -> tuple[int, list[int]]:
    with StoreSCU(
        port, [(SECONDARY_CAPTURE_STORAGE, ExplicitVRLittleEndian)], calling_ae="MODALITY1"
    ) as scu:
        echo = scu.echo()
        return echo, [scu.store(ds).status for ds in datasets]


async def test_c_store_and_c_find_associations_leave_their_records(
    on_backend: LocalArchive,
) -> None:
    local = on_backend
    instances = [new_instance(), new_instance()]
    datasets = [dcmread(BytesIO(i.data)) for i in instances]

    async with dimse_for(local) as dimse:
        echo, statuses = await asyncio.to_thread(_store, dimse.port, datasets)
        assert (echo, statuses) == (0, [0, 0])
        stores = await records_of(local, 2, principal="MODALITY1")
        found = await asyncio.to_thread(_find, dimse.port, instances[0].study)
        assert found == [0xFF00, 0x0000]
        finds = await records_of(local, 2, principal="FINDSCU")

    association, echoed = stores  # the association started first
    assert (echoed.action, echoed.protocol, echoed.status, echoed.outcome) == (
        "C-ECHO",
        "DIMSE",
        0,
        "success",
    )
    assert association.action == "association"
    assert (association.called_ae, association.status, association.outcome) == (
        "DICOMCLOUD",
        0,
        "success",
    )
    assert association.sop_instance_uids == tuple(i.sop for i in instances)
    assert association.study_uids == tuple(i.study for i in instances)
    assert (association.instances, association.operations) == (2, 3)
    assert association.bytes_in > sum(len(dataset_bytes(i.data)) for i in instances) // 2 > 0
    assert association.detail == "released; C-ECHO x1 (0x0000 x1); C-STORE x2 (0x0000 x2)"
    assert association.duration_ms >= echoed.duration_ms >= 0
    assert association.peer is not None and association.peer.startswith("127.0.0.1:")
    find_association, searched = finds
    assert (searched.action, searched.status, searched.instances) == ("C-FIND", 0, 1)
    assert searched.study_uids == (instances[0].study,)
    # the identifier received, the one matching identifier answered (some tens of bytes)
    assert 20 < searched.bytes_in < 1000
    assert 50 < searched.bytes_out < 5000
    assert find_association.action == "association"
    assert find_association.detail == "released; C-FIND x1 (0x0000 x1)"
    assert {r.tenant_id for r in (*stores, *finds)} == {"default"}


@pytest.fixture
async def as_alice_and_bob(local: LocalArchive) -> AsyncIterator[httpx.AsyncClient]:
    """Clients on the archive behind a stand-in for authentication: it names the
    principal and tenant in the scope keys the access log documents."""
    app = create_app(local.archive)

    async def authenticated(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"x-test-user":
                    user, tenant = value.decode().split("@")
                    scope[PRINCIPAL_KEY], scope[TENANT_KEY] = user, tenant
        await app(scope, receive, send)

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=authenticated), base_url="http://testserver"
    ) as client:
        yield client


async def test_admin_access_log_filters(
    local: LocalArchive, as_alice_and_bob: httpx.AsyncClient
) -> None:
    client = as_alice_and_bob
    alice, bob = {"x-test-user": "alice@radiology"}, {"x-test-user": "bob@cardiology"}
    instance = new_instance()
    assert (await local.stow([instance.data])).status_code == 200
    assert (await client.get("/dicom-web/studies", headers=alice)).status_code == 200
    assert (
        await client.get("/dicom-web" + instance.path + "/metadata", headers=alice)
    ).status_code in (200, 404)
    assert (await client.get("/dicom-web/series", headers=bob)).status_code == 200
    everything = await records_of(local)
    assert [r.principal for r in everything] == ["anonymous", "alice", "alice", "bob"]

    async def admin(query: str) -> list[dict[str, Any]]:
        response = await local.client.get(f"/admin/access-log?{query}")
        assert response.status_code == 200, response.text
        records: list[dict[str, Any]] = response.json()["records"]
        return records

    assert [r["principal"] for r in await admin("")][:4] == ["bob", "alice", "alice", "anonymous"]
    assert {r["principal"] for r in await admin("principal=alice")} == {"alice"}
    assert len(await admin("principal=alice")) == 2
    assert [r["tenant_id"] for r in await admin("tenant=cardiology")] == ["cardiology"]
    assert [r["action"] for r in await admin("action=WADO-RS%20metadata")] == ["WADO-RS metadata"]
    assert [r["principal"] for r in await admin("tenant=radiology&action=QIDO-RS+search")] == [
        "alice"
    ]
    assert [r["principal"] for r in await admin("order=asc&limit=2&offset=1")] == [
        "alice",
        "alice",
    ]
    assert {r["sop_instance_uids"][0] for r in await admin(f"study={instance.study}")} == {
        instance.sop
    }
    middle = everything[2].time.isoformat()
    newer = await admin(f"from={middle.replace('+', '%2B')}&order=asc")
    assert [r["principal"] for r in newer][:2] == ["alice", "bob"]
    older = await admin(f"to={middle.replace('+', '%2B')}&order=asc")
    assert [r["principal"] for r in older] == ["anonymous", "alice"]
    assert await admin("from=2000-01-01&to=2000-01-02") == []
    empty_filters = await admin("tenant=&from=&to=&action=&principal=&limit=&offset=")
    assert len([r for r in empty_filters if r["action"] != "access-log query"]) == 4
    for bad, reason in (
        ("from=yesterday", "ISO 8601"),
        ("limit=-1", "limit"),
        ("limit=100000", "limit"),
        ("order=sideways", "order"),
        ("user=alice", "unknown parameter"),
    ):
        response = await local.client.get(f"/admin/access-log?{bad}")
        assert response.status_code == 400, bad
        assert reason in response.text, response.text
    # the administrators' queries are recorded too
    queries = await records_of(local, action="access-log query")
    assert len(queries) == 12 + 5
    assert {(r.path, r.outcome) for r in queries} == {
        ("/admin/access-log", "success"),
        ("/admin/access-log", "failure"),
    }


async def test_c_get_and_a_refused_c_move_leave_their_records(dimse: LocalDimse) -> None:
    local = dimse.local
    first = new_instance()
    second = new_instance(study=first.study, series=first.series)
    assert (await local.stow([first.data, second.data])).status_code == 200
    query = identifier("STUDY", StudyInstanceUID=first.study)

    responses, received = await asyncio.to_thread(
        c_get, dimse.port, query, {SECONDARY_CAPTURE_STORAGE: [ExplicitVRLittleEndian]}
    )
    moved = await asyncio.to_thread(c_move, dimse.port, query, "NOWHERE")

    assert (responses[-1].status, len(received)) == (0x0000, 2)
    assert moved[-1].status == 0xA801  # Move Destination unknown (PS3.4 C.4.2.1.3)
    records = await records_of(local, 5, protocol="DIMSE")
    by_action = {(r.principal, r.action): r for r in records}
    got = by_action[("GETSCU", "C-GET")]
    assert (got.status, got.outcome, got.instances) == (0, "success", 2)
    assert got.study_uids == (first.study,)
    assert by_action[("GETSCU", "association")].detail == "released; C-GET x1 (0x0000 x1)"
    move = by_action[("MOVESCU", "C-MOVE")]
    assert (move.status, move.outcome, move.study_uids) == (0xA801, "failure", (first.study,))
    move_association = by_action[("MOVESCU", "association")]
    assert (move_association.status, move_association.outcome) == (0xA801, "failure")
    assert move_association.detail == "released; C-MOVE x1 (0xA801 x1)"


async def test_c_get_with_a_failed_sub_operation_records_the_final_status(
    dimse: LocalDimse,
) -> None:
    """pynetdicom answers a C-GET's final status itself: 0xB000 when a sub-operation
    failed (PS3.4 C.4.3.1.3.1), here an instance of a SOP Class the SCU did not
    propose.  The record carries that status, not the handler's last pending one."""
    local = dimse.local
    image = new_instance()
    ct = new_instance(study=image.study, sop_class="1.2.840.10008.5.1.4.1.1.2")
    assert (await local.stow([image.data, ct.data])).status_code == 200
    query = identifier("STUDY", StudyInstanceUID=image.study)

    responses, received = await asyncio.to_thread(
        c_get, dimse.port, query, {SECONDARY_CAPTURE_STORAGE: [ExplicitVRLittleEndian]}
    )

    assert (responses[-1].status, len(received)) == (0xB000, 1)
    records = await records_of(local, 2, protocol="DIMSE")
    by_action = {r.action: r for r in records}
    got = by_action["C-GET"]
    assert (got.status, got.outcome, got.instances) == (0xB000, "warning", 2)
    assert got.bytes_out == len(image.data) + len(ct.data)  # both offered to the SCU
    assert by_action["association"].detail == "released; C-GET x1 (0xB000 x1)"


async def test_with_audit_disabled_nothing_is_recorded(make_archive: ArchiveFactory) -> None:
    local = await make_archive(audit__enabled=False)

    assert (await local.stow([new_instance().data])).status_code == 200
    assert (await local.client.get("/dicom-web/studies")).status_code == 200
    response = await local.client.get("/admin/access-log")

    assert local.archive.access is None
    assert response.status_code == 200
    assert response.json() == {"records": [], "limit": 100, "offset": 0}
