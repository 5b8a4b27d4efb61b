"""DELETE of a study, a series or an instance through DICOMweb (non-standard, as
Microsoft's DICOM service: 204 No Content), end to end: what QIDO-RS, C-FIND, WADO-RS
and the metadata answer afterwards, the blobs in storage, the ``instance.deleted``
events, the search cache, storing the same instances again, the access log, the
``delete`` permission, tenancy and ``[retention] allow_delete``."""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from conftest import ArchiveFactory, LocalArchive, dimse_for
from contract.test_cache_contract import REDIS_URL, drop_prefix, require_redis
from dicomcloud.domain import access
from dicomcloud.domain.access import AccessQuery, AccessRecord
from dicomcloud.domain.derived import DerivedCopy
from dicomcloud.domain.events import INSTANCE_DELETED, DeletedEvent
from dicomcloud.events.memory import MemoryEventBus, Message
from dicomcloud.ports import DeleteRequest
from dicomcloud.security.api_keys import ApiKeyStore
from dicomcloud.security.principal import Permission
from dicomcloud.services.metadata import instance_version
from dicomcloud.storage.keys import instance_metadata_key
from integration.support import Instance, new_dataset, new_instance, part10, pydicom_file
from integration.tenancy_support import ALPHA, BETA, SERIES, SOP, STUDY, TENANCY, load_both
from integration.test_dimse_find import find, identifier
from seaweedfs import SeaweedS3

pytestmark = pytest.mark.timeout(180)


def _instance(study: str, series: str, number: int, modality: str = "OT") -> Instance:
    ds = new_dataset(study=study, series=series)
    ds.InstanceNumber = number
    ds.Modality = modality
    return Instance(study, series, str(ds.SOPInstanceUID), str(ds.SOPClassUID), part10(ds))


def _study() -> tuple[str, list[Instance], list[Instance]]:
    """A study with an OT series of two instances and an MR series of one."""
    study, ot, mr = generate_uid(), generate_uid(), generate_uid()
    return (
        study,
        [_instance(study, ot, 1), _instance(study, ot, 2)],
        [_instance(study, mr, 1, "MR")],
    )


async def _stored(local: LocalArchive, *instances: Instance) -> None:
    response = await local.stow([i.data for i in instances])
    assert response.status_code == 200, response.text


async def _qido(local: LocalArchive, path: str, **params: str) -> list[dict[str, Any]]:
    response = await local.client.get("/dicom-web" + path, params=params)
    if response.status_code == 204:
        return []
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


def _value(item: dict[str, Any], tag: str) -> Any:
    return item[tag].get("Value")


async def _events(queue: asyncio.Queue[Message], count: int) -> list[DeletedEvent]:
    events = []
    for _ in range(count):
        message = await asyncio.wait_for(queue.get(), timeout=60)
        assert message.topic == INSTANCE_DELETED
        events.append(DeletedEvent.from_json(message.payload))
    return events


def _metadata_objects(local: LocalArchive, study: str) -> list[str]:
    """Names of the stored metadata objects (instance and series) of ``study``."""
    root = local.data_dir / "metadata"
    return sorted(p.name for p in root.rglob("*") if p.is_file() and study in p.parts)


def _blob_names(local: LocalArchive) -> set[str]:
    return {p.name for p in local.files()}


async def test_delete_instance_series_and_study(make_archive: ArchiveFactory) -> None:
    local = await make_archive()
    bus = local.archive.bus
    assert isinstance(bus, MemoryEventBus)
    queue = bus.subscribe(INSTANCE_DELETED)
    assert local.archive.search_cache.enabled
    study, ot, mr = _study()
    await _stored(local, *ot, *mr)
    # cached before the deletes: the same query twice, the second from the cache
    query = {"StudyInstanceUID": study}
    (before,) = await _qido(local, "/studies", **query)
    assert _value(before, "00201208") == [3]
    hits = local.archive.search_cache.hits
    assert await _qido(local, "/studies", **query) == [before]
    assert local.archive.search_cache.hits == hits + 1
    series_metadata = f"/studies/{study}/series/{ot[0].series}/metadata"
    assert len((await local.retrieve(series_metadata)).json()) == 2
    assert {f"{i.sop}.dcm" for i in (*ot, *mr)} <= _blob_names(local)

    # one instance
    objects = _metadata_objects(local, study)
    assert any(name.startswith(ot[1].sop) for name in objects)
    assert any(name.startswith("series.") for name in objects)
    gone = await local.client.delete("/dicom-web" + ot[1].path)

    assert gone.status_code == 204 and gone.content == b""
    left = _metadata_objects(local, study)
    assert not any(name.startswith(ot[1].sop) for name in left)
    assert not set(left) & {n for n in objects if n.startswith("series.")}  # stale aggregate
    (after,) = await _qido(local, "/studies", **query)
    assert _value(after, "00201208") == [2]
    assert (await local.retrieve(ot[1].path)).status_code == 404
    assert (await local.retrieve(ot[1].path + "/metadata")).status_code == 404
    metadata = (await local.retrieve(series_metadata)).json()
    assert [_value(m, "00080018") for m in metadata] == [[ot[0].sop]]
    assert f"{ot[1].sop}.dcm" not in _blob_names(local)
    (event,) = await _events(queue, 1)
    assert (event.tenant_id, event.sop_instance_uid, event.series_instance_uid) == (
        "default",
        ot[1].sop,
        ot[1].series,
    )
    assert event.patient_id == "PAT-1" and event.source == "DICOMweb"
    assert not event.series_deleted and not event.study_deleted

    # a series: ModalitiesInStudy and the counts follow
    gone = await local.client.delete(f"/dicom-web/studies/{study}/series/{mr[0].series}")

    assert gone.status_code == 204
    (after,) = await _qido(local, "/studies", **query)
    assert _value(after, "00080061") == ["OT"]
    assert (_value(after, "00201206"), _value(after, "00201208")) == ([1], [1])
    assert await _qido(local, f"/studies/{study}/series", Modality="MR") == []
    assert (await _events(queue, 1))[0].series_deleted

    # the study
    gone = await local.client.delete(f"/dicom-web/studies/{study}")

    assert gone.status_code == 204
    assert await _qido(local, "/studies", **query) == []
    assert await _qido(local, "/instances", StudyInstanceUID=study) == []
    assert (await local.retrieve(f"/studies/{study}")).status_code == 404
    assert (await local.retrieve(f"/studies/{study}/metadata")).status_code == 404
    assert not {f"{i.sop}.dcm" for i in (*ot, *mr)} & _blob_names(local)
    assert _metadata_objects(local, study) == []
    assert (await _events(queue, 1))[0].study_deleted
    assert await local.archive.index.count_levels("default") == type(
        await local.archive.index.count_levels("default")
    )(0, 0, 0)

    # nothing left to delete; invalid UIDs
    assert (await local.client.delete(f"/dicom-web/studies/{study}")).status_code == 404
    assert (await local.client.delete("/dicom-web" + ot[0].path)).status_code == 404
    bad = await local.client.delete("/dicom-web/studies/1.2.abc")
    assert bad.status_code == 400 and "not a valid UID" in bad.json()["error"]

    # stored again, served again
    await _stored(local, *ot, *mr)
    (again,) = await _qido(local, "/studies", **query)
    assert _value(again, "00201208") == [3]
    assert await local.retrieve_bytes(ot[1].path) == ot[1].data
    assert len((await local.retrieve(series_metadata)).json()) == 2


async def test_c_find_no_longer_finds_a_deleted_study(make_archive: ArchiveFactory) -> None:
    local = await make_archive(server__host="127.0.0.1", server__dicom_port=0)
    kept, deleted = new_instance(), new_instance()
    await _stored(local, kept, deleted)
    async with dimse_for(local) as dimse:
        found = await find(dimse, identifier("STUDY", StudyInstanceUID=""))
        assert {ds.StudyInstanceUID for ds in found} == {kept.study, deleted.study}

        response = await local.client.delete(f"/dicom-web/studies/{deleted.study}")
        assert response.status_code == 204

        found = await find(dimse, identifier("STUDY", StudyInstanceUID=""))
        assert {ds.StudyInstanceUID for ds in found} == {kept.study}
        images = await find(dimse, identifier("IMAGE", StudyInstanceUID=deleted.study))
        assert images == []


async def _records(local: LocalArchive, action: str) -> list[AccessRecord]:
    sink = local.archive.access
    assert sink is not None
    deadline = time.monotonic() + 60
    while True:
        await sink.flush()
        found = await local.archive.access_store.search(AccessQuery(newest_first=False, limit=1000))
        wanted = [r for r in found if r.action == action]
        if wanted or time.monotonic() > deadline:
            return wanted
        await asyncio.sleep(0.05)


async def test_delete_is_in_the_access_log(make_archive: ArchiveFactory) -> None:
    local = await make_archive()
    study, ot, _ = _study()
    await _stored(local, *ot)

    assert (await local.client.delete(f"/dicom-web/studies/{study}")).status_code == 204

    (record,) = await _records(local, access.DELETE)
    assert record.method == "DELETE" and record.status == 204
    assert record.study_uids == (study,)
    assert sorted(record.sop_instance_uids) == sorted(i.sop for i in ot)
    assert record.instances == 2


async def test_delete_needs_the_delete_permission(make_archive: ArchiveFactory) -> None:
    local = await make_archive(auth__mode="apikey")
    index = local.archive.index
    keys = ApiKeyStore(index.runner)  # type: ignore[attr-defined]
    _, writer = await keys.create("default", frozenset({Permission.READ, Permission.WRITE}), "w")
    _, deleter = await keys.create("default", frozenset({Permission.DELETE}), "d")
    instance = new_instance()
    body_headers = {"Authorization": f"ApiKey {writer}"}
    stored = await local.stow([instance.data], headers=body_headers)
    assert stored.status_code == 200, stored.text
    path = "/dicom-web" + instance.path

    assert (await local.client.delete(path)).status_code == 401
    refused = await local.client.delete(path, headers=body_headers)
    assert refused.status_code == 403
    assert await local.indexed(instance.sop)

    deleted = await local.client.delete(path, headers={"Authorization": f"ApiKey {deleter}"})

    assert deleted.status_code == 204
    assert not await local.indexed(instance.sop)


async def test_deleting_in_one_tenant_leaves_the_other(make_archive: ArchiveFactory) -> None:
    local = await make_archive(**TENANCY)
    await load_both(local.client)

    gone = await local.client.delete(f"/tenants/alpha/dicom-web/studies/{STUDY}")

    assert gone.status_code == 204
    alpha = await local.client.get(
        "/tenants/alpha/dicom-web/studies", params={"StudyInstanceUID": STUDY}
    )
    assert alpha.status_code in (200, 204) and (alpha.status_code == 204 or alpha.json() == [])
    path = f"/studies/{STUDY}/series/{SERIES}/instances/{SOP}"
    beta = await local.client.get(
        f"/tenants/beta/dicom-web{path}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    assert beta.status_code == 200
    assert BETA.files[SOP][-64:] in beta.content
    found = await local.client.get(
        "/tenants/beta/dicom-web/instances", params={"StudyInstanceUID": STUDY}
    )
    assert len(found.json()) == 2
    assert ALPHA.files[SOP] != BETA.files[SOP]
    # the default service is alpha's: nothing left there
    assert (await local.client.delete(f"/dicom-web/studies/{STUDY}")).status_code == 404
    # a tenant that is not served
    assert (
        await local.client.delete(f"/tenants/gamma/dicom-web/studies/{STUDY}")
    ).status_code == 404


async def test_an_archive_that_never_deletes(make_archive: ArchiveFactory) -> None:
    local = await make_archive(retention__allow_delete=False)
    instance = new_instance()
    await _stored(local, instance)

    refused = await local.client.delete(f"/dicom-web/studies/{instance.study}")

    assert refused.status_code == 405
    assert "allow_delete" in refused.json()["error"]
    assert refused.headers["allow"] == "GET, POST"
    assert await local.retrieve_bytes(instance.path) == instance.data


async def test_a_failed_blob_removal_is_reported_not_fatal(make_archive: ArchiveFactory) -> None:
    """The index commit is the deletion; a blob that cannot be removed stays an orphan
    (logged, counted), never an index row without its blob."""
    local = await make_archive()
    instance = new_instance()
    await _stored(local, instance)
    blob = local.blobs_root / next(p for p in local.files() if p.name == f"{instance.sop}.dcm")
    # an object that no store can unlink (not even as root): a non-empty directory
    blob.unlink()
    blob.mkdir()
    (blob / "keep").write_bytes(b"x")

    response = await local.client.delete(f"/dicom-web/studies/{instance.study}")

    assert response.status_code == 204
    assert not await local.indexed(instance.sop)
    assert local.archive.deletion.blob_failures == 1
    assert await _qido(local, "/studies", StudyInstanceUID=instance.study) == []
    (blob / "keep").unlink()
    blob.rmdir()
    await _stored(local, instance)
    assert await local.retrieve_bytes(instance.path) == instance.data


def test_openapi_names_the_delete_operations() -> None:
    from dicomcloud.dicomweb.openapi import openapi_document

    paths = openapi_document()["paths"]
    base = "/dicom-web/studies/{study}"
    for path in (base, f"{base}/series/{{series}}", f"{base}/series/{{series}}/instances/{{sop}}"):
        assert "204" in paths[path]["delete"]["responses"]
    assert json.dumps(paths)  # serialisable


async def test_search_and_metadata_caches_on_redis_are_not_stale(
    make_archive: ArchiveFactory,
) -> None:
    require_redis()
    prefix = f"dicomcloud-test:{uuid.uuid4().hex}:"
    local = await make_archive(cache__url=REDIS_URL, cache__key_prefix=prefix)
    try:
        study, ot, _ = _study()
        await _stored(local, *ot)
        metadata = f"/studies/{study}/series/{ot[0].series}/metadata"
        for _ in range(2):  # the second answers from the cache
            assert len(await _qido(local, f"/studies/{study}/instances")) == 2
            assert len((await local.retrieve(metadata)).json()) == 2
        assert local.archive.search_cache.hits >= 1

        response = await local.client.delete("/dicom-web" + ot[0].path)

        assert response.status_code == 204
        (left,) = await _qido(local, f"/studies/{study}/instances")
        assert _value(left, "00080018") == [ot[1].sop]
        after = (await local.retrieve(metadata)).json()
        assert [_value(m, "00080018") for m in after] == [[ot[1].sop]]
    finally:
        await local.close()
        await drop_prefix(prefix)


async def test_viewer_ready_copies_are_deleted_with_their_instance(
    make_archive: ArchiveFactory,
) -> None:
    local = await make_archive(workers__transcoder__enabled=True)
    service = local.archive.viewer_ready
    assert service is not None
    original = pydicom_file("MR_small_RLE.dcm").read_bytes()
    ds = dcmread(io.BytesIO(original))
    sop = str(ds.SOPInstanceUID)
    path = f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{sop}"
    assert (await local.stow([original])).status_code == 200
    copy = await _copy(local, sop)
    assert await local.archive.blobs.exists(copy.blob_key)

    assert (await local.client.delete("/dicom-web" + path)).status_code == 204

    assert await service.copies.list_copies("default", sop) == []
    assert not await local.archive.blobs.exists(copy.blob_key)
    assert local.files() == set()
    # stored again: a new copy is made and the original served as stored
    assert (await local.stow([original])).status_code == 200
    again = await _copy(local, sop)
    assert await local.archive.blobs.exists(again.blob_key)
    assert await local.retrieve_bytes(path) == original


async def _copy(local: LocalArchive, sop: str) -> DerivedCopy:
    service = local.archive.viewer_ready
    assert service is not None
    async with asyncio.timeout(90):
        while True:
            found = await service.copies.list_copies("default", sop)
            if found:
                return found[0]
            await asyncio.sleep(0.05)


async def test_a_crash_after_the_commit_leaves_an_orphan_and_restoring_works(
    make_archive: ArchiveFactory,
) -> None:
    """The index commit happened, the process died before removing the file: the
    file is an orphan (never an index row without its file), and storing the same
    instance again goes to a new key, leaving the orphan alone."""
    local = await make_archive()
    instance = new_instance()
    await _stored(local, instance)
    index = local.archive.index
    old = await index.get_instance("default", instance.sop)
    assert old is not None
    request = DeleteRequest("default", instance.study, instance.series, instance.sop)
    assert await index.delete_instances(request) is not None  # ...and no blob removal
    await local.archive.search_cache.invalidate(["default"])

    assert (await local.retrieve(instance.path)).status_code == 404
    assert await local.archive.blobs.exists(old.blob_key)  # the orphan
    await _stored(local, instance)

    new = await index.get_instance("default", instance.sop)
    assert new is not None and new.blob_key != old.blob_key
    assert await local.retrieve_bytes(instance.path) == instance.data
    assert (await local.client.delete("/dicom-web" + instance.path)).status_code == 204
    assert not await local.archive.blobs.exists(new.blob_key)


@pytest.mark.backend
async def test_delete_on_s3(make_archive: ArchiveFactory, seaweed: SeaweedS3) -> None:
    """The same on S3 (SeaweedFS): the original and its metadata objects leave the
    bucket."""
    prefix = f"delete-{uuid.uuid4().hex}"
    local = await make_archive(
        storage__url=seaweed.url(f"{prefix}/blobs"),
        metadata__url=seaweed.url(f"{prefix}/metadata"),
        storage__s3_access_key_id=seaweed.access_key_id,
        storage__s3_secret_access_key=seaweed.secret_access_key,
    )
    study, ot, _ = _study()
    await _stored(local, *ot)
    metadata = local.archive.metadata
    assert len((await local.retrieve(f"/studies/{study}/series/{ot[0].series}/metadata")).json())
    records = await local.archive.index.list_instances("default", study)
    objects = [
        instance_metadata_key(
            "default", study, r.series_instance_uid, r.sop_instance_uid, instance_version(r)
        )
        for r in records
    ]
    assert all([await metadata.store.exists(k) for k in objects])

    assert (await local.client.delete(f"/dicom-web/studies/{study}")).status_code == 204

    for record, key in zip(records, objects, strict=True):
        assert not await local.archive.blobs.exists(record.blob_key)
        assert not await metadata.store.exists(key)
    assert await _qido(local, "/studies", StudyInstanceUID=study) == []


async def test_wrong_patient_deleted_and_stored_again_corrected(
    make_archive: ArchiveFactory,
) -> None:
    """The usual reason to delete: a study filed under the wrong patient is deleted and
    sent again, corrected, with the same UIDs and the same size (so the same indexed
    fingerprint): every answer shows the corrected patient, none a cached or stored
    copy from before."""
    local = await make_archive()
    study, series = generate_uid(), generate_uid()
    wrong = new_dataset(study=study, series=series, patient_id="WRONG-01")
    sop = str(wrong.SOPInstanceUID)
    right = new_dataset(study=study, series=series, sop=sop, patient_id="RIGHT-01")
    right.PatientName = "Good^Patient"  # as long as "Test^Patient": the same size
    first, corrected = part10(wrong), part10(right)
    assert len(first) == len(corrected)
    await _stored(local, Instance(study, series, sop, str(wrong.SOPClassUID), first))
    path = f"/studies/{study}/series/{series}"
    for _ in range(2):  # built, then from the cache
        (item,) = (await local.retrieve(f"{path}/metadata")).json()
        assert _value(item, "00100020") == ["WRONG-01"]
        (found,) = await _qido(local, "/studies", StudyInstanceUID=study)
    await asyncio.wait_for(_settled(local), 60)

    assert (await local.client.delete(f"/dicom-web/studies/{study}")).status_code == 204
    await _stored(local, Instance(study, series, sop, str(right.SOPClassUID), corrected))
    await asyncio.wait_for(_settled(local), 60)

    (item,) = (await local.retrieve(f"{path}/metadata")).json()
    assert _value(item, "00100020") == ["RIGHT-01"]
    assert _value(item, "00100010") == [{"Alphabetic": "Good^Patient"}]
    (item,) = (await local.retrieve(f"{path}/instances/{sop}/metadata")).json()
    assert _value(item, "00100020") == ["RIGHT-01"]
    (found,) = await _qido(local, "/studies", StudyInstanceUID=study)
    assert _value(found, "00100020") == ["RIGHT-01"]
    assert await local.retrieve_bytes(f"{path}/instances/{sop}") == corrected


async def _settled(local: LocalArchive) -> None:
    worker = local.archive.metadata_worker
    if worker is not None:
        await worker.settled()
