"""C-ECHO and C-STORE over loopback (pynetdicom as the SCU) into an in-process archive.

The SCU blocks, and the SCP's handlers need this test's event loop, so every
association runs in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from conftest import LocalDimse
from integration.support import (
    SECONDARY_CAPTURE_STORAGE,
    STATUS_CANNOT_UNDERSTAND,
    STATUS_ELEMENTS_DISCARDED,
    STATUS_SUCCESS,
    StoreResponse,
    StoreSCU,
    dataset_bytes,
    file_meta,
    new_dataset,
    new_instance,
    pydicom_file,
    raw_part10,
    set_raw,
)

pytestmark = pytest.mark.timeout(60)

SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)
CONTEXTS = [(SECONDARY_CAPTURE_STORAGE, ts) for ts in SYNTAXES]


def store_files(port: int, paths: list[Path], contexts: list[tuple[str, str]]) -> list[int]:
    with StoreSCU(port, contexts) as scu:
        return [scu.store(path).status for path in paths]


def store_one(port: int, path: Path) -> StoreResponse:
    with StoreSCU(port, CONTEXTS) as scu:
        return scu.store(path)


async def test_c_echo_succeeds(dimse: LocalDimse) -> None:
    def echo() -> int:
        with StoreSCU(dimse.port, CONTEXTS) as scu:
            return scu.echo()

    assert await asyncio.to_thread(echo) == STATUS_SUCCESS


@pytest.mark.parametrize("syntax", SYNTAXES, ids=["explicit-le", "implicit-le", "explicit-be"])
async def test_c_store_round_trip_keeps_the_dataset_bytes(
    dimse: LocalDimse, tmp_path: Path, syntax: str
) -> None:
    instance = new_instance(syntax)
    path = tmp_path / "sent.dcm"
    path.write_bytes(instance.data)

    statuses = await asyncio.to_thread(
        store_files, dimse.port, [path], [(SECONDARY_CAPTURE_STORAGE, syntax)]
    )

    assert statuses == [STATUS_SUCCESS]
    stored = await dimse.local.retrieve_bytes(instance.path)
    assert dataset_bytes(stored) == dataset_bytes(instance.data)
    meta = file_meta(stored)
    assert meta.TransferSyntaxUID == syntax
    assert meta.MediaStorageSOPInstanceUID == instance.sop
    assert meta.SourceApplicationEntityTitle == "TESTSCU"


async def test_c_store_of_a_pydicom_dataset(dimse: LocalDimse) -> None:
    """The usual SCU call: a Dataset that pynetdicom encodes itself."""
    ds = new_dataset()
    ds.file_meta = file_meta(new_instance().data)  # pynetdicom reads the TS from here
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian

    def send() -> int:
        with StoreSCU(dimse.port, CONTEXTS) as scu:
            return scu.store(ds).status

    assert await asyncio.to_thread(send) == STATUS_SUCCESS
    path = f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    stored = await dimse.local.retrieve_bytes(f"{path}/instances/{ds.SOPInstanceUID}")
    assert file_meta(stored).TransferSyntaxUID == ImplicitVRLittleEndian


async def test_c_store_without_sop_instance_uid_fails_with_c000(
    dimse: LocalDimse, tmp_path: Path
) -> None:
    ds = new_dataset()
    del ds.SOPInstanceUID
    path = tmp_path / "no-uid.dcm"
    path.write_bytes(raw_part10(ds))  # the File Meta names a UID, the dataset has none
    sop_in_meta = str(file_meta(path.read_bytes()).MediaStorageSOPInstanceUID)

    response = await asyncio.to_thread(store_one, dimse.port, path)

    assert response.status == STATUS_CANNOT_UNDERSTAND
    assert "SOPInstanceUID" in response.error_comment
    assert not await dimse.local.indexed(sop_in_meta)
    assert dimse.local.files() == set()


@pytest.mark.parametrize("bad_uid", ["1.2.03", "../../x", "9" * 65])
async def test_c_store_with_an_invalid_uid_fails_with_c000(
    dimse: LocalDimse, tmp_path: Path, bad_uid: str
) -> None:
    ds = new_dataset()
    set_raw(ds, "SOPInstanceUID", bad_uid)
    path = tmp_path / "bad-uid.dcm"
    path.write_bytes(raw_part10(ds))

    response = await asyncio.to_thread(store_one, dimse.port, path)

    assert response.status == STATUS_CANNOT_UNDERSTAND
    assert "SOPInstanceUID" in response.error_comment
    assert len(response.error_comment) <= 64  # LO (PS3.7 C.4)
    assert dimse.local.files() == set()
    assert not await dimse.local.indexed(bad_uid)


async def test_c_store_of_a_truncated_dataset_fails(dimse: LocalDimse, tmp_path: Path) -> None:
    data = pydicom_file("MR_truncated.dcm").read_bytes()
    path = tmp_path / "truncated.dcm"
    path.write_bytes(data)
    meta = file_meta(data)

    contexts = [(str(meta.MediaStorageSOPClassUID), ExplicitVRLittleEndian)]

    def send() -> StoreResponse:
        with StoreSCU(dimse.port, contexts) as scu:
            return scu.store(path)

    response = await asyncio.to_thread(send)

    assert response.status == STATUS_CANNOT_UNDERSTAND
    assert "truncated" in response.error_comment
    assert dimse.local.files() == set()
    assert not await dimse.local.indexed(str(meta.MediaStorageSOPInstanceUID))


async def test_c_store_duplicate_warns_b006_and_keeps_the_first(
    dimse: LocalDimse, tmp_path: Path
) -> None:
    first = new_instance()
    second = new_instance(
        study=first.study, series=first.series, sop=first.sop, patient_id="SOMEONE-ELSE"
    )
    paths = [tmp_path / "first.dcm", tmp_path / "second.dcm"]
    paths[0].write_bytes(first.data)
    paths[1].write_bytes(second.data)

    def send() -> list[StoreResponse]:
        with StoreSCU(dimse.port, CONTEXTS) as scu:
            return [scu.store(p) for p in paths]

    responses = await asyncio.to_thread(send)

    assert [r.status for r in responses] == [STATUS_SUCCESS, STATUS_ELEMENTS_DISCARDED]
    assert "already stored" in responses[1].error_comment
    stored = await dimse.local.retrieve_bytes(first.path)
    assert dataset_bytes(stored) == dataset_bytes(first.data)


async def test_concurrent_associations_all_land(dimse: LocalDimse, tmp_path: Path) -> None:
    associations, per_association = 4, 10
    batches: list[list[Path]] = []
    instances = []
    for a in range(associations):
        batch = []
        for i in range(per_association):
            instance = new_instance(SYNTAXES[(a + i) % 3])
            path = tmp_path / f"{a}-{i}.dcm"
            path.write_bytes(instance.data)
            batch.append(path)
            instances.append(instance)
        batches.append(batch)

    results = await asyncio.gather(
        *(asyncio.to_thread(store_files, dimse.port, batch, CONTEXTS) for batch in batches)
    )

    assert results == [[STATUS_SUCCESS] * per_association] * associations
    assert len(dimse.local.files()) == associations * per_association
    for instance in instances:
        stored = await dimse.local.retrieve_bytes(instance.path)
        assert dataset_bytes(stored) == dataset_bytes(instance.data)


async def test_c_store_storage_failure_is_out_of_resources_and_indexes_nothing(
    dimse: LocalDimse, tmp_path: Path
) -> None:
    """The blob is written in the association's thread (not on the event loop): a
    storage failure there must still come back as 0xA700 with a reason (PS3.4 B.2.3)."""
    instance = new_instance()
    path = tmp_path / "one.dcm"
    path.write_bytes(instance.data)
    tenant = dimse.local.archive.settings.default_tenant
    dimse.local.blobs_root.mkdir(parents=True, exist_ok=True)
    # A file where the tenant's directory must go: every write under it fails.
    (dimse.local.blobs_root / tenant).write_bytes(b"not a directory")

    response = await asyncio.to_thread(store_one, dimse.port, path)

    assert response.status == 0xA700
    assert response.error_comment
    assert not await dimse.local.indexed(instance.sop)

    # The association thread is still serving: once storage works, the resend lands.
    (dimse.local.blobs_root / tenant).unlink()
    assert (await asyncio.to_thread(store_one, dimse.port, path)).status == STATUS_SUCCESS
    assert await dimse.local.indexed(instance.sop)
